"""Searching the archive: read the index newest first for a query, page with a token.

Results come newest first by (TimeGenerated desc, EventKey desc), a day at a time:

* with a key filter (the first given in KEY_ORDER), one range query a month reads the value's
  posting rows, newest day first. Their entries name (second of day, blob, ordinal): only as
  many records as the page needs are fetched, in whole seconds (a second's records are
  ordered only once read), with one ranged read per gzip member;
* without one, a day's manifest rows (one class's, with a category) give each blob's time
  span: blobs are read whole, newest span first, until no blob left can hold a record newer
  than what the page already has.

Every record read is checked exactly: a hash collision costs a read, never a wrong answer.
A page walks at most MAX_PARTITIONS_PER_PAGE days (KEY_MONTHS_PER_PAGE months for a key
lookup: about one range read a day each), then continues.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, date, datetime, timedelta
from itertools import takewhile
from typing import Any

from shared.adapters.index_tables import IndexTables
from shared.core.archive_keys import (
    CLASS_CODES,
    MANIFEST_ROW,
    BlobRef,
    category_class,
    day_of,
    month_of,
    second_of_day,
)
from shared.core.keys import parse_canonical_time
from shared.core.query_spec import (
    FILTER_PARTITION,
    FILTER_RANGE,
    KEY_ORDER,
    MAX_LIMIT,
    ActivityQuery,
    Continuation,
    QueryError,
    canonical,
    decode_continuation,
    encode_continuation,
    is_key_lookup,
    matches,
    parse_query,
)
from shared.core.records import NormalizedRecord
from shared.services.archive_read import ArchiveReader, Manifest, UnreadableRecord, is_manifest
from shared.services.postings_read import month_postings

# Days (months, for a key lookup) one page may walk: a long, sparse range costs bounded work
# per request and hands back a continuation (possibly with few or no records) instead.
MAX_PARTITIONS_PER_PAGE = 100
KEY_MONTHS_PER_PAGE = 12

_LIST_MONTHS_FROM = 2  # months a range spans beyond its first before tables are listed
_ONE_TICK = timedelta(microseconds=1)  # the finest a range bound can be

_Entry = tuple[date, int, BlobRef, int]  # (day, second of day, blob, ordinal)


@dataclass(frozen=True)
class QueryPage:
    records: list[NormalizedRecord]
    continuation: str | None  # None when nothing more matches
    # Archive blobs holding matching records that cannot be read (damaged): named, skipped.
    unreadable: list[str] = dataclass_field(default_factory=list)


def oldest_indexed_day(tables: IndexTables) -> datetime | None:
    """Midnight (UTC) of the first day of the oldest month table; None when there is none."""
    months = tables.months()
    return datetime(int(months[0][:4]), int(months[0][4:]), 1, tzinfo=UTC) if months else None


def read_query(
    params: Mapping[str, str],
    now: datetime,
    tables: IndexTables,
    *,
    max_limit: int = MAX_LIMIT,
) -> ActivityQuery:
    """parse_query, with the index's oldest month read when a key lookup has no `since`.

    The parameters are checked before anything is read, so a bad query costs no request.
    """
    query = parse_query(params, now, max_limit=max_limit)
    if "since" in params or not is_key_lookup(query):
        return query
    oldest = oldest_indexed_day(tables)
    return parse_query(params, now, oldest_day=oldest, max_limit=max_limit) if oldest else query


def _order(record: NormalizedRecord) -> tuple[str, str]:
    return str(record.get("TimeGenerated", "")), str(record.get("EventKey", ""))


def _ticks(time_generated: str) -> int:
    return parse_canonical_time(time_generated)[1]


class _Page:
    """The records a page returns: within [since, until), past the token's position, and
    matching the query exactly; collected newest first up to the query's limit."""

    def __init__(self, query: ActivityQuery, after: tuple[str, str] | None) -> None:
        self.query = query
        self.since = canonical(query.since)
        self.until = canonical(query.until)
        self.after = after  # only records sorting after it (older) are returned
        # A blob's span [Lo, Hi] in ticks meets the page's if Hi >= low and Lo < high.
        self.low = _ticks(self.since)
        self.high = min(_ticks(self.until), _ticks(after[0]) + 1 if after else _ticks(self.until))
        self.token_second = (day_of(after[0]), second_of_day(after[0])) if after else None
        self.records: list[NormalizedRecord] = []
        self.unreadable: list[str] = []
        self.held: set[str] | None = None  # months with a table, if listed
        self.wanted = category_class(query.category) if query.category else None  # its class

    def has_table(self, month: str) -> bool:
        return self.held is None or month in self.held

    def lacking(self) -> int:
        return self.query.limit - len(self.records)

    def admits(self, record: NormalizedRecord) -> bool:
        time_generated, _ = key = _order(record)
        if not self.since <= time_generated < self.until:
            return False
        return (self.after is None or key < self.after) and matches(record, self.query)

    def second_may_hold(self, day: date, second: int) -> bool:
        """Whether a second of a day can hold a record for the page (checked exactly later)."""
        start = f"{day.isoformat()}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
        if start < self.since[:19] or start + ".0000000Z" >= self.until:
            return False
        return self.after is None or start <= self.after[0][:19]

    def at_token(self, entry: _Entry) -> bool:  # of the second of the token's last record
        return self.after is not None and entry[:2] == self.token_second

    def spans(self, manifest: Manifest) -> bool:
        return manifest.high_ticks >= self.low and manifest.low_ticks < self.high

    def keep(self, got: Iterable[NormalizedRecord | UnreadableRecord | None]) -> list[Any]:
        """What a read brought that the page admits; unreadable records are named."""
        kept: list[NormalizedRecord] = []
        for item in got:
            if isinstance(item, UnreadableRecord):
                if item.name not in self.unreadable:
                    self.unreadable.append(item.name)
            elif item is not None and self.admits(item):  # None: not committed, or deleted
                kept.append(item)
        return kept

    def emit(self, newest_first: Sequence[NormalizedRecord]) -> None:
        self.records.extend(newest_first[: self.lacking()])

    def answer(self, continuation: Continuation | None) -> QueryPage:
        token = encode_continuation(self.query, continuation) if continuation else None
        return QueryPage(self.records, token, self.unreadable)

    def full(self) -> QueryPage:
        """The page filled up: it goes on after its last record (even if nothing follows)."""
        last = _order(self.records[-1])
        return self.answer(Continuation(day_of(last[0]), last))


