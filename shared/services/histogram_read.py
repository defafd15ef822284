"""What a histogram reads from the index, a month at a time: few requests over long ranges.

A value's lookup (shared.services.postings_read) reads a compacted day's run with one range
read: about one request a day, 365 for a year. A histogram over a year reads instead, for a
kind with few values (subscription, status), the kind's fresh rows of the month in one read
and every row of its runs of the month in one range scan across the month's run partitions
(about a row a value a day: the rows it passes over are other subscriptions' or statuses'),
and the month's manifest rows in another: three or four requests a month. A kind with many
values (resource, caller, ...) keeps the per-day lookup: its month holds many other values'
rows.

Exact while compaction runs, by the order postings_read follows: the fresh rows first, then
the days' state rows, then the runs. A run's rows are taken only when its last row
(`{run}~`) was seen too; a run replaced during the scan (its rows deleted) is read again
through postings_read.run_places, which follows it to its successor.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from datetime import date
from typing import Any

from shared.adapters.index_tables import IndexTables
from shared.core.archive_keys import (
    MANIFEST_ROW,
    STATE,
    BlobRef,
    groups_of,
    month_of,
    posting_ref,
    unpack_entries,
    value_hash,
)
from shared.core.query_spec import FILTER_PARTITION, FILTER_PARTITIONS
from shared.core.runs import LAST_ROW, RUN_ROW, prefix_of, run_partition, run_prefix, unpack_run
from shared.services.archive_read import Manifest
from shared.services.postings_read import run_places
from shared.services.run_store import RunStore

FEW_VALUES = frozenset({"s", "t"})  # kinds read a month at a time (subscription, status)

Places = dict[date, dict[BlobRef, set[tuple[int, int]]]]  # (second of day, ordinal)
_ID_CHARS = 13
_DAMAGED = (KeyError, ValueError, IndexError, TypeError, struct.error)


def _add(found: Places, day: date, ref: BlobRef, places: Iterable[tuple[int, int]]) -> None:
    found.setdefault(day, {}).setdefault(ref, set()).update(places)


def _fresh(
    tables: IndexTables, month: str, kind: str, values: list[str], span: tuple[date, date]
) -> dict[bytes, Places]:
    """The values' places in the kind's fresh rows of the month's days: all of the kind's
    fresh rows, in one read (a kind with few values: the rows are theirs, and what is still
    fresh is the days compaction has not closed yet)."""
    newest, oldest = span
    found: dict[bytes, Places] = {value_hash(value)[1]: {} for value in values}
    rows = tables.query(month, FILTER_PARTITION, {"pk": kind}, select=["RowKey", "E"])
    for row in rows:
        try:
            ref = posting_ref(month, str(row["RowKey"]))
            if not oldest <= ref.day <= newest:
                continue
            for digest, packed in groups_of(bytes(row["E"])):
                if digest in found:
                    _add(found[digest], ref.day, ref, unpack_entries(packed))
        except _DAMAGED:
            continue  # not a row of the index's making
    return found


def month_values(
    tables: IndexTables, month: str, kind: str, values: list[str], span: tuple[date, date]
) -> dict[str, Places]:
    """Each value's places in the month's days [oldest, newest]: fresh rows, then runs."""
    newest, oldest = span
    digests = {value_hash(value)[1]: value for value in values}
    found = _fresh(tables, month, kind, values, span)  # 1. fresh first
    committed = RunStore(tables, month).committed_runs(newest.day, oldest.day)  # 2. state
    # (day, run) of the runs to take, the units of the values' hashes: their hash prefix
    prefixes = {prefix_of(digest) for digest in digests}
    wanted = {
        (newest.replace(day=day), run): prefix
        for day, units in committed.items()
        for (unit_kind, prefix), run in units.items()
        if unit_kind == kind and prefix in prefixes
    }
    pending: dict[tuple[date, int], list[tuple[bytes, BlobRef, bytes]]] = {}
    complete: set[tuple[date, int]] = set()
    parameters = {"low": run_partition(kind, oldest), "high": run_partition(kind, newest)}
    rows = tables.query(
        month, FILTER_PARTITIONS, parameters, select=["PartitionKey", "RowKey", "E"]
    )
    by_prefix = {run_prefix(run): run for _, run in wanted}  # a run id is unique
    for row in rows:  # 3. the runs, every row of the kind's month
        try:
            day = newest.replace(day=int(str(row["PartitionKey"])[len(RUN_ROW) + 1 :]))
            row_key = str(row["RowKey"])
            run = by_prefix.get(row_key[:_ID_CHARS])
            if run is None or (day, run) not in wanted:
                continue  # another unit's run, or rows not (or no longer) committed
            if row_key[_ID_CHARS:] == LAST_ROW:
                complete.add((day, run))
            held = pending.setdefault((day, run), [])
            held += [
                got for got in unpack_run(bytes(row.get("E") or b""), day) if got[0] in digests
            ]
        except _DAMAGED:
            continue
    for (day, run), prefix in sorted(wanted.items()):
        if (day, run) in complete:
            for digest, ref, entries in pending.get((day, run), []):
                _add(found[digest], day, ref, unpack_entries(entries))
            continue
        # Replaced during the scan: each value of the unit from the run's successor.
        for digest in (digest for digest in digests if prefix_of(digest) == prefix):
            for ref, places in run_places(tables, (kind, digest), day, run):
                _add(found[digest], day, ref, places)
    return {digests[digest]: places for digest, places in found.items()}


def _manifest_rows(
    tables: IndexTables, newest: date, oldest: date, select: list[str] | None
) -> Iterator[tuple[BlobRef, dict[str, Any]]]:
    """The month's committed blobs of days [oldest, newest]: one scan of their manifest rows."""
    month = month_of(newest)
    parameters = {
        "low": f"{MANIFEST_ROW}{oldest.day:02d}",
        "high": f"{MANIFEST_ROW}{newest.day:02d}",
    }
    for row in tables.query(month, FILTER_PARTITIONS, parameters, select=select):
        if row.get(STATE):  # (a selected property may come back null: committed)
            continue  # a write in flight, or fenced: not committed
        try:
            yield BlobRef.of_manifest(month, str(row["PartitionKey"]), str(row["RowKey"])), row
        except _DAMAGED:
            continue


def committed_refs(tables: IndexTables, newest: date, oldest: date) -> set[BlobRef]:
    """The committed blobs of days [oldest, newest] of a month (their keys alone)."""
    select = ["PartitionKey", "RowKey", STATE]
    return {ref for ref, _ in _manifest_rows(tables, newest, oldest, select)}


def committed_blobs(tables: IndexTables, newest: date, oldest: date) -> dict[BlobRef, Manifest]:
    """The manifests of the committed blobs of days [oldest, newest] of a month."""
    found: dict[BlobRef, Manifest] = {}
    for ref, row in _manifest_rows(tables, newest, oldest, None):
        try:
            found[ref] = Manifest.of_row(ref, dict(row))
        except _DAMAGED:
            continue  # not a row of the index's making
    return found
