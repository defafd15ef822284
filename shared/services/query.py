"""Searching the archive: read the index newest first for a query, page with a token.

Results come newest first by (TimeGenerated desc, EventKey desc), a day at a time:

* with an indexed filter (the first given in INDEX_ORDER that the month's blobs all have
  postings of: shared.services.index_kinds), one range query a month reads the value's
  posting rows, newest day first. Their entries name (second of day, blob, ordinal): only as
  many records as the page needs are fetched, in whole seconds (a second's records are
  ordered only once read), with one ranged read a blob (over the gzip members needed);
* without one (or in a month whose blobs lack every given filter's postings), a day's
  manifest rows give each blob's time span and blobs are read whole
  (shared.services.query_scan).

Every record read is checked exactly: a hash collision costs a read, never a wrong answer.
A page walks at most MAX_PARTITIONS_PER_PAGE days (KEY_MONTHS_PER_PAGE months with an
indexed filter: about one range read a day each) and reads what its ScanBudget allows, then
continues (shared.services.query_page).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import islice, takewhile

from shared.adapters.index_tables import IndexTables
from shared.core.archive_keys import MANIFEST_ROW, BlobRef, month_of
from shared.core.continuation import Continuation, decode_continuation
from shared.core.keys import LEGACY_KINDS
from shared.core.query_spec import (
    FILTER_RANGE,
    FUTURE_ALLOWANCE,
    MAX_LIMIT,
    ActivityQuery,
    ClampedRange,
    QueryError,
    index_keys,
    is_key_lookup,
    parse_query,
)
from shared.core.records import NormalizedRecord
from shared.services.archive_read import (
    ArchiveReader,
    Known,
    Manifest,
    UnreadableRecord,
    listed_manifest,
)
from shared.services.index_kinds import kinds_of
from shared.services.postings_read import month_postings
from shared.services.query_page import Entry, Page, QueryPage, ScanBudget, day_ticks, order
from shared.services.query_scan import by_day, read_day

__all__ = [
    "KEY_MONTHS_PER_PAGE",
    "QueryPage",
    "ScanBudget",
    "read_query",
    "run_query",
    "search_page",
]

# Months a page with an indexed filter may walk (about one range read a day each).
KEY_MONTHS_PER_PAGE = 12

_LIST_MONTHS_FROM = 2  # months a range spans beyond its first before tables are listed
_ONE_TICK = timedelta(microseconds=1)  # the finest a range bound can be
_LAST_DAY = datetime(9999, 12, 31, tzinfo=UTC)
_SECOND_TICKS = 10_000_000
# Blobs of one day a fetch needs from which their manifests are listed, not read one by one.
LIST_MANIFESTS_FROM = 2
_LISTING_ROWS = 1000  # a page: a listing costs one request, or stops there


@dataclass(frozen=True, slots=True)
class _ScanDay:
    """A day of a month whose blobs lack the postings of every filter given: read whole."""

    day: date


def oldest_indexed_day(tables: IndexTables) -> datetime | None:
    """Midnight (UTC) of the first day of the oldest month table; None when there is none."""
    held = indexed_days(tables)
    return held[0] if held else None


def indexed_days(tables: IndexTables) -> tuple[datetime, datetime] | None:
    """Midnight (UTC) of the oldest month table's first day, and of the day after the newest
    month table's last; None when there is no month table (one listing of tables)."""
    months = tables.months()
    if not months:
        return None
    oldest = datetime(int(months[0][:4]), int(months[0][4:]), 1, tzinfo=UTC)
    newest = datetime(int(months[-1][:4]), int(months[-1][4:]), 1, tzinfo=UTC)
    if newest.year == _LAST_DAY.year and newest.month == _LAST_DAY.month:
        # December 9999: a range's day arithmetic needs the day after its last one, so a
        # lookup ends before 9999-12-31 (a record of that day is archived, not found).
        return oldest, _LAST_DAY
    return oldest, (newest + timedelta(days=32)).replace(day=1)


