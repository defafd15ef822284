"""The compacted runs of one month table: the days' state rows and the runs' rows, and the
merge of one unit (shared.core.runs explains the layout; shared.services.compaction drives)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableTransactionError

from shared.adapters.index_tables import IndexTables, transactions
from shared.core.archive_keys import BlobRef, new_blob_id
from shared.core.query_spec import FILTER_PARTITION
from shared.core.runs import (
    FILTER_RUN,
    LAST_ROW,
    REPLACED,
    RUN,
    STATE_PARTITION,
    WRITING,
    Postings,
    Unit,
    add_postings,
    keep_blobs,
    merge_sources,
    pack_run,
    read_slots,
    run_bounds,
    run_partition,
    state_row,
    unpack_run,
    write_slots,
)

_DAMAGED = (struct.error, KeyError, UnicodeDecodeError, ValueError, TypeError)


@dataclass(frozen=True, slots=True)
class DayState:
    runs: dict[Unit, int]  # committed
    writing: dict[Unit, int]
    replaced: dict[Unit, int]
    etag: str | None  # None: no state row yet

    @classmethod
    def of_row(cls, row: dict[str, Any] | None, etag: str | None) -> DayState:
        row = row or {}
        return cls(
            read_slots(row.get(RUN)),
            read_slots(row.get(WRITING)),
            read_slots(row.get(REPLACED)),
            etag,
        )


class RunStore:
    def __init__(self, tables: IndexTables, month: str) -> None:
        self.tables = tables
        self.month = month

    def state(self, day: date) -> DayState:
        found = self.tables.read(self.month, STATE_PARTITION, state_row(day))
        return DayState.of_row(found[0], found[1]) if found else DayState.of_row(None, None)

    def committed_runs(self, newest: int, oldest: int) -> dict[int, dict[Unit, int]]:
        """Day of the month -> its units' committed runs, for days in [oldest, newest]."""
        parameters = {"pk": STATE_PARTITION, "low": f"{oldest:02d}", "high": f"{newest:02d}~"}
        filter_range = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"
        found: dict[int, dict[Unit, int]] = {}
        for row in self.tables.query(self.month, filter_range, parameters, select=["RowKey", RUN]):
            try:
                found[int(str(row["RowKey"]))] = read_slots(row.get(RUN))
            except ValueError:
                continue  # not a state row of the index's making
        return found

    def unfinished_days(self) -> set[date]:
        """Days with a unit whose merge stopped before its end."""
        days: set[date] = set()
        for row in self.tables.query(self.month, FILTER_PARTITION, {"pk": STATE_PARTITION}):
            if read_slots(row.get(WRITING)) or read_slots(row.get(REPLACED)):
                day = int(str(row["RowKey"]))
                days.add(date(int(self.month[:4]), int(self.month[4:]), day))
        return days

    def unfinished_units(self, day: date) -> set[Unit]:
        state = self.state(day)
        return set(state.writing) | set(state.replaced)

    def write_state(self, day: date, state: DayState) -> str | None:
        """The state row replaced (If-Match its ETag), or inserted when there was none; the new
        ETag, or None when another merge wrote it first."""
        entity: dict[str, Any] = {
            "PartitionKey": STATE_PARTITION,
            "RowKey": state_row(day),
            RUN: write_slots(state.runs),
            WRITING: write_slots(state.writing),
            REPLACED: write_slots(state.replaced),
        }
        if state.etag is not None:
            return self.tables.replace_if(self.month, entity, state.etag)
        try:
            return self.tables.insert_rows(self.month, [entity])[0]
        except (TableTransactionError, ResourceExistsError) as error:
            if getattr(error, "error_code", None) != "EntityAlreadyExists":
                raise
            return None

    def rows(self, kind: str, day: date, run: int) -> Iterator[dict[str, Any]]:
        low, high = run_bounds(run)
        parameters = {"pk": run_partition(kind, day), "low": low, "high": high}
        yield from self.tables.query(self.month, FILTER_RUN, parameters)

    def postings(self, kind: str, day: date, run: int) -> Postings:
        found: Postings = {}
        for row in self.rows(kind, day, run):
            try:
                for digest, ref, entries in unpack_run(bytes(row.get("E") or b""), day):
                    add_postings(found, digest, ref, entries)
            except _DAMAGED:
                continue  # damaged: verify names it; its blobs' entries are written anew
        return found

    def delete_run(self, kind: str, day: date, run: int) -> None:
        """A run's rows from the last (`{run}~`) down, one transaction after another: a
        lookup reads a run upwards, so a row it reads means every row below it was there
        when it was read, and a run cut short under it has lost its top (shared.services.
        postings_read): it sees the run whole, or sees it go and reads its successor."""
        rows = self.rows(kind, day, run)
        keys = [{"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"]} for row in rows]
        keys.sort(key=lambda key: str(key["RowKey"]), reverse=True)
        for batch in transactions(keys):
            self.tables.delete(self.month, batch)

    def day_refs(self, day: date) -> DayRefs:
        """The blobs the day's committed runs name, each with one row naming it (`partition/
        RowKey`): what verify holds against the manifests; the units whose committed run
        has lost its last row (`{run}~`, which every run has and a delete takes first: the
        run is gone under the state) or has a row that cannot be read, so lookups of its
        values cannot be answered; and, by
        kind, the blobs its runs name."""
        state = self.state(day)
        found = DayRefs({}, [], {})
        for unit, run in sorted(state.runs.items()):
            whole, damaged = False, False
            of_kind = found.by_kind.setdefault(unit[0], set())
            for row in self.rows(unit[0], day, run):
                name = f"{row['PartitionKey']}/{row['RowKey']}"
                whole = whole or str(row["RowKey"]).endswith(LAST_ROW)
                try:
                    named = [ref for _, ref, _ in unpack_run(bytes(row.get("E") or b""), day)]
                except _DAMAGED:
                    damaged = True  # lookups reaching it fail: the unit is as if cut short
                    continue
                for ref in named:
                    found.named.setdefault(ref, name)
                    of_kind.add(ref)
            if damaged or not whole:
                found.broken.append(unit)
        return found


