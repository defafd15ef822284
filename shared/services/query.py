"""Searching the archive: parse a query, read the index newest first, page with a token.

A query with a key filter (correlation id, resource, caller, operation, subscription) reads one
lookup partition per month, `{kind}|{YYYYMM}|{value}`; without one it reads the records table's
day partitions. Either way every read is PartitionKey equality plus a RowKey range over
[since, until), and RowKeys are inverted time, so each partition yields newest first and the
partitions are read newest first. Every other given filter is applied exactly to the records
fetched. Filters sent to Table storage are constant templates; user input only ever travels as
a bound parameter.

Without `since`, a key lookup searches the whole index: from the oldest day the records table
holds (its first PartitionKey, read in one cheap request). A query without a key filter
searches the last 30 days. The CLI's `limit` is the total wanted: it follows continuations in
pages of at most MAX_LIMIT; the HTTP API returns one page of at most MAX_LIMIT per request.
"""

from __future__ import annotations

import argparse
import base64
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import orjson
from azure.data.tables import TableClient

from shared.adapters.index_store import (
    LOOKUP_COLUMNS,
    IndexReader,
    RecordKey,
    days_between,
    lookup_partition,
    lookup_value,
    months_between,
    record_row_key,
    row_key_bound,
    time_of_row_key,
)
from shared.bootstrap import Runtime
from shared.core.records import NormalizedRecord
from shared.settings import CATEGORIES

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000  # per page (an HTTP request); also the most Table storage returns per request
# The CLI's --limit is a total, read page by page; bounded so a typo cannot run for days.
MAX_TOTAL = 10_000_000
DEFAULT_SPAN = timedelta(days=30)
MAX_TEXT = 1024
# Records cannot come from the future; an `until` far ahead (`2099-01-01` as "everything")
# is clamped so the walk does not start at thousands of empty day partitions. A day of
# allowance covers clock skew in TimeGenerated.
FUTURE_ALLOWANCE = timedelta(days=1)
# Activity Logs do not predate this; earlier times are a mistake, and refusing them keeps
# every partition name four-digit-year shaped.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
# Partitions one page may read: a long, sparse range costs bounded work per request and
# hands back a continuation (possibly with few or no records) instead of running away.
MAX_PARTITIONS_PER_PAGE = 100
MAX_CONTINUATION = 2048

# Query parameter names; the HTTP query string and the CLI use the same ones.
STRING_FILTERS = ("subscription", "resource", "caller", "correlation_id", "operation")
PARAMETERS = (*STRING_FILTERS, "category", "since", "until", "limit")

# Key filters, most selective first: (query field, lookup kind). The first one given is
# read from the lookup table; the rest are checked on the records.
KEY_ORDER: tuple[tuple[str, str], ...] = (
    ("correlation_id", "x"),
    ("resource", "r"),
    ("caller", "c"),
    ("operation", "o"),
    ("subscription", "s"),
)
FIELD_COLUMNS: dict[str, str] = {field: LOOKUP_COLUMNS[kind] for field, kind in KEY_ORDER}

# The only filters ever sent. `@after` resumes just past a continuation's last RowKey.
FILTER_RANGE = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"
FILTER_RANGE_CATEGORY = FILTER_RANGE + " and CategoryValue eq @category"
FILTER_RESUME = "PartitionKey eq @pk and RowKey gt @after and RowKey lt @high"
FILTER_RESUME_CATEGORY = FILTER_RESUME + " and CategoryValue eq @category"
# The records table's first entity, in PartitionKey (day) order: the oldest day it holds.
FILTER_OLDEST = "PartitionKey ge @low"

# One past "_", the separator after a RowKey's 19-digit time: `{prefix}` + this sorts after
# every RowKey with that time prefix and before every later prefix.
_AFTER_PREFIX = "`"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_RELATIVE = re.compile(r"(\d{1,7})([mhd])")
_LIMIT = re.compile(r"\d{1,9}")
_DAY = re.compile(r"\d{8}")
_MONTH = re.compile(r"\d{6}")
_ROW_KEY = re.compile(r"\d{19}_[0-9A-Za-z_-]{1,128}")
_RELATIVE_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
_CATEGORY_NAMES = {category.lower(): category for category in CATEGORIES}


class QueryError(ValueError):
    """A query the caller got wrong; the message names the parameter and says what is wanted."""


@dataclass(frozen=True)
class ActivityQuery:
    subscription: str | None
    resource: str | None
    caller: str | None
    correlation_id: str | None
    operation: str | None
    category: str | None
    since: datetime  # inclusive, UTC
    until: datetime  # exclusive, UTC
    limit: int