def read_query(
    params: Mapping[str, str],
    now: datetime,
    tables: IndexTables,
    *,
    max_limit: int = MAX_LIMIT,
    ahead: bool = True,
) -> ActivityQuery:
    """parse_query, with the index's oldest and newest months read when a key lookup lacks
    `since` or `until`, or an `until` is clamped (`ahead`: a key lookup without `until` reaches
    the newest month; the timeline, whose buckets would run past now, passes False).

    The parameters are checked before anything is read, so a bad query costs no request.
    """
    try:
        query = parse_query(params, now, max_limit=max_limit)
    except ClampedRange:  # a range ahead of now: as far ahead as the index holds records
        held = indexed_days(tables)
        if held is None:
            raise
        return parse_query(params, now, oldest_day=held[0], newest_day=held[1], max_limit=max_limit)
    keyed = is_key_lookup(query)
    open_end = "until" not in params and keyed and ahead
    clamped = "until" in params and query.until >= now + FUTURE_ALLOWANCE
    if not (("since" not in params and keyed) or open_end or clamped):
        return query
    held = indexed_days(tables)
    if held is None:
        return query
    oldest, newest = held
    return parse_query(
        params,
        now,
        oldest_day=oldest,
        newest_day=newest if open_end or clamped else None,
        max_limit=max_limit,
    )


def search_page(
    params: Mapping[str, str],
    now: datetime,
    *,
    tables: IndexTables,
    reader: ArchiveReader,
    continuation: str | None = None,
) -> tuple[ActivityQuery, QueryPage]:
    """The use case behind GET /api/activity: a query's parameters checked, one page read."""
    query = read_query(params, now, tables)
    return query, run_query(query, tables=tables, reader=reader, continuation=continuation)


def run_query(
    query: ActivityQuery,
    *,
    tables: IndexTables,
    reader: ArchiveReader,
    continuation: str | None = None,
    budget: ScanBudget | None = None,
) -> QueryPage:
    """Up to `query.limit` matching records, newest first, and the token for the next page.

    A page that fills up carries a continuation even when nothing follows (the next page is
    then empty, without one); a page stopped by a bound carries one too, and `reached`.
    """
    since_day = query.since.date()
    newest_day = query.last_day
    start, after, resumed = newest_day, None, None
    if continuation is not None:
        position = decode_continuation(continuation, query)
        if position.day > newest_day:
            raise QueryError("continuation does not belong to this query")
        # A relative `since` moves on between pages: a token older than the range is done.
        if position.day < since_day:
            return QueryPage([], None)
        start, after, resumed = position.day, position.after, position.day
    page = Page(query, after, budget or ScanBudget(), start_day=resumed)
    page.held = _held_months(tables, start, since_day)
    keys = index_keys(query)
    if keys:
        return _by_key(page, keys, start, tables, reader)
    return by_day(page, start, tables, reader)


def _held_months(tables: IndexTables, newest: date, oldest: date) -> set[str] | None:
    """The months with a table, when the range is long enough for one listing to save requests
    (a key lookup without `since` may reach back years); None: assume every one."""
    spanned = (newest.year - oldest.year) * 12 + newest.month - oldest.month
    return set(tables.months()) if spanned >= _LIST_MONTHS_FROM else None


# --- with an indexed filter: posting rows, month by month ------------------------------------


def months_back(newest: date, oldest: date) -> Iterator[tuple[date, date]]:
    """(newest day, oldest day) of each month from `newest` back to `oldest`."""
    top = newest
    while top >= oldest:
        first = top.replace(day=1)
        yield top, max(first, oldest)
        if first == date.min:
            return
        top = first - timedelta(days=1)  # the last day of the month before


def month_key(
    tables: IndexTables, month: str, keys: list[tuple[str, str]]
) -> tuple[str, str] | None:
    """The first of the keys whose postings every blob of the month has (None: none has)."""
    for kind, value in keys:
        if kind in LEGACY_KINDS or kind in kinds_of(tables).of(month):
            return kind, value
    return None


