"""Compaction: merge each closed day's fresh posting rows into runs sorted by value hash.

The unit of work is a day, a kind and a hash prefix (shared.core.runs). A unit's run is
replaced whole, never edited: a merge reads the unit's fresh rows of committed blobs and its
current run, writes a new run beside it, and commits it by replacing the day's state row,
If-Match the ETag it read; only then does it delete the fresh rows it merged and the old run.
So, at every step:

* lookups stay exact (shared.services.postings_read reads fresh rows before the state, and a
  run it finds gone sends it to the state again);
* a merge killed anywhere leaves either its run unreferenced (`W`: the next merge of the unit
  deletes it first) or its commit done with fresh rows and an old run left over (`O`: deleted
  next time; a blob's places found both fresh and in a run count once);
* two merges of a unit never both commit: the second's conditional write fails (412), and a
  merge paused past any timeout fails its commit the same way, then deletes its own rows.

Fresh rows of large blobs are by hash prefix: a unit reads and deletes only its own. Small
blobs' single rows (and rows of versions before compaction) hold every prefix: each unit
takes its prefix's values from them, and they are deleted once every unit of their day and
kind has committed them in one pass (until then a place is found fresh and in a run: once).
Only committed blobs' postings are merged: a pending blob keeps its fresh rows (its writer
may yet be fenced and remove them), and a blob no longer committed (repair took it back,
retention removed its class-day) drops out when its unit is merged again. Deletes go by the
hundred in one partition's transactions; a run stops starting units after its time budget
(the timer's 10-minute limit) and the next run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from shared.adapters.index_tables import IndexTables
from shared.core.archive_keys import (
    LEGACY_LEADS,
    MANIFEST_ROW,
    POSTING_LEADS,
    PREFIX_LEADS,
    SINGLE_ROW,
    BlobRef,
    day_range,
    groups_of,
    posting_ref,
)
from shared.core.keys import LOOKUP_COLUMNS
from shared.core.query_spec import FILTER_PARTITION, FILTER_RANGE
from shared.core.runs import (
    Postings,
    Unit,
    add_postings,
    combine,
    prefix_of,
)
from shared.services.archive_read import is_manifest
from shared.services.run_store import RunStore, UnitMerge

# A day is merged once it ended this long ago: Activity Log events arrive up to hours late;
# what comes later still is merged by a later run (the unit's run is replaced).
SETTLE = timedelta(hours=3)
TIMER_BUDGET_SECONDS = 420.0  # host.json functionTimeout is 10 minutes

Keys = list[dict[str, Any]]


@dataclass(slots=True)
class CompactionReport:
    units: int = 0  # units whose run was (re)written
    fresh_rows: int = 0  # fresh posting rows merged, then deleted
    run_rows: int = 0  # run rows written
    busy: list[str] = field(default_factory=list)  # units another merge held
    days_left: int = 0  # closed days not reached within the time budget

    def as_dict(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "fresh_rows": self.fresh_rows,
            "run_rows": self.run_rows,
            "busy": self.busy,
            "days_left": self.days_left,
        }


def compact(
    tables: IndexTables,
    *,
    as_of: datetime,
    months: Sequence[str] | None = None,
    budget_seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> CompactionReport:
    """Merge every closed day (ended SETTLE before `as_of`) that has fresh postings, or a
    merge left unfinished, in the given months (default: all), while the budget lasts."""
    report = CompactionReport()
    try:
        closed = (as_of - SETTLE).date()
    except OverflowError:  # as of the first hours of year 1: no day has closed
        return report
    deadline = clock() + budget_seconds if budget_seconds is not None else None
    for month in months if months is not None else tables.months():
        runs = RunStore(tables, month)
        fresh = fresh_leads(tables, month)
        for day in sorted(set(fresh) | runs.unfinished_days()):
            if day >= closed:
                continue
            if deadline is not None and clock() > deadline:
                report.days_left += 1
                continue
            DayCompaction(tables, month, day, report).run(fresh.get(day, {}))
    return report


Leads = dict[str, set[str]]  # kind -> the leads of its fresh rows on a day


def fresh_leads(tables: IndexTables, month: str) -> dict[date, Leads]:
    """Days with fresh posting rows, and which kinds and leads hold them: a skip scan, one
    request a lead and day found (a kind without any row costs one request)."""
    found: dict[date, Leads] = {}
    for kind in LOOKUP_COLUMNS:
        if _first(tables, month, kind, "", "~") is None:
            continue
        for lead in POSTING_LEADS:
            low = lead
            while (row_key := _first(tables, month, kind, low, lead + "~")) is not None:
                try:
                    ref = posting_ref(month, row_key)
                except (ValueError, KeyError, IndexError):
                    low = row_key + " "  # not a row of the index's making: the next one
                    continue
                found.setdefault(ref.day, {}).setdefault(kind, set()).add(lead)
                low = lead + day_range(ref.day.day)[1]  # past every row of that day
    return found


def day_leads(tables: IndexTables, month: str, day: date) -> Leads:
    """One day's kinds and leads with fresh rows (a request a kind and lead)."""
    low, high = day_range(day.day)
    found: Leads = {}
    for kind in LOOKUP_COLUMNS:
        for lead in POSTING_LEADS:
            if _first(tables, month, kind, lead + low, lead + high) is not None:
                found.setdefault(kind, set()).add(lead)
    return found