def run_query(
    query: ActivityQuery,
    *,
    tables: IndexTables,
    reader: ArchiveReader,
    continuation: str | None = None,
) -> QueryPage:
    """Up to `query.limit` matching records, newest first, and the token for the next page.

    A page that fills up carries a continuation even when nothing follows (the next page is
    then empty, without one); a page cut short by MAX_PARTITIONS_PER_PAGE carries one too.
    """
    since_day = query.since.date()
    newest_day = (query.until - _ONE_TICK).date()  # until is exclusive
    start, after = newest_day, None
    if continuation is not None:
        position = decode_continuation(continuation, query)
        if position.day > newest_day:
            raise QueryError("continuation does not belong to this query")
        # A relative `since` moves on between pages: a token older than the range is done.
        if position.day < since_day:
            return QueryPage([], None)
        start, after = position.day, position.after
    page = _Page(query, after)
    page.held = _held_months(tables, start, since_day)
    for field, kind in KEY_ORDER:
        value: str | None = getattr(query, field)
        if value is not None:
            return _by_key(page, (kind, value), start, tables, reader)
    return _by_day(page, start, tables, reader)


def _held_months(tables: IndexTables, newest: date, oldest: date) -> set[str] | None:
    """The months with a table, when the range is long enough for one listing to save requests
    (a key lookup without `since` may reach back years); None: assume every one."""
    spanned = (newest.year - oldest.year) * 12 + newest.month - oldest.month
    return set(tables.months()) if spanned >= _LIST_MONTHS_FROM else None


# --- with a key filter: posting rows, month by month ---------------------------------------


def _months(newest: date, oldest: date) -> Iterator[tuple[date, date]]:
    """(newest day, oldest day) of each month from `newest` back to `oldest`."""
    top = newest
    while top >= oldest:
        first = top.replace(day=1)
        yield top, max(first, oldest)
        if first == date.min:
            return
        top = first - timedelta(days=1)  # the last day of the month before


def _by_key(
    page: _Page, key: tuple[str, str], start: date, tables: IndexTables, reader: ArchiveReader
) -> QueryPage:
    """Entries day by day, newest first, fetched a page's worth at a time (across days, so
    that a sparse value costs one parallel fetch a page, not one a day)."""
    pending: list[_Entry] = []
    stop: Continuation | None = None
    for item in _key_days(page, key, start, tables):
        if isinstance(item, Continuation):
            stop = item
            break
        pending = _fetch(page, [*pending, *item], reader, drain=False)
        if page.lacking() == 0:
            return page.full()
    _fetch(page, pending, reader, drain=True)
    return page.full() if page.lacking() == 0 else page.answer(stop)