def _by_key(
    page: Page, keys: list[tuple[str, str]], start: date, tables: IndexTables, reader: ArchiveReader
) -> QueryPage:
    """Entries day by day, newest first, fetched a page's worth at a time (across days, so
    that a sparse value costs one parallel fetch a page, not one a day)."""
    pending: list[Entry] = []
    stores = (tables, reader)
    for item in _key_days(page, keys, start, tables):
        if isinstance(item, Continuation):
            return _drained(page, pending, stores, item)
        more_from = None  # of a day read in chunks: the second down from which more comes
        if isinstance(item, _ScanDay):
            day = item.day
            pending = _fetch(page, pending, stores, drain=True)
            if page.lacking() == 0 or pending:  # full, or its budget ran out
                return _drained(page, pending, stores, Continuation(day, None))
            cut = read_day(page, day, tables, reader)
        else:
            day, entries, more_from = item
            pending = _fetch(page, [*pending, *entries], stores, drain=False)
            cut = None
        if page.lacking() == 0:
            return page.full()
        if cut is not None:
            return page.answer(cut)
        if page.spent():
            then = Continuation(day - timedelta(days=1), None)
            if more_from is not None:  # the rest of the day: its seconds up to more_from
                then = page.before(day, day_ticks(day) + (more_from + 1) * _SECOND_TICKS)
            if pending or page.moves_on(then):  # else read on: stopped, it would start again
                return _drained(page, pending, stores, then)
    return _drained(page, pending, stores, None)


def _drained(
    page: Page,
    pending: list[Entry],
    stores: tuple[IndexTables, ArchiveReader],
    then: Continuation | None,
) -> QueryPage:
    """The page once what is pending is fetched (or its budget ran out before), going on
    from `then` (None: the range is done)."""
    rest = _fetch(page, pending, stores, drain=True)
    if page.lacking() == 0:
        return page.full()
    if rest:
        day, second = rest[0][0], rest[0][1]
        return page.answer(page.before(day, day_ticks(day) + (second + 1) * _SECOND_TICKS))
    return page.answer(then)


def _key_days(
    page: Page, keys: list[tuple[str, str]], start: date, tables: IndexTables
) -> Iterator[tuple[date, list[Entry], int | None] | _ScanDay | Continuation]:
    """Each day's entries (newest second first), newest day first, a day in chunks where its
    run orders them (with each, the second down from which more of the day comes), or the
    days to read whole of a month without postings to use; a Continuation where the walk
    stops at KEY_MONTHS_PER_PAGE months."""
    walked = 0
    below = _second_below(page, start)  # a page starting inside its first day skips ahead
    for top, bottom in months_back(start, page.query.since.date()):
        month = month_of(top)
        if not page.has_table(month):
            continue  # nothing to read, nothing to count
        if walked == KEY_MONTHS_PER_PAGE:
            yield Continuation(top, None)  # top: that month's last day
            return
        walked += 1
        key = month_key(tables, month, keys)
        if key is None:
            yield from (_ScanDay(top - timedelta(days=n)) for n in range((top - bottom).days + 1))
            continue
        from_second = below if top == start else None
        chunks = month_postings(tables, month, key, (top, bottom), from_second)
        for day, postings, more_from in chunks:
            if bottom <= day <= top:  # the ranges already say so; checked all the same
                yield day, _day_entries(page, day, postings), more_from


def _second_below(page: Page, day: date) -> int | None:
    """The last second of `day` a page can return records of, when that is not its end (a
    token or the range's end inside the day); None otherwise."""
    last = page.high - 1  # the newest tick a record of the page can have
    if last >= day_ticks(day + timedelta(days=1)) or last < day_ticks(day):
        return None
    return (last - day_ticks(day)) // _SECOND_TICKS