@dataclass(frozen=True)
class QueryPage:
    records: list[NormalizedRecord]
    continuation: str | None  # None when nothing more matches


# --- parsing ---------------------------------------------------------------------------


def _shown(text: str) -> str:
    """A user's value quoted back in a message: repr (so nothing unprintable), and short."""
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _text(name: str, value: str) -> str:
    if len(value) > MAX_TEXT:
        raise QueryError(f"{name} is too long: at most {MAX_TEXT} characters")
    if _CONTROL.search(value):
        raise QueryError(f"{name} must not contain control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError(f"{name} is not valid text") from None
    stripped = value.strip()
    if not stripped:
        raise QueryError(f"{name} must not be empty")
    return stripped


def _time(name: str, text: str, now: datetime) -> datetime:
    relative = _RELATIVE.fullmatch(text)
    try:
        if relative:
            amount, unit = relative.groups()
            moment = now - timedelta(**{_RELATIVE_UNITS[unit]: int(amount)})
        else:
            parsed = datetime.fromisoformat(text)
            moment = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
            moment = moment.astimezone(UTC)
    except OverflowError:
        raise QueryError(f"{name} is out of range; got {_shown(text)}") from None
    except ValueError:
        raise QueryError(
            f"{name} must be an ISO-8601 time (2024-05-01T12:00:00Z; no zone means UTC) "
            f"or a time ago like 15m, 12h or 7d; got {_shown(text)}"
        ) from None
    if moment < EARLIEST:
        raise QueryError(f"{name} must be on or after {EARLIEST:%Y-%m-%d}; got {_shown(text)}")
    return moment


def _limit(values: Mapping[str, str], max_limit: int) -> int:
    if "limit" not in values:
        return DEFAULT_LIMIT
    text = values["limit"]
    if not _LIMIT.fullmatch(text) or not 1 <= int(text) <= max_limit:
        raise QueryError(f"limit must be a whole number from 1 to {max_limit}; got {_shown(text)}")
    return int(text)


def _default_since(until: datetime, keyed: bool, oldest_day: datetime | None) -> datetime:
    """The start of the range when none is given: the last DEFAULT_SPAN, or for a key lookup
    the whole index (from its oldest day, and never less than DEFAULT_SPAN)."""
    recent = max(until - DEFAULT_SPAN, EARLIEST)
    if not keyed or oldest_day is None:
        return recent
    day = oldest_day.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return min(day, recent)


def parse_query(
    params: Mapping[str, str],
    now: datetime,
    *,
    oldest_day: datetime | None = None,
    max_limit: int = MAX_LIMIT,
) -> ActivityQuery:
    """Validate query parameters (names as in PARAMETERS) into a query; QueryError if wrong.

    `oldest_day` is the oldest day the index holds (see oldest_indexed_day), if known: a key
    lookup without `since` starts there. `max_limit` is the largest `limit` accepted.
    """
    unknown = sorted(name for name in params if name not in PARAMETERS)
    if unknown:
        shown = ", ".join(_shown(name) for name in unknown[:5])
        raise QueryError(f"unknown parameter {shown}; known: {', '.join(PARAMETERS)}")
    values = {name: _text(name, params[name]) for name in PARAMETERS if name in params}
    now = now.astimezone(UTC)

    category = values.get("category")
    if category is not None:
        canonical = _CATEGORY_NAMES.get(category.lower())
        if canonical is None:
            raise QueryError(
                f"category must be one of {', '.join(CATEGORIES)}; got {_shown(category)}"
            )
        category = canonical
    limit = _limit(values, max_limit)

    until = _time("until", values["until"], now) if "until" in values else now
    until = min(until, now + FUTURE_ALLOWANCE)
    if "since" in values:
        since = _time("since", values["since"], now)
    else:
        keyed = any(field in values for field, _ in KEY_ORDER)
        since = _default_since(until, keyed, oldest_day)
    if since >= until:
        raise QueryError(f"since ({since.isoformat()}) must be before until ({until.isoformat()})")
    return ActivityQuery(
        subscription=values.get("subscription"),
        resource=values.get("resource"),
        caller=values.get("caller"),
        correlation_id=values.get("correlation_id"),
        operation=values.get("operation"),
        category=category,
        since=since,
        until=until,
        limit=limit,
    )


def is_key_lookup(query: ActivityQuery) -> bool:
    """Whether the query is answered from a lookup (it has a key filter)."""
    return any(getattr(query, field) is not None for field, _ in KEY_ORDER)


def oldest_indexed_day(records: TableClient) -> datetime | None:
    """Midnight (UTC) of the oldest day the records table holds; None when it is empty.

    PartitionKeys are days that sort as text in time order, and Table storage returns entities
    in PartitionKey order, so the first entity is in the oldest day. The iterator follows
    continuations, so pages that come back empty are read past.
    """
    entities = records.query_entities(
        FILTER_OLDEST,
        parameters={"low": "0"},
        select=["PartitionKey", "RowKey"],
        results_per_page=1,
    )
    first = next(iter(entities), None)
    if first is None:
        return None
    try:
        moment = time_of_row_key(str(first["RowKey"]))
    except (ValueError, OverflowError):
        return EARLIEST  # a row not of the index's making: search wider, never narrower
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def read_query(
    params: Mapping[str, str],
    now: datetime,
    records: TableClient,
    *,
    max_limit: int = MAX_LIMIT,
) -> ActivityQuery:
    """parse_query, with the index's oldest day read when a key lookup has no `since`.

    The parameters are checked before anything is read, so a bad query costs no request.
    """
    query = parse_query(params, now, max_limit=max_limit)
    if "since" in params or not is_key_lookup(query):
        return query
    oldest = oldest_indexed_day(records)
    if oldest is None:
        return query
    return parse_query(params, now, oldest_day=oldest, max_limit=max_limit)


# --- continuation tokens ---------------------------------------------------------------


def encode_continuation(partition: str, after: str) -> str:
    """Where the next page starts: `after` the given RowKey of `partition` ("" = its start)."""
    return base64.urlsafe_b64encode(orjson.dumps([partition, after])).decode("ascii").rstrip("=")


def decode_continuation(token: str) -> tuple[str, str]:
    malformed = QueryError("continuation is not a token this service issued")
    if not token or len(token) > MAX_CONTINUATION:
        raise malformed
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, TypeError):
        raise malformed from None
    if not (
        isinstance(data, list)
        and len(data) == 2
        and all(isinstance(part, str) for part in data)
        and (data[1] == "" or _ROW_KEY.fullmatch(record_row_key(data[1])))
    ):
        raise malformed
    return data[0], data[1]


