"""Records as files to hand on: CSV with the Azure portal's Activity log columns, and JSON
Lines (the normalized record, whole). Pure: text in, text out, a page at a time, so an
export of any size streams with flat memory (the header goes with the first page only).

The portal's "Download as CSV" columns, each from the normalized record's columns:
Operation name (OperationName, as the event named it), Status (ActivityStatusValue), Time
(TimeGenerated, ISO 8601 UTC to the 100 ns), Time stamp (the same instant as the portal's
page shows one, in UTC), Subscription (SubscriptionId), Event initiated by (Caller),
Resource type (from ResourceId, lower case as it is), Resource group (ResourceGroup),
Resource (ResourceId), Event category (CategoryValue), Level, Correlation id (CorrelationId).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from functools import lru_cache

import orjson

from shared.core.query_spec import MORE_FILTERS, STRING_FILTERS, ActivityQuery, resource_type
from shared.core.records import NormalizedRecord

FORMATS = ("json", "jsonl", "csv")  # `format` of GET /api/activity; json: the page as JSON
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
EXTENSIONS = {"csv": "csv", "jsonl": "jsonl"}
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection: an
# archived caller or resource name could carry `=HYPERLINK(...)`): such a cell gets a leading
# `'`, which spreadsheets take as "text" and do not show. OWASP also names tab and CR; the
# full-width forms are run by some spreadsheets too; blank or invisible characters before
# them are looked through (found from outside).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_BLANK_LEADS = " \x00\ufeff\u3000\u00a0"
_FORMULA_LEADS = frozenset(_FORMULA_START + tuple(_BLANK_LEADS))
_DAY_LENGTH = 10  # YYYY-MM-DD
_CLOCK = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_NAME_PART = 40  # characters of one filter value in a file name, at most
_NAME_SUMMARY = 100


CSV_COLUMNS = (
    "Operation name",
    "Status",
    "Time",
    "Time stamp",
    "Subscription",
    "Event initiated by",
    "Resource type",
    "Resource group",
    "Resource",
    "Event category",
    "Level",
    "Correlation id",
)


def _text(value: object) -> str:
    return "" if value is None else str(value)


@lru_cache(maxsize=4096)  # a page's records share a few days
def _day_text(day: str) -> str | None:
    try:
        return f"{date.fromisoformat(day):%a %b %d %Y}" if len(day) == _DAY_LENGTH else None
    except ValueError:
        return None


def _time_stamp(text: str) -> str:
    """`Sat Mar 01 2025 12:00:05 GMT+0000 (Coordinated Universal Time)`, as the portal's
    page writes a time (there in the viewer's zone; UTC here, said in the text)."""
    day = _day_text(text[:10])
    if day is None or text[10:11] != "T" or not _CLOCK.fullmatch(text, 11, 19):
        try:  # not canonical: as ISO 8601 reads it, if at all
            moment = datetime.fromisoformat(text[:19]).replace(tzinfo=UTC)
        except ValueError:
            return text
        return f"{moment:%a %b %d %Y %H:%M:%S} GMT+0000 (Coordinated Universal Time)"
    return f"{day} {text[11:19]} GMT+0000 (Coordinated Universal Time)"


# Resources recur in a page; a small cache, for the function app's worker keeps it for good.
_resource_type = lru_cache(maxsize=4096)(resource_type)


def defused(value: str) -> str:
    """A cell value a spreadsheet shows as text, never runs as a formula."""
    return "'" + value if value.lstrip(_BLANK_LEADS).startswith(_FORMULA_START) else value


def csv_cells(record: NormalizedRecord) -> list[str]:
    """A record's CSV_COLUMNS, defused: one function, as an export runs it for every record."""
    get = record.get
    resource = _text(get("ResourceId"))
    time_generated = _text(get("TimeGenerated"))
    cells = [
        _text(get("OperationName")) or _text(get("OperationNameValue")),
        _text(get("ActivityStatusValue")),
        time_generated,
        _time_stamp(time_generated),
        _text(get("SubscriptionId")),
        _text(get("Caller")),
        _resource_type(resource),
        _text(get("ResourceGroup")),
        resource,
        _text(get("CategoryValue")),
        _text(get("Level")),
        _text(get("CorrelationId")),
    ]
    return [defused(cell) if cell[:1] in _FORMULA_LEADS else cell for cell in cells]


def _csv(rows: Iterable[Sequence[str]]) -> str:
    out = io.StringIO()
    # Every cell quoted (RFC 4180, CRLF): a spreadsheet whose list separator is `;` keeps a
    # cell holding `;=...` whole, where unquoted it would split it and run the second part.
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerows(rows)
    return out.getvalue()


def csv_header() -> str:
    return _csv([CSV_COLUMNS])


def csv_rows(records: Sequence[NormalizedRecord]) -> str:
    return _csv(map(csv_cells, records))


def jsonl_rows(records: Sequence[NormalizedRecord]) -> bytes:
    return b"".join(orjson.dumps(record) + b"\n" for record in records)


def page_body(fmt: str, records: Sequence[NormalizedRecord], *, first: bool) -> bytes:
    """One page of an export (csv or jsonl); a CSV's header row on the first page only."""
    if fmt == "csv":
        return ((csv_header() if first else "") + csv_rows(records)).encode("utf-8")
    return jsonl_rows(records)


def file_name(query: ActivityQuery, fmt: str, now: datetime) -> str:
    """`activity-<filters given>-from-<since>-to-<until>-at-<UTC time>.<ext>`: named after the
    query (its filters and range) and when it ran, in characters every file system and a
    quoted Content-Disposition take as they are."""
    parts = []
    for name in (*STRING_FILTERS, *MORE_FILTERS, "category"):
        value = getattr(query, name)
        if value:
            text = str(value).rstrip("/")
            text = text.rsplit("/", 1)[-1] if name == "resource" else text  # its own name
            shown = _NAME_UNSAFE.sub("-", text)
            parts.append(f"{name.replace('_', '-')}-{shown.strip('-.')[:_NAME_PART]}")
    summary = "_".join(parts)[:_NAME_SUMMARY] or "all"
    since, until = (f"{moment:%Y%m%dT%H%M}Z" for moment in (query.since, query.until))
    ran = f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    return f"activity-{summary}-from-{since}-to-{until}-at-{ran}.{EXTENSIONS[fmt]}"