def _day_entries(
    page: Page, day: date, rows: Iterable[tuple[BlobRef, list[tuple[int, int]]]]
) -> list[Entry]:
    """A day's entries whose second may hold a record for the page, newest second first."""
    entries: list[Entry] = []
    for ref, places in rows:
        if page.wanted is not None and ref.archive_class != page.wanted:
            continue  # the category is in the RowKey: no fetch for other classes
        entries.extend(
            (day, second, ref, ordinal)
            for second, ordinal in places
            if page.second_may_hold(day, second)
        )
    entries.sort(key=lambda entry: entry[1], reverse=True)
    return entries


def _manifests(tables: IndexTables, entries: list[Entry]) -> dict[BlobRef, Known]:
    """The manifests of the entries' blobs, a day's at once where it needs several: one
    listing of the RowKey range between them (a small tenant's day has many small blobs: one
    request, not one a blob). A range of more than a page of rows is left, past its first
    page, to the reader's point reads."""
    by_day: dict[date, set[BlobRef]] = {}
    for day, _, ref, _ in entries:
        by_day.setdefault(day, set()).add(ref)
    days = [day for day, refs in by_day.items() if len(refs) >= LIST_MANIFESTS_FROM]
    found: dict[BlobRef, Known] = {}
    listed = tables.parallel(lambda day: _listing(tables, day, by_day[day]), days)
    for day, (manifests, whole) in zip(days, listed, strict=True):
        for ref in by_day[day]:
            if ref in manifests or whole:
                found[ref] = manifests.get(ref)  # not listed in a whole range: not committed
    return found


def _listing(
    tables: IndexTables, day: date, refs: set[BlobRef]
) -> tuple[dict[BlobRef, Manifest | UnreadableRecord], bool]:
    """The committed manifests of a day's RowKey range from the first of `refs` to the last
    (at most a page of rows), and whether that was the whole range."""
    month, partition = month_of(day), f"{MANIFEST_ROW}{day.day:02d}"
    keys = sorted(ref.manifest_keys[1] for ref in refs)
    parameters = {"pk": partition, "low": keys[0], "high": keys[-1] + "~"}  # "~": past any id
    rows = tables.query(month, FILTER_RANGE, parameters, page_size=_LISTING_ROWS)
    found: dict[BlobRef, Manifest | UnreadableRecord] = {}
    count = 0
    for count, row in enumerate(islice(rows, _LISTING_ROWS), start=1):  # noqa: B007
        listed = listed_manifest(month, partition, row)  # damaged: its blob named unreadable
        if listed is not None:
            ref, manifest = listed
            found[ref] = manifest
    return found, count < _LISTING_ROWS


def _read(
    batch: list[Entry], tables: IndexTables, reader: ArchiveReader
) -> list[NormalizedRecord | UnreadableRecord | None]:
    """The batch's records: a read a blob, of the gzip members the batch needs of it."""
    known = _manifests(tables, batch)
    return reader.fetch([(ref, ordinal) for _, _, ref, ordinal in batch], known)


def _fetch(
    page: Page, entries: list[Entry], stores: tuple[IndexTables, ArchiveReader], *, drain: bool
) -> list[Entry]:
    """Fetch entries in batches of what the page lacks, in whole seconds (a second's records
    are ordered only once read); without `drain`, only while a whole batch is at hand; and
    no further batch once the page's budget is spent. Returns the entries not fetched."""
    tables, reader = stores
    start = 0
    while page.lacking() > 0 and start < len(entries):
        # The token's own second was partly returned already: its entries come on top.
        wanted = page.lacking() + sum(1 for _ in takewhile(page.at_token, entries[start:]))
        if not drain and len(entries) - start < wanted:
            break
        end = min(start + wanted, len(entries))
        while end < len(entries) and entries[end][:2] == entries[end - 1][:2]:
            end += 1
        got = _read(entries[start:end], tables, reader)
        page.read += end - start
        page.emit(sorted(page.keep(got), key=order, reverse=True))
        start = end
        if page.spent():
            break
    return entries[start:]