def _key_days(
    page: _Page, key: tuple[str, str], start: date, tables: IndexTables
) -> Iterator[list[_Entry] | Continuation]:
    """Each day's entries (newest second first), newest day first; a Continuation where the
    walk stops at KEY_MONTHS_PER_PAGE months."""
    walked = 0
    for top, bottom in _months(start, page.query.since.date()):
        month = month_of(top)
        if not page.has_table(month):
            continue  # nothing to read, nothing to count
        if walked == KEY_MONTHS_PER_PAGE:
            yield Continuation(top, None)  # top: that month's last day
            return
        walked += 1
        for day, postings in month_postings(tables, month, key, top, bottom):
            if bottom <= day <= top:  # the ranges already say so; checked all the same
                yield _day_entries(page, day, postings)


def _day_entries(
    page: _Page, day: date, rows: Iterable[tuple[BlobRef, list[tuple[int, int]]]]
) -> list[_Entry]:
    """A day's entries whose second may hold a record for the page, newest second first."""
    entries: list[_Entry] = []
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


def _fetch(
    page: _Page, entries: list[_Entry], reader: ArchiveReader, *, drain: bool
) -> list[_Entry]:
    """Fetch entries in batches of what the page lacks, in whole seconds (a second's records
    are ordered only once read); without `drain`, only while a whole batch is at hand.
    Returns the entries not fetched."""
    start = 0
    while page.lacking() > 0 and start < len(entries):
        # The token's own second was partly returned already: its entries come on top.
        wanted = page.lacking() + sum(1 for _ in takewhile(page.at_token, entries[start:]))
        if not drain and len(entries) - start < wanted:
            break
        end = min(start + wanted, len(entries))
        while end < len(entries) and entries[end][:2] == entries[end - 1][:2]:
            end += 1
        got = reader.fetch([(ref, ordinal) for _, _, ref, ordinal in entries[start:end]])
        page.emit(sorted(page.keep(got), key=_order, reverse=True))
        start = end
    return entries[start:]


# --- without one: manifests, day by day -----------------------------------------------------


def _by_day(page: _Page, start: date, tables: IndexTables, reader: ArchiveReader) -> QueryPage:
    day, oldest = start, page.query.since.date()
    walked = 0
    while day >= oldest:
        if not page.has_table(month_of(day)):
            day = day.replace(day=1)  # skip the month: nothing to read, nothing to count
        elif walked == MAX_PARTITIONS_PER_PAGE:
            return page.answer(Continuation(day, None))
        else:
            walked += 1
            _read_day(page, day, tables, reader)
            if page.lacking() == 0:
                return page.full()
        if day == date.min:
            break
        day -= timedelta(days=1)
    return page.answer(None)


def _manifests(page: _Page, day: date, tables: IndexTables) -> list[Manifest]:
    """The day's committed blobs whose span meets the page's range, newest span first."""
    month, partition = month_of(day), f"{MANIFEST_ROW}{day.day:02d}"
    if page.wanted is None:
        rows = tables.query(month, FILTER_PARTITION, {"pk": partition})
    else:
        code = CLASS_CODES[page.wanted]
        # "~" sorts after every id character: [code, code + "~") is one class's rows.
        parameters = {"pk": partition, "low": code, "high": code + "~"}
        rows = tables.query(month, FILTER_RANGE, parameters)
    manifests = []
    for row in rows:
        if not is_manifest(row):
            continue  # a write in flight, or fenced: not committed
        try:
            ref = BlobRef.of_manifest(month, partition, str(row["RowKey"]))
            manifest = Manifest.of_row(ref, row)
        except (KeyError, ValueError, TypeError, IndexError):
            continue  # not a row of the index's making
        if page.spans(manifest):
            manifests.append(manifest)
    return sorted(manifests, key=lambda m: m.high_ticks, reverse=True)


def _read_day(page: _Page, day: date, tables: IndexTables, reader: ArchiveReader) -> None:
    """A day's records from whole blobs, read in waves: enough blobs for what the page lacks,
    then any blob whose span could still hold a record newer than the page's last."""
    manifests = _manifests(page, day, tables)
    found: list[NormalizedRecord] = []
    lacking = page.lacking()
    start = 0
    while start < len(manifests):
        end = start
        if len(found) >= lacking:
            cutoff = _ticks(_order(found[lacking - 1])[0])
            while end < len(manifests) and manifests[end].high_ticks >= cutoff:
                end += 1
            if end == start:
                break  # no blob left can hold a record newer than the page's last
        else:
            count = 0
            while end < len(manifests) and (end == start or count < lacking - len(found)):
                count += manifests[end].count
                end += 1
        wave = [manifest.ref for manifest in manifests[start:end]]
        start = end
        for got in tables.parallel(reader.blob_records, wave):
            found.extend(page.keep(got if isinstance(got, list) else [got]))
        found.sort(key=_order, reverse=True)
    page.emit(found)