def _first(tables: IndexTables, month: str, kind: str, low: str, high: str) -> str | None:
    parameters = {"pk": kind, "low": low, "high": high}
    rows = tables.query(month, FILTER_RANGE, parameters, select=["RowKey"], page_size=1)
    for row in rows:
        return str(row["RowKey"])
    return None


class DayCompaction:
    """A day's units, kind by kind: the small blobs' rows read once a kind and shared."""

    def __init__(self, tables: IndexTables, month: str, day: date, report: CompactionReport):
        self._tables = tables
        self._month = month
        self._day = day
        self._report = report
        self._runs = RunStore(tables, month)

    def run(self, leads: Leads | None = None, *, rewrite: bool = False) -> None:
        """Merge the units with fresh rows (in `leads`; None: look) or an unfinished merge
        (with `rewrite`, every unit with a run too: each then keeps only committed blobs)."""
        if leads is None:
            leads = day_leads(self._tables, self._month, self._day)
        committed = self._committed()
        unfinished = self._runs.unfinished_units(self._day)
        if rewrite:
            unfinished |= set(self._runs.state(self._day).runs)
        for kind in LOOKUP_COLUMNS:
            present = leads.get(kind, set())
            shared, shared_keys = self._shared(kind, present, committed)
            done = True
            for prefix in range(16):
                unit: Unit = (kind, prefix)
                own: Postings = {}
                own_keys: Keys = []
                if PREFIX_LEADS[prefix] in present:
                    own, own_keys = self._own(kind, prefix, committed)
                from_shared = shared.get(prefix, {})
                if not own_keys and not from_shared and unit not in unfinished:
                    continue
                merge = UnitMerge(self._runs, self._day, unit)
                if not merge.run(combine(own, from_shared), committed, own_keys):
                    self._report.busy.append(f"{self._day.isoformat()}/{kind}{prefix:x}")
                    done = False
                    continue
                self._report.units += 1
                self._report.fresh_rows += len(own_keys)
                self._report.run_rows += merge.rows
            if done and shared_keys:
                self._tables.delete(self._month, shared_keys)
                self._report.fresh_rows += len(shared_keys)

    def _committed(self) -> set[BlobRef]:
        partition = f"{MANIFEST_ROW}{self._day.day:02d}"
        refs: set[BlobRef] = set()
        for row in self._tables.query(self._month, FILTER_PARTITION, {"pk": partition}):
            if is_manifest(row):
                try:
                    refs.add(BlobRef.of_manifest(self._month, partition, str(row["RowKey"])))
                except (ValueError, KeyError, IndexError):
                    continue
        return refs

    def _rows(self, kind: str, lead: str) -> list[tuple[str, BlobRef, bytes]]:
        low, high = day_range(self._day.day)
        parameters = {"pk": kind, "low": lead + low, "high": lead + high}
        found = []
        for row in self._tables.query(self._month, FILTER_RANGE, parameters):
            try:
                row_key = str(row["RowKey"])
                found.append((row_key, posting_ref(self._month, row_key), bytes(row["E"])))
            except (ValueError, KeyError, IndexError, TypeError):
                continue  # not a row of the index's making: left as it is
        return found

    def _own(self, kind: str, prefix: int, committed: set[BlobRef]) -> tuple[Postings, Keys]:
        """A unit's own fresh rows (large blobs', by hash prefix) of committed blobs."""
        postings: Postings = {}
        keys: Keys = []
        for row_key, ref, packed in self._rows(kind, PREFIX_LEADS[prefix]):
            if ref in committed:
                for digest, entries in groups_of(packed):
                    add_postings(postings, digest, ref, entries)
                keys.append({"PartitionKey": kind, "RowKey": row_key})
        return postings, keys

    def _shared(
        self, kind: str, present: set[str], committed: set[BlobRef]
    ) -> tuple[dict[int, Postings], Keys]:
        """The rows holding every prefix (small blobs' single rows, older versions' buckets)
        of committed blobs, split by prefix."""
        by_prefix: dict[int, Postings] = {}
        keys: Keys = []
        for lead in (SINGLE_ROW, *LEGACY_LEADS):
            if lead not in present:
                continue
            for row_key, ref, packed in self._rows(kind, lead):
                if ref in committed:
                    for digest, entries in groups_of(packed):
                        into = by_prefix.setdefault(prefix_of(digest), {})
                        add_postings(into, digest, ref, entries)
                    keys.append({"PartitionKey": kind, "RowKey": row_key})
        return by_prefix, keys
