"""What a query is: its parameters checked into an ActivityQuery.

Pure: no I/O. An indexed filter (correlation id, resource, resource group, caller, operation,
subscription, then status) is read from the index's posting rows, the first one given in
INDEX_ORDER; every other given filter is applied exactly to the records fetched (`matches`):
resource type (from the resource id), level and `text` (a keyword: a case-insensitive
substring of the JSON text of the record's values) are never indexed. The filters sent to
Table storage are the constant templates below; user input only ever travels as a bound
parameter.

Without `since`, a key lookup (KEY_ORDER: an identity, not status) searches the whole index
(from its oldest month, when known: see `oldest_day`); any other query the last 30 days.
Without `until`, a key lookup ends with the index's newest month (`newest_day`: an event dated
ahead of now is found), any other query now; a later `until` is clamped there (or now + a day).

Continuation tokens: shared.core.continuation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from shared.core.keys import LOOKUP_COLUMNS
from shared.core.records import CATEGORIES, NormalizedRecord
from shared.core.timeparse import parse_time
from shared.core.vocabulary import LEVELS, level_name, status_value

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
# The earliest `since`/`until` a caller may give: Activity Logs do not predate it, and a range
# from year 1 would walk 700,000 empty day partitions. A record dated earlier (the normalizer
# takes any year from 0001) is still found by a key lookup without `since`, which starts at
# the index's oldest day.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)

# Query parameter names; the HTTP query string and the CLI use the same ones.
STRING_FILTERS = ("subscription", "resource", "caller", "correlation_id", "operation")
# Filters of issue 20 (the portal's and Get-AzActivityLog's): added after the first five.
MORE_FILTERS = ("resource_group", "resource_type", "status", "level", "text")
PARAMETERS = (*STRING_FILTERS, *MORE_FILTERS, "category", "since", "until", "limit")

# Key filters, most selective first: (query field, posting kind). The first one given is
# read from the posting rows; the rest are checked on the records.
KEY_ORDER: tuple[tuple[str, str], ...] = (
    ("correlation_id", "x"),
    ("resource", "r"),
    ("resource_group", "g"),
    ("caller", "c"),
    ("operation", "o"),
    ("subscription", "s"),
)
# Status is indexed too (few values, `Failed` rare), but it names no identity: last, and a
# query with only it keeps the default range of a query without a key.
INDEX_ORDER: tuple[tuple[str, str], ...] = (*KEY_ORDER, ("status", "t"))
FIELD_COLUMNS: dict[str, str] = {field: LOOKUP_COLUMNS[kind] for field, kind in INDEX_ORDER}
# Tokens issued before MORE_FILTERS existed stay valid: those are sealed only when given.

# The only filters a query sends: a day's manifest rows (all of them, or one class's RowKey
# range), a value's posting rows over a range of days, and (histograms) a month's partitions.
FILTER_PARTITION = "PartitionKey eq @pk"
FILTER_RANGE = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"
# A histogram's month at once: the days' partitions of a kind's runs, or of the manifests.
FILTER_PARTITIONS = "PartitionKey ge @low and PartitionKey le @high"
QUERY_FILTERS = (FILTER_PARTITION, FILTER_RANGE, FILTER_PARTITIONS)

# Control characters: refused but in filter values; neutralised in text shown on a terminal.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# re.ASCII: `\d` is 0-9 only (else Arabic-Indic or full-width digits pass, and int() reads them).
_RELATIVE = re.compile(r"(\d{1,7})([mhd])", re.ASCII)
_LIMIT = re.compile(r"\d{1,9}", re.ASCII)
_RELATIVE_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
_CATEGORY_NAMES = {category.lower(): category for category in CATEGORIES}


class QueryError(ValueError):
    """A query the caller got wrong; the message names the parameter and says what is wanted."""


class ClampedRange(QueryError):
    """since falls past an `until` cut to now + FUTURE_ALLOWANCE: the range may still reach
    records dated ahead (clock skew, odd inputs) once the index's newest month is known."""


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
    resource_group: str | None = None
    resource_type: str | None = None
    status: str | None = None  # ActivityStatusValue's name (`success` means Succeeded)
    level: str | None = None
    text: str | None = None  # a keyword, matched in the JSON text of the record's values
    # The 100 ns digit of each bound past its microseconds (a datetime holds six digits of a
    # second, a record's time seven).
    since_tick: int = 0
    until_tick: int = 0

    @property
    def since_text(self) -> str:
        """`since` as a canonical TimeGenerated, to the 100 ns."""
        return canonical(self.since, self.since_tick)

    @property
    def until_text(self) -> str:
        return canonical(self.until, self.until_tick)

    @property
    def last_day(self) -> date:
        """The day of the range's last instant (`until` is exclusive, to the 100 ns: found from
        outside, `until=…T00:00:00.0000005Z` was taken to end the day before)."""
        if self.until_tick:
            return self.until.date()
        return (self.until - timedelta(microseconds=1)).date()


