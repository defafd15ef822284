"""A value's postings in a month, day by day: fresh rows and the days' compacted runs.

Exact while compaction runs (shared.services.compaction), because of the order of reads:

1. the fresh rows first (two RowKey ranges a month: the small blobs' single rows and the
   value's bucket). A fresh row missing here was merged and deleted before this read, so
   the run committed before it (compaction deletes fresh rows only after its commit);
2. then the days' state rows, which name each day's run as of now: a run that holds every
   fresh row read missing in step 1;
3. then, for each day with a run, its rows from the value's hash on (one range read). A run
   replaced meanwhile has its rows deleted from the last down (shared.services.run_store):
   a read whose rows run out before one past the hash (every run ends with `{run}~`) saw
   the run go, before or between its requests, so it reads the day's state again and goes
   on with the newer run, which holds all the old one held. A read that reaches a row past
   the hash saw every row below it.

A place listed both fresh and in a run (compaction stopped between its commit and its
deletes) counts once. Reading costs two ranges and one state read a month, then one range
read a day that returns the row holding the value: what the lookup finds, whatever else the
days hold. A frequent value (a subscription's, a status's: more places a day than a row
holds) has its rows newest first (shared.core.runs), so its day comes in chunks, a row at a
time, and a page stops reading once it has its records; a page that starts inside a day (a
token, or the range's end) seeks to its second. A run replaced in the middle of that is read
on from its successor, from the second the chunks so far reached.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Generator, Iterable, Iterator
from datetime import date
from typing import Any

from shared.adapters.index_tables import IndexTables
from shared.core.archive_keys import (
    BlobRef,
    month_of,
    places_of,
    posting_ranges,
    posting_ref,
    value_hash,
)
from shared.core.query_spec import FILTER_RANGE
from shared.core.runs import (
    FILTER_RUN,
    LAST_ROW,
    ends_past,
    lookup_low,
    places_in_run,
    prefix_of,
    row_second,
    run_partition,
    run_prefix,
    seek_low,
)
from shared.services.run_store import RunStore

_RUN_PAGE = 4  # rows of the first request: one holds the value but for the most frequent
_FULL_PAGE = 1000  # rows of each later request: the most Table storage returns
_REREADS = 3  # a run replaced this many times during one lookup: read the state again

DayPostings = list[tuple[BlobRef, list[tuple[int, int]]]]
_DAMAGED = (struct.error, KeyError, UnicodeDecodeError, ValueError, TypeError)
_MENDS = "`python -m shared verify` names it and `verify --repair --apply` mends it"


class DamagedIndex(Exception):
    """A compacted run a lookup needs cannot be read (a row's bytes, or its last row gone):
    the lookup cannot be answered whole, and says so rather than answer short."""


Chunk = tuple[DayPostings, int | None]  # places; the second down from which more may come


def run_places(tables: IndexTables, key: tuple[str, bytes], day: date, run: int) -> DayPostings:
    """A value's places in a day's run, from the rows that can hold its hash."""
    return [piece for places, _ in run_chunks(tables, key, day, run) for piece in places]


def run_chunks(
    tables: IndexTables, key: tuple[str, bytes], day: date, run: int, below: int | None = None
) -> Iterator[Chunk]:
    """A value's places in a day's run (of second `below` or older, if given), in chunks
    newest first: a frequent value's rows hold its places newest first (shared.core.runs),
    so a chunk comes with each row, holding the places newer than the row's last second,
    whose number goes with it (more may come from that second down); the last chunk's is
    None. A value whose rows are not so ordered comes in one chunk. A run replaced during
    the read is read on from its successor, from where the chunks so far stopped."""
    current: int | None = run
    unit = (key[0], prefix_of(key[1]))
    for _ in range(_REREADS):
        if current is None:
            return
        below = yield from _read_run(tables, key, day, current, below)
        if below == _DONE:
            return
        # Replaced: its successor, which holds all the old run held.
        read, current = current, RunStore(tables, month_of(day)).state(day).runs.get(unit)
        if current == read:  # not replaced: the run itself lacks its last row
            raise DamagedIndex(
                f"the index is damaged: the compacted run of {unit[0]!r} values of {day} "
                f"has lost its last row, so its values are not all found; {_MENDS}"
            )
    raise DamagedIndex(
        f"the compacted postings of {day} changed {_REREADS} times during one lookup: search "
        f"again; if it says so again the index is damaged: {_MENDS}"
    )


_DONE = -1  # _read_run's answer when it read the run to a row past the hash


def _read_run(
    tables: IndexTables, key: tuple[str, bytes], day: date, run: int, below: int | None
) -> Generator[Chunk, None, int | None]:
    """The rows from the hash on, a few first (most values end in the first), then a full
    page at a time; yields chunks as run_chunks says, then returns _DONE, or, when the
    run's rows ran out before one past the hash (every run ends with `{run}~`, past every
    hash: it was replaced and deleted meanwhile), the second down from which nothing was
    yielded (what was read past it is dropped: the successor holds it)."""
    kind, digest = key
    month = month_of(day)
    low, last = lookup_low(run, digest), run_prefix(run) + LAST_ROW
    held: dict[BlobRef, list[tuple[int, int]]] = {}
    page_size, sought = _RUN_PAGE, below is None
    while True:
        parameters = {"pk": run_partition(kind, day), "low": low, "high": last}
        rows = tables.query(
            month, FILTER_RUN, parameters, select=["RowKey", "E"], page_size=page_size
        )
        again = False
        for count, row in enumerate(rows, start=1):
            row_key = str(row["RowKey"])
            second = row_second(row_key, digest)
            if not sought and below is not None and second is not None and second > below:
                low, sought, again = seek_low(run, digest, below), True, True  # skip newer rows
                break
            sought = True
            try:
                found = list(places_in_run(_packed(row), day, digest))
            except _DAMAGED:
                raise DamagedIndex(
                    f"the index is damaged: run row {parameters['pk']}/{row_key} of month "
                    f"{month} cannot be read; {_MENDS}"
                ) from None
            for ref, places in found:
                wanted = places if below is None else [p for p in places if p[0] <= below]
                held.setdefault(ref, []).extend(wanted)
            if ends_past(row_key, digest):
                yield list(held.items()), None
                return _DONE
            if second is not None:
                yield _older_than(held, second), second
                below = second
            low = row_key + " "  # the next query goes on after this row (" " sorts first)
            if count == page_size == _RUN_PAGE:
                page_size, again = _FULL_PAGE, True  # a frequent value: the rest in full pages
                break
        if not again:
            return below  # the rows ran out before one past the hash: the run is gone


def _older_than(held: dict[BlobRef, list[tuple[int, int]]], second: int) -> DayPostings:
    """The places newer than `second`, taken out of `held` (which keeps the rest)."""
    ready: DayPostings = []
    for ref, places in list(held.items()):
        newer = [place for place in places if place[0] > second]
        if newer:
            ready.append((ref, newer))
            held[ref] = [place for place in places if place[0] <= second]
    return ready


def _packed(row: dict[str, Any]) -> bytes:
    value = row.get("E")
    return bytes(value) if value is not None else b""


def _fresh(
    tables: IndexTables, month: str, key: tuple[str, str], newest: int, oldest: int
) -> Iterator[tuple[BlobRef, list[tuple[int, int]]]]:
    """(blob, the value's places) of the fresh rows, newest day first."""
    kind, value = key
    ranges = [
        tables.query(
            month, FILTER_RANGE, {"pk": kind, "low": low, "high": high}, select=["RowKey", "E"]
        )
        for low, high in posting_ranges(value, newest, oldest)
    ]
    for row in heapq.merge(*ranges, key=lambda row: str(row["RowKey"])[1:3]):
        try:
            ref = posting_ref(month, str(row["RowKey"]))
            places = places_of(bytes(row["E"]), value)
        except (KeyError, ValueError, IndexError, TypeError, struct.error):
            continue  # not a row of the index's making
        if places:
            yield ref, places


def month_postings(
    tables: IndexTables,
    month: str,
    key: tuple[str, str],
    span: tuple[date, date],
    below: int | None = None,
) -> Iterator[tuple[date, DayPostings, int | None]]:
    """A value's (blob, places) in the days [oldest, newest] of one month, newest day first,
    each day in chunks newest first (run_chunks; with each chunk the second down from which
    more of its day may come, None for the day's last); `below`: only the newest day's places
    of that second or older are wanted (a page starting inside it). Days' first run reads go
    side by side, a few days at a time (the newest alone), so a page that fills early stops."""
    kind, value = key
    newest, oldest = span
    by_day: dict[date, DayPostings] = {}
    for ref, places in _fresh(tables, month, key, newest.day, oldest.day):  # 1. fresh first
        by_day.setdefault(ref.day, []).append((ref, places))
    digest = value_hash(value)[1]
    unit = (kind, prefix_of(digest))
    committed = RunStore(tables, month).committed_runs(newest.day, oldest.day)  # 2. the runs
    runs = {day: units[unit] for day, units in committed.items() if unit in units}
    days = sorted(
        {day for day in by_day if oldest <= day <= newest}
        | {newest.replace(day=d) for d in runs if oldest.day <= d <= newest.day},
        reverse=True,
    )
    # The newest day alone first: a frequent value's day (a subscription's, a status's) may
    # fill the page, and each older day read with it would cost as much. Then a wave at once.
    start, wave = 0, 1
    while start < len(days):
        batch = days[start : start + wave]
        start, wave = start + len(batch), max(1, tables.parallelism)
        streams = {
            day: run_chunks(
                tables, (kind, digest), day, runs[day.day], below if day == newest else None
            )
            for day in batch
            if day.day in runs
        }
        firsts = tables.parallel(lambda stream: next(stream, None), list(streams.values()))
        first = dict(zip(streams, firsts, strict=True))
        for day in batch:
            yield from _day_chunks(day, by_day.get(day, []), first.get(day), streams.get(day))


def _day_chunks(
    day: date, fresh: DayPostings, chunk: Chunk | None, stream: Iterator[Chunk] | None
) -> Iterator[tuple[date, DayPostings, int | None]]:
    """A day's chunks from its run, each with the fresh places of its seconds (a place both
    fresh and in the run, of a merge stopped before its deletes, counts once)."""
    while chunk is not None:
        places, more_from = chunk
        if more_from is None:
            break
        now = [(ref, [p for p in found if p[0] > more_from]) for ref, found in fresh]
        fresh = [(ref, [p for p in found if p[0] <= more_from]) for ref, found in fresh]
        yield day, _union([*now, *places]), more_from
        chunk = next(stream, None) if stream is not None else None
    yield day, _union([*fresh, *(chunk[0] if chunk is not None else [])]), None


def _union(postings: Iterable[tuple[BlobRef, list[tuple[int, int]]]]) -> DayPostings:
    """One entry a blob, each place once."""
    merged: dict[BlobRef, set[tuple[int, int]]] = {}
    for ref, places in postings:
        merged.setdefault(ref, set()).update(places)
    return [(ref, sorted(places)) for ref, places in merged.items() if places]
