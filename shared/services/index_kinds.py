"""Which posting kinds a month table has for every one of its blobs.

A kind added to LOOKUP_COLUMNS (resource group, status) is posted by every write from then
on, but blobs written before have none of it: a lookup of that kind would silently miss
their records. So a month table says which kinds it holds for all its blobs, in one row
(PartitionKey KINDS_PARTITION, RowKey KINDS_ROW, `K` the kind letters), written by the first
writer of the month when it finds the month without any manifest row (pending or committed:
a write inserts its pending rows before anything else). A month without that row is legacy:
its blobs have LEGACY_KINDS, and a query uses another filter or reads the month's days
(shared.services.query).

One race is left, and only while a deployment replaces an older version: an instance of
that version writing the first blob of a month beside a new writer that has just marked it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable

from shared.adapters.index_tables import IndexTables
from shared.core.keys import LEGACY_KINDS, LOOKUP_COLUMNS

KINDS_PARTITION = "v"
KINDS_ROW = "kinds"
KINDS = "K"
# Any manifest row of the month: PartitionKeys m01..m31 (a constant template, bound values).
FILTER_MANIFESTS = "PartitionKey ge @low and PartitionKey lt @high"
_MANIFESTS = {"low": "m", "high": "n"}


class IndexKinds:
    """The kinds of each month's blobs: marked by writers, read by queries and histograms.

    A marked month never loses its mark (the row goes only with its table), so what is read
    is kept for the process; a month found legacy is read again next time (its table may not
    exist yet)."""

    def __init__(self, tables: IndexTables) -> None:
        self._tables = tables
        self._marked: dict[str, frozenset[str]] = {}
        self._settled: set[str] = set()  # months a writer of this process has looked at
        self._lock = threading.Lock()

    def of(self, month: str) -> frozenset[str]:
        """The kinds every blob of the month has postings of."""
        known = self._marked.get(month)
        if known is not None:
            return known
        row = self._tables.get(month, KINDS_PARTITION, KINDS_ROW)
        if row is None:
            return LEGACY_KINDS
        kinds = frozenset(str(row.get(KINDS, ""))) | LEGACY_KINDS
        with self._lock:
            self._marked[month] = kinds
        return kinds

    def mark(self, months: Iterable[str]) -> None:
        """Before a write's first pending row in a month: mark the month if it has no blob."""
        for month in sorted(set(months) - self._settled):
            if self._tables.get(month, KINDS_PARTITION, KINDS_ROW) is None and not any(
                True
                for _ in self._tables.query(
                    month, FILTER_MANIFESTS, _MANIFESTS, select=["RowKey"], page_size=1
                )
            ):
                row = {"PartitionKey": KINDS_PARTITION, "RowKey": KINDS_ROW}
                self._tables.create(month, [{**row, KINDS: "".join(LOOKUP_COLUMNS)}])
            with self._lock:
                self._settled.add(month)


_SHARED: weakref.WeakKeyDictionary[IndexTables, IndexKinds] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def kinds_of(tables: IndexTables) -> IndexKinds:
    """The process's one IndexKinds of a store (what it has read is kept between requests)."""
    with _SHARED_LOCK:
        found = _SHARED.get(tables)
        if found is None:
            found = _SHARED[tables] = IndexKinds(tables)
        return found