# --- parsing ---------------------------------------------------------------------------


_SHOWN_CHARS = 80  # a user's value quoted back in an error message, at most


def _shown(text: str) -> str:
    """A user's value quoted back in a message: repr (so nothing unprintable), and short."""
    shown = text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
    return repr(shown)


def _text(name: str, value: str) -> str:
    if len(value) > MAX_TEXT:
        raise QueryError(f"{name} is too long: at most {MAX_TEXT} characters")
    if CONTROL.search(value) and name not in (*STRING_FILTERS, *MORE_FILTERS):  # as archived
        raise QueryError(f"{name} must not contain control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError(f"{name} is not valid text") from None
    stripped = value.strip()
    if not stripped:
        raise QueryError(f"{name} must not be empty")
    return stripped


def time_ago(text: str, now: datetime) -> datetime | None:
    """`now` less a time ago written 15m, 12h or 7d; None when `text` is not one.

    Raises OverflowError past the calendar's first day.
    """
    relative = _RELATIVE.fullmatch(text)
    if relative is None:
        return None
    amount, unit = relative.groups()
    return now - timedelta(**{_RELATIVE_UNITS[unit]: int(amount)})


def _time(name: str, text: str, now: datetime, *, earliest: datetime = EARLIEST) -> datetime:
    try:
        ago = time_ago(text, now)
        if ago is not None:
            moment = ago
        else:
            parsed = datetime.fromisoformat(text.upper())  # RFC 3339 allows `t` and `z`
            moment = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
            moment = moment.astimezone(UTC)
    except OverflowError:
        raise QueryError(f"{name} is out of range; got {_shown(text)}") from None
    except ValueError:
        raise QueryError(
            f"{name} must be an ISO-8601 time (2024-05-01T12:00:00Z; no zone means UTC) "
            f"or a time ago like 15m, 12h or 7d; got {_shown(text)}"
        ) from None
    if moment < earliest:
        raise QueryError(f"{name} must be on or after {earliest:%Y-%m-%d}; got {_shown(text)}")
    return moment


def _level(text: str) -> str:
    # Only these are ever archived (the spec): another value would answer "none" for a typo.
    level = level_name(text)
    if level is None:
        raise QueryError(f"level must be one of {', '.join(LEVELS)}; got {_shown(text)}")
    return level


def _limit(values: Mapping[str, str], max_limit: int) -> int:
    if "limit" not in values:
        return DEFAULT_LIMIT
    text = values["limit"]
    if not _LIMIT.fullmatch(text) or not 1 <= int(text) <= max_limit:
        raise QueryError(f"limit must be a whole number from 1 to {max_limit}; got {_shown(text)}")
    return int(text)


def _category(values: Mapping[str, str]) -> str | None:
    """The category's canonical name (any case is accepted), if one is given."""
    category = values.get("category")
    if category is None:
        return None
    canonical = _CATEGORY_NAMES.get(category.lower())
    if canonical is None:
        raise QueryError(f"category must be one of {', '.join(CATEGORIES)}; got {_shown(category)}")
    return canonical


def _default_since(until: datetime, keyed: bool, oldest_day: datetime | None) -> datetime:
    """The start of the range when none is given: the last DEFAULT_SPAN, or for a key lookup
    the whole index (from its oldest day, and never less than DEFAULT_SPAN)."""
    recent = until - DEFAULT_SPAN if until - EARLIEST > DEFAULT_SPAN else EARLIEST
    if not keyed or oldest_day is None:
        return recent
    day = oldest_day.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return min(day, recent)


def parse_query(  # noqa: PLR0913 - the parameters, then how to read them, by name
    params: Mapping[str, str],
    now: datetime,
    *,
    oldest_day: datetime | None = None,
    newest_day: datetime | None = None,
    max_limit: int = MAX_LIMIT,
    whole_calendar: bool = False,
) -> ActivityQuery:
    """Validate query parameters (names as in PARAMETERS) into a query; QueryError if wrong.

    `oldest_day` is the oldest day the index holds (see oldest_indexed_day), if known: a key
    lookup without `since` starts there. `newest_day`, the day after the newest month the index
    holds, if known: a key lookup without `until` ends there (or now, if later), and no
    `until` is clamped below it. `max_limit` is the largest `limit` accepted. With
    `whole_calendar`, a range may span any time the archive can hold (years 0001-9999: the
    normalizer takes them all), as for the verbs that walk only the index's months (`verify`,
    `forward`); a search keeps EARLIEST and FUTURE_ALLOWANCE.
    """
    unknown = sorted(name for name in params if name not in PARAMETERS)
    if unknown:
        shown = ", ".join(_shown(name) for name in unknown[:5])
        raise QueryError(f"unknown parameter {shown}; known: {', '.join(PARAMETERS)}")
    values = {name: _text(name, params[name]) for name in PARAMETERS if name in params}
    now = now.astimezone(UTC)
    category = _category(values)
    limit = _limit(values, max_limit)

    (since, since_tick), (until, until_tick) = _range(
        values, now, oldest_day, newest_day, whole_calendar=whole_calendar
    )
    status, level = values.get("status"), values.get("level")
    kind = values["resource_type"].strip("/") if "resource_type" in values else None
    if kind == "":
        raise QueryError("resource_type must name a type, like Microsoft.KeyVault/vaults")
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
        resource_group=values.get("resource_group"),
        resource_type=kind,
        status=status_value(status) if status is not None else None,
        level=_level(level) if level is not None else None,
        text=values.get("text"),
        since_tick=since_tick,
        until_tick=until_tick,
    )