# --- reading ---------------------------------------------------------------------------


def _folded(value: Any) -> str:
    # The same folding the lookup keys get (lookup_partition strips and lower-cases).
    return str(value or "").strip().lower()


@dataclass(frozen=True)
class _Plan:
    """Which table to read, which partitions newest first, and how to name their order."""

    table: TableClient
    partitions: list[str]
    from_lookup: bool
    kind: str = ""
    value: str = ""
    # Lookup RowKeys start with the folded value: every range and token carries it.
    prefix: str = ""

    def order_of(self, partition: str) -> str | None:
        """The sortable time part of a partition this plan could read, else None."""
        if not self.from_lookup:
            return partition if _DAY.fullmatch(partition) else None
        parts = partition.split("|", 2)
        if len(parts) != 3 or not _MONTH.fullmatch(parts[1]):
            return None
        return parts[1] if partition == lookup_partition(self.kind, parts[1], self.value) else None


def _plan(query: ActivityQuery, records: TableClient, lookup: TableClient) -> _Plan:
    # until is exclusive: its own day or month holds nothing when it falls on the boundary.
    newest = query.until - timedelta(microseconds=1)
    for field, kind in KEY_ORDER:
        value: str | None = getattr(query, field)
        if value is not None:
            partitions = [
                lookup_partition(kind, month, value)
                for month in months_between(query.since, newest)
            ]
            return _Plan(
                lookup,
                partitions,
                from_lookup=True,
                kind=kind,
                value=value,
                prefix=lookup_value(value),
            )
    return _Plan(records, days_between(query.since, newest), from_lookup=False)


def _matches(record: NormalizedRecord, query: ActivityQuery) -> bool:
    for field, column in FIELD_COLUMNS.items():
        wanted: str | None = getattr(query, field)
        if wanted is not None and _folded(record.get(column)) != _folded(wanted):
            return False
    return query.category is None or record.get("CategoryValue") == query.category


def _resume_point(plan: _Plan, continuation: str | None) -> tuple[int, str] | None:
    """(index of the partition to read first, RowKey to start after); None: nothing is left."""
    if continuation is None:
        return 0, ""
    partition, after = decode_continuation(continuation)
    if after and not after.startswith(plan.prefix):
        raise QueryError("continuation does not belong to this query")
    order = plan.order_of(partition)
    if order is None or not plan.partitions:
        raise QueryError("continuation does not belong to this query")
    if partition in plan.partitions:
        return plan.partitions.index(partition), after
    # A relative `since` moves on between pages: a token older than the range has nothing left.
    if order < (plan.order_of(plan.partitions[-1]) or ""):
        return None
    raise QueryError("continuation does not belong to this query")


