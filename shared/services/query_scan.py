"""A query's days read from their manifests: for a query without an indexed filter, or for a
month whose blobs lack the filter's postings (shared.services.index_kinds).

A day's manifest rows (one class's, with a category) give each blob's time span: blobs are
read whole, newest span first, until no blob left can hold a record newer than what the
page already has. A page walks at most MAX_PARTITIONS_PER_PAGE days, and reads at most what
its ScanBudget allows: stopped between two blobs, every record newer than the next blob's
newest is known, so the page goes on from there.
"""

from __future__ import annotations

from datetime import date, timedelta

from shared.adapters.index_tables import IndexTables
from shared.core.archive_keys import CLASS_CODES, MANIFEST_ROW, month_of
from shared.core.continuation import Continuation
from shared.core.query_spec import FILTER_PARTITION, FILTER_RANGE
from shared.core.records import NormalizedRecord
from shared.services.archive_read import (
    ArchiveReader,
    Manifest,
    UnreadableRecord,
    listed_manifest,
)
from shared.services.query_page import Page, QueryPage, order, ticks

# Days one page may walk: a long, sparse range costs bounded work per request and hands back
# a continuation (possibly with few or no records) instead.
MAX_PARTITIONS_PER_PAGE = 100


def by_day(page: Page, start: date, tables: IndexTables, reader: ArchiveReader) -> QueryPage:
    day, oldest = start, page.query.since.date()
    walked = 0
    while day >= oldest:
        if not page.has_table(month_of(day)):
            day = day.replace(day=1)  # skip the month: nothing to read, nothing to count
        elif walked == MAX_PARTITIONS_PER_PAGE:
            return page.answer(Continuation(day, None))
        else:
            walked += 1
            cut = read_day(page, day, tables, reader)
            if page.lacking() == 0:
                return page.full()
            if cut is not None:
                return page.answer(cut)
            if page.spent() and day > oldest:
                return page.answer(Continuation(day - timedelta(days=1), None))
        if day == date.min:
            break
        day -= timedelta(days=1)
    return page.answer(None)


def manifests(page: Page, day: date, tables: IndexTables) -> list[Manifest]:
    """The day's committed blobs whose span meets the page's range, newest span first."""
    month, partition = month_of(day), f"{MANIFEST_ROW}{day.day:02d}"
    if page.wanted is None:
        rows = tables.query(month, FILTER_PARTITION, {"pk": partition})
    else:
        code = CLASS_CODES[page.wanted]
        # "~" sorts after every id character: [code, code + "~") is one class's rows.
        parameters = {"pk": partition, "low": code, "high": code + "~"}
        rows = tables.query(month, FILTER_RANGE, parameters)
    found = []
    for row in rows:
        listed = listed_manifest(month, partition, row)
        manifest = listed[1] if listed is not None else None
        if isinstance(manifest, UnreadableRecord):
            page.keep([manifest])  # its records are named missing, not silently left out
        elif manifest is not None and page.spans(manifest):
            found.append(manifest)
    return sorted(found, key=lambda m: m.high_ticks, reverse=True)


def _wave_end(page: Page, listed: list[Manifest], start: int, found: list[NormalizedRecord]) -> int:
    """The blobs of the next wave: enough for what the page lacks, then any blob whose span
    could still hold a record newer than the page's last (start: none is left to read)."""
    end, lacking = start, page.lacking()
    if len(found) >= lacking:
        cutoff = ticks(order(found[lacking - 1])[0])
        while end < len(listed) and listed[end].high_ticks >= cutoff:
            end += 1
        return end
    count = 0
    while end < len(listed) and (end == start or count < lacking - len(found)):
        count += listed[end].count
        end += 1
    return end


def read_day(
    page: Page, day: date, tables: IndexTables, reader: ArchiveReader
) -> Continuation | None:
    """A day's records from whole blobs, read in waves; where to go on when the page's budget
    ran out before the day was read (None: the day is done, or the page full)."""
    listed = manifests(page, day, tables)
    found: list[NormalizedRecord] = []
    start = 0
    while start < len(listed):
        end = _wave_end(page, listed, start, found)
        if end == start:
            break  # no blob left can hold a record newer than the page's last
        wave = [manifest.ref for manifest in listed[start:end]]
        start = end
        for got in tables.parallel(reader.blob_records, wave):
            batch = got if isinstance(got, list) else [got]
            page.read += len(batch)
            found.extend(page.keep(batch))
        found.sort(key=order, reverse=True)
        if page.spent() and start < len(listed):
            newest_unread = listed[start].high_ticks
            then = page.before(day, newest_unread + 1)
            # Blobs read again (their spans reach across where the page began) may take the
            # whole bound: then read on, until stopping moves the search past its start.
            if page.moves_on(then):
                page.emit([r for r in found if ticks(order(r)[0]) > newest_unread])
                return None if page.lacking() == 0 else then
    page.emit(found)
    return None