def _range(
    values: Mapping[str, str],
    now: datetime,
    oldest_day: datetime | None,
    newest_day: datetime | None,
    *,
    whole_calendar: bool,
) -> tuple[tuple[datetime, int], tuple[datetime, int]]:
    """(since, its 100 ns digit), (until, its): as parse_query says."""
    keyed = any(field in values for field, _ in KEY_ORDER)
    ceiling = max(now + FUTURE_ALLOWANCE, newest_day or now)
    if whole_calendar:
        ceiling = datetime.max.replace(tzinfo=UTC)
    earliest = datetime.min.replace(tzinfo=UTC) if whole_calendar else EARLIEST
    until_tick = since_tick = 0
    given_until = None
    if "until" in values:
        given_until = _time("until", values["until"], now, earliest=earliest)
        until = min(given_until, ceiling)
        until_tick = _tick(values["until"], until) if until < ceiling else 0
    else:
        until = max(now, newest_day) if keyed and newest_day else now
    if "since" in values:
        since = _time("since", values["since"], now, earliest=earliest)
        since_tick = _tick(values["since"], since)
    else:
        since = _default_since(until, keyed, oldest_day)
    if (since, since_tick) >= (until, until_tick):
        if given_until is not None and since < given_until and until < given_until:
            raise ClampedRange(  # read_query reads the index's newest month and asks again
                f"since ({since.isoformat()}) is past now and the index's newest month"
            )
        raise QueryError(f"since ({since.isoformat()}) must be before until ({until.isoformat()})")
    return (since, since_tick), (until, until_tick)