def _rows(
    plan: _Plan,
    query: ActivityQuery,
    partition: str,
    after: str,
    page_size: int,
) -> Iterator[dict[str, Any]]:
    low = plan.prefix + row_key_bound(query.until) + _AFTER_PREFIX  # rows older than until
    high = plan.prefix + row_key_bound(query.since) + _AFTER_PREFIX  # rows at or after since
    parameters: dict[str, str] = {"pk": partition, "high": high}
    # A token's RowKey before the range's start (a hand-made one) must not widen the range.
    if after and after >= low:
        query_filter = FILTER_RESUME_CATEGORY if query.category else FILTER_RESUME
        parameters["after"] = after
    else:
        query_filter = FILTER_RANGE_CATEGORY if query.category else FILTER_RANGE
        parameters["low"] = low
    if query.category:
        parameters["category"] = query.category
    entities = plan.table.query_entities(
        query_filter,
        parameters=parameters,
        results_per_page=page_size,
        # A lookup row is only its keys and category; record rows need every property for
        # the body (inline or blob).
        select=["RowKey"] if plan.from_lookup else None,
    )
    for page in entities.by_page():
        yield from page


def _chunks(
    rows: Iterator[dict[str, Any]], size: Callable[[], int]
) -> Iterator[list[dict[str, Any]]]:
    """Groups of rows, each as large as `size()` says at the time it is taken."""
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size():
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_query(
    query: ActivityQuery,
    *,
    records: TableClient,
    lookup: TableClient,
    reader: IndexReader,
    continuation: str | None = None,
) -> QueryPage:
    """Up to `query.limit` matching records, newest first, and the token for the next page.

    A page that fills up carries a continuation even when nothing follows (the next page is
    then empty, without one); a page cut short by MAX_PARTITIONS_PER_PAGE carries one too.
    """
    plan = _plan(query, records, lookup)
    start = _resume_point(plan, continuation)
    if start is None:
        return QueryPage([], None)
    first, after = start
    found: list[NormalizedRecord] = []

    def remaining() -> int:
        return query.limit - len(found)

    for index in range(first, len(plan.partitions)):
        partition = plan.partitions[index]
        if index - first >= MAX_PARTITIONS_PER_PAGE:
            return QueryPage(found, encode_continuation(partition, ""))
        rows = _rows(plan, query, partition, after, remaining())
        after = ""
        # Bodies are fetched in groups no larger than what the page still needs, so a page
        # reads about `limit` bodies unless the exact filters reject some.
        for chunk in _chunks(rows, remaining):
            if plan.from_lookup:
                keys = [RecordKey.of_row_key(record_row_key(row["RowKey"])) for row in chunk]
                bodies = reader.get_many(keys)
            else:
                bodies = [reader.body_of(row) for row in chunk]
            for row, body in zip(chunk, bodies, strict=True):
                # A lookup row without its record: written before a crash, or its record
                # already past retention. It is simply not there.
                if body is None or not _matches(body, query):
                    continue
                found.append(body)
                if remaining() == 0:
                    return QueryPage(found, encode_continuation(partition, row["RowKey"]))
    return QueryPage(found, None)


# --- output ----------------------------------------------------------------------------

TABLE_COLUMNS: tuple[tuple[str, str, int], ...] = (
    # (heading, record column, width)
    ("TIME", "TimeGenerated", 19),
    ("CATEGORY", "CategoryValue", 14),
    ("STATUS", "ActivityStatusValue", 10),
    ("OPERATION", "OperationNameValue", 48),
    ("CALLER", "Caller", 32),
    ("RESOURCE", "ResourceId", 80),
)


def _cell(value: Any, width: int) -> str:
    # Log text goes to a terminal: control characters (escape sequences) are neutralised.
    text = _CONTROL.sub("?", str(value if value is not None else ""))
    return text if len(text) <= width else text[: width - 1] + "…"


def table_header() -> str:
    return "  ".join(heading.ljust(width) for heading, _, width in TABLE_COLUMNS).rstrip() + "\n"


def table_row(record: NormalizedRecord) -> str:
    cells = []
    for _, column, width in TABLE_COLUMNS:
        value = record.get(column)
        if column == "TimeGenerated" and isinstance(value, str):
            value = value[:19].replace("T", " ")  # to the second, in UTC
        cells.append(_cell(value, width).ljust(width))
    return "  ".join(cells).rstrip() + "\n"