class DayRefs(NamedTuple):
    named: dict[BlobRef, str]  # each blob a run names, with one row naming it
    broken: list[Unit]  # committed runs without their last row
    by_kind: dict[str, set[BlobRef]]  # the blobs the runs of each kind name


_KEEP = -1


def _set(slots: dict[Unit, int], unit: Unit, run: int | None) -> dict[Unit, int]:
    changed = dict(slots)
    if run is None:
        changed.pop(unit, None)
    elif run != _KEEP:
        changed[unit] = run
    return changed


def with_unit(  # noqa: PLR0913 - a state, a unit and its ETag, then the three slots by name
    state: DayState,
    unit: Unit,
    etag: str | None,
    *,
    run: int | None = _KEEP,
    writing: int | None = _KEEP,
    replaced: int | None = _KEEP,
) -> DayState:
    """The state with one unit's slots changed (None: emptied), to write If-Match `etag`."""
    return DayState(
        _set(state.runs, unit, run),
        _set(state.writing, unit, writing),
        _set(state.replaced, unit, replaced),
        etag,
    )


class UnitMerge:
    """One unit's merge: reserve, read, write the new run, commit, clean up."""

    def __init__(self, runs: RunStore, day: date, unit: Unit) -> None:
        self._runs = runs
        self._day = day
        self._unit = unit
        self.rows = 0  # run rows written

    def run(
        self, fresh: Postings, committed: set[BlobRef], fresh_keys: list[dict[str, Any]]
    ) -> bool:
        """Merge `fresh` (the unit's fresh postings as read, of committed blobs; their rows,
        `fresh_keys`, deleted after the commit) with the unit's run; False when another merge
        holds the unit."""
        kind, unit, day = self._unit[0], self._unit, self._day
        state = self._runs.state(day)
        old, new = state.runs.get(unit), new_blob_id()
        reserving = with_unit(state, unit, state.etag, writing=new, replaced=None)
        reserved = self._runs.write_state(day, reserving)
        if reserved is None:
            return False
        # Only now are the unit's leftovers a stopped merge's: the reserve (If-Match the state
        # read) proves no merge committed since, and no merge holding one can commit it now.
        # Deleted before it, a run another merge committed meanwhile went (found from outside).
        for leftover in (state.writing, state.replaced):
            if unit in leftover:
                self._runs.delete_run(kind, day, leftover[unit])
        older = self._runs.postings(kind, day, old) if old is not None else {}
        rows = self._rows(new, keep_blobs(merge_sources(fresh, older), committed))
        self._runs.tables.upsert(self._runs.month, rows)
        commit = with_unit(reserving, unit, reserved, run=new, writing=None, replaced=old)
        done = self._runs.write_state(day, commit)
        if done is None:  # another merge took the unit over while this one was held
            self._runs.delete_run(kind, day, new)
            return False
        self._runs.tables.delete(self._runs.month, fresh_keys)
        if old is not None:
            self._runs.delete_run(kind, day, old)
        self._runs.write_state(day, with_unit(commit, unit, done, replaced=None))  # None: later
        self.rows = len(rows)
        return True

    def _rows(self, run: int, postings: Postings) -> list[dict[str, Any]]:
        rows = []
        for row in pack_run(run, postings):
            entity: dict[str, Any] = {
                "PartitionKey": run_partition(self._unit[0], self._day),
                "RowKey": row.row_key,
            }
            if row.packed:
                entity["E"] = row.packed
            rows.append(entity)
        return rows