def canonical(moment: datetime, tick: int = 0) -> str:
    """A moment (and its 100 ns digit) as a canonical TimeGenerated (`%Y` is not zero-padded
    before 1000 on Linux)."""
    m = moment.astimezone(UTC)
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
        f".{m.microsecond:06d}{tick}Z"
    )


def _tick(text: str, moment: datetime) -> int:
    """The 100 ns digit a time given as text has past its microseconds (0 if none)."""
    exact = parse_time(text)
    return int(exact[26]) if exact is not None and exact[:26] == canonical(moment)[:26] else 0


def is_key_lookup(query: ActivityQuery) -> bool:
    """Whether the query has a key filter (an identity: its default range is the index)."""
    return any(getattr(query, field) is not None for field, _ in KEY_ORDER)


def index_keys(query: ActivityQuery) -> list[tuple[str, str]]:
    """(posting kind, value) of every indexed filter given, in INDEX_ORDER."""
    return [(kind, value) for field, kind in INDEX_ORDER if (value := getattr(query, field))]


def folded(value: Any) -> str:
    # The same folding the posting rows get (archive_keys.fold: trimmed, lower case).
    return str(value or "").strip().lower()


def resource_type(resource_id: str) -> str:
    """The resource type a resource id names, lower case as ResourceId is: the namespace and
    type segments after its last `/providers/` (`microsoft.sql/servers/databases`); a
    resource group's or subscription's own id gives Microsoft.Resources' types; else ""."""
    parts = [part for part in resource_id.strip().lower().split("/") if part]
    if "providers" in parts:
        after = parts[len(parts) - parts[::-1].index("providers") :]
        return "/".join([after[0], *after[1::2]]) if len(after) >= 2 else ""  # noqa: PLR2004
    if parts[:1] == ["subscriptions"] and len(parts) in (2, 4):
        kind = "resourcegroups" if len(parts) == 4 else "subscriptions"  # noqa: PLR2004
        return f"microsoft.resources/{kind}" if parts[2:3] in ([], ["resourcegroups"]) else ""
    return ""


def record_text(record: NormalizedRecord) -> str:
    """What `text` is looked for in: each column's value as JSON, lower case, a line each (the
    columns' own names are the schema's, not the event's: `caller` would match every record;
    a keyword holds no line break, JSON escapes it, so none matches across two values)."""
    return b"\n".join(orjson.dumps(value) for value in record.values()).decode("utf-8").lower()


def matches(record: NormalizedRecord, query: ActivityQuery) -> bool:
    """Whether the record passes every filter of the query, exactly."""
    for field, column in FIELD_COLUMNS.items():
        wanted: str | None = getattr(query, field)
        if wanted is not None and folded(record.get(column)) != folded(wanted):
            return False
    if query.category is not None and record.get("CategoryValue") != query.category:
        return False
    if query.level is not None and folded(record.get("Level")) != folded(query.level):
        return False
    wanted_type = folded(query.resource_type)
    if wanted_type and resource_type(str(record.get("ResourceId") or "")) != wanted_type:
        return False
    return query.text is None or keyword_text(query.text) in record_text(record)


def keyword_text(text: str) -> str:
    """A keyword as it appears inside the record's JSON text: lower case, a quote or a
    backslash escaped as JSON escapes it (else `a"b` would never be found as typed)."""
    return orjson.dumps(text.lower()).decode("utf-8")[1:-1]