def format_table(records: Sequence[NormalizedRecord]) -> str:
    """Records as aligned, truncated columns for people; one line per record, header first."""
    return table_header() + "".join(table_row(record) for record in records)


# --- the CLI verb ----------------------------------------------------------------------

PROGRESS_EVERY = 1.0  # seconds between progress lines
_FLAGS = {name: "--" + name.replace("_", "-") for name in PARAMETERS}


class _Progress:
    """`• N records so far…` on standard error while a query takes more than one page."""

    def __init__(self, err: TextIO) -> None:
        self._err = err
        self._shown_at: float | None = None

    def more_pages(self, written: int) -> None:
        now = time.monotonic()
        if self._shown_at is None or now - self._shown_at >= PROGRESS_EVERY:
            self._err.write(f"• {written} records so far…\n")
            self._err.flush()
            self._shown_at = now

    def done(self, written: int) -> None:
        if self._shown_at is not None:
            self._err.write(f"• {written} records in all\n")


def _as_flags(message: str) -> str:
    """A QueryError's message in the CLI's words: `limit must ...` → `--limit must ...`."""
    name, space, rest = message.partition(" ")
    return f"{_FLAGS[name]}{space}{rest}" if name in _FLAGS else message


def _searched(query: ActivityQuery, params: Mapping[str, str], records: TableClient) -> str:
    """Standard error's account of an empty result: which range was searched, and why."""
    if "since" in params:
        how = "the range asked for"
    elif is_key_lookup(query):
        how = "the whole index (a key lookup without --since)"
    else:
        how = (
            f"the last {DEFAULT_SPAN.days} days (the default without --since or a key filter; "
            "give --since to search further back)"
        )
    oldest = oldest_indexed_day(records)
    held = f"the index holds records from {oldest.date().isoformat()} on" if oldest else ""
    held = held or "the index is empty"
    return (
        f"no records found from {query.since.isoformat()} to {query.until.isoformat()}; "
        f"searched {how}; {held}"
    )


def _write_pages(
    query: ActivityQuery, runtime: Runtime, table: bool, out: TextIO, err: TextIO
) -> tuple[int, str | None]:
    """Pages of at most MAX_LIMIT until `query.limit` records are written or none are left.

    Returns how many were written and the continuation after the last (None: nothing left).
    """
    if table:
        out.write(table_header())
    progress = _Progress(err)
    written = 0
    continuation: str | None = None
    while True:
        page = run_query(
            replace(query, limit=min(MAX_LIMIT, query.limit - written)),
            records=runtime.stores.records,
            lookup=runtime.stores.lookup,
            reader=runtime.reader,
            continuation=continuation,
        )
        for record in page.records:
            out.write(table_row(record) if table else orjson.dumps(record).decode("utf-8") + "\n")
        written += len(page.records)
        continuation = page.continuation
        if continuation is None or written >= query.limit:
            progress.done(written)
            return written, continuation
        progress.more_pages(written)


def _more_match(query: ActivityQuery, runtime: Runtime, continuation: str) -> bool | None:
    """After a full page: whether another record matches (None: not known after one page)."""
    page = run_query(
        replace(query, limit=1),
        records=runtime.stores.records,
        lookup=runtime.stores.lookup,
        reader=runtime.reader,
        continuation=continuation,
    )
    if page.records:
        return True
    return False if page.continuation is None else None


def query_main(
    args: argparse.Namespace, runtime: Runtime, out: TextIO, err: TextIO | None = None
) -> int:
    """The CLI's `query` verb: pages through the index until `limit` records are written.

    Standard output holds only the records (JSON lines or the table); progress, an empty
    result's searched range and a limit that cut the result short go to standard error.
    """
    err = err or sys.stderr
    params = {
        name: str(value) for name in PARAMETERS if (value := getattr(args, name, None)) is not None
    }
    records = runtime.stores.records
    try:
        query = read_query(params, datetime.now(UTC), records, max_limit=MAX_TOTAL)
        written, continuation = _write_pages(query, runtime, args.format == "table", out, err)
        more = None if continuation is None else _more_match(query, runtime, continuation)
    except QueryError as error:
        print(f"error: {_as_flags(str(error))}", file=err)
        return 2
    out.flush()
    if written == 0:
        print(_searched(query, params, records), file=err)
    elif more is not False and continuation is not None:
        maybe = "more records match" if more else "more records may match"
        print(
            f"• stopped at --limit {query.limit}; {maybe} (a larger --limit shows them)", file=err
        )
    return 0
