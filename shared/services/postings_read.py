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
days hold.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterable, Iterator
from datetime import date
from typing import Any

from shared.adapters.index_tables import IndexTables
from shared.core.archive_keys import BlobRef, places_of, posting_ranges, posting_ref, value_hash
from shared.core.query_spec import FILTER_RANGE
from shared.core.runs import (
    FILTER_RUN,
    LAST_ROW,
    ends_past,
    lookup_low,
    places_in_run,
    prefix_of,
    run_partition,
    run_prefix,
)
from shared.services.run_store import RunStore

_RUN_PAGE = 4  # rows of the first request: one holds the value but for the most frequent
_FULL_PAGE = 1000  # rows of each later request: the most Table storage returns
_REREADS = 3  # a run replaced this many times during one lookup: read the state again

DayPostings = list[tuple[BlobRef, list[tuple[int, int]]]]


def run_places(
    tables: IndexTables, month: str, key: tuple[str, bytes], day: date, run: int
) -> DayPostings:
    """A value's places in a day's run, from the rows that can hold its hash."""
    current: int | None = run
    for _ in range(_REREADS):
        if current is None:
            return []
        found = _read_run(tables, month, key, day, current)
        if found is not None:
            return found
        unit = (key[0], prefix_of(key[1]))
        current = RunStore(tables, month).state(day).runs.get(unit)  # replaced: its successor
    raise RuntimeError(f"the compacted postings of {day} kept changing during one lookup")


def _read_run(
    tables: IndexTables, month: str, key: tuple[str, bytes], day: date, run: int
) -> DayPostings | None:
    """The places of the rows from the hash on, a few rows first (most values end in the
    first), then the rest of a frequent value's rows a full page at a time; None when the
    run's rows ran out before one past the hash (every run ends with `{run}~`, past every
    hash): it was replaced and deleted meanwhile, before or between these reads."""
    kind, digest = key
    low, last = lookup_low(run, digest), run_prefix(run) + LAST_ROW
    found: DayPostings = []
    for page_size in (_RUN_PAGE, _FULL_PAGE):
        parameters = {"pk": run_partition(kind, day), "low": low, "high": last}
        rows = tables.query(
            month, FILTER_RUN, parameters, select=["RowKey", "E"], page_size=page_size
        )
        for count, row in enumerate(rows, start=1):
            row_key = str(row["RowKey"])
            found.extend(places_in_run(_packed(row), day, digest))
            if ends_past(row_key, digest):
                return found
            low = row_key + " "  # the next query goes on after this row (" " sorts first)
            if count == page_size and page_size == _RUN_PAGE:
                break
        else:
            return None  # cut short: what was read is a part of a run that is gone
    return None


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
    tables: IndexTables, month: str, key: tuple[str, str], newest: date, oldest: date
) -> Iterator[tuple[date, DayPostings]]:
    """Each day's (blob, places) of a value in [oldest, newest] of one month, newest first;
    run reads go side by side, a few days at a time (the newest alone), so a page that fills
    early stops."""
    kind, value = key
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
        with_run = [day for day in batch if day.day in runs]
        read = tables.parallel(
            lambda day: run_places(tables, month, (kind, digest), day, runs[day.day]), with_run
        )
        from_runs = dict(zip(with_run, read, strict=True))
        for day in batch:
            yield day, _union([*by_day.get(day, []), *from_runs.get(day, [])])


def _union(postings: Iterable[tuple[BlobRef, list[tuple[int, int]]]]) -> DayPostings:
    """One entry a blob, each place once."""
    merged: dict[BlobRef, set[tuple[int, int]]] = {}
    for ref, places in postings:
        merged.setdefault(ref, set()).update(places)
    return [(ref, sorted(places)) for ref, places in merged.items()]
