"""Each archive blob's manifest row as the fence of its write: pending, fenced or committed.

A write makes one blob per (class, day) with an id of its own (never reused), and before it
claims anything it inserts the blob's manifest row as *pending* (shared.core.archive_keys).
Its commit replaces that row with the manifest, If-Match the ETag it got from the insert.
Whoever takes the blob's events over first (a writer finding the claim stale, a retry of the
same input, retention sweeping the blob, `verify --repair`) *fences* the row, If-Match the ETag
it read. Both are conditional writes of one entity, so exactly one of them wins: a writer
paused past any timeout resumes, fails its commit, and leaves an orphan that can never be
committed. Clocks decide only when others may take over, never what is committed. (Table
storage's optimistic concurrency: https://learn.microsoft.com/azure/storage/tables/
table-storage-design-patterns and https://learn.microsoft.com/rest/api/storageservices/
update-entity2, If-Match.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from shared.adapters.index_tables import MAX_BATCH, IndexTables, as_int, int64
from shared.core.archive_keys import FENCED, PENDING, PLAN, REPAIRING, STATE, BlobRef


class Stage(Enum):
    COMMITTED = "committed"
    PENDING = "pending"  # a write may still commit it
    DEAD = "dead"  # fenced, or no row: nothing can ever commit it


@dataclass(frozen=True, slots=True)
class Instance:
    """One blob's manifest row as read: its stage, plan, last write and ETag."""

    ref: BlobRef
    stage: Stage
    plan: int | None = None
    written: datetime | None = None
    etag: str | None = None
    row: dict[str, Any] | None = None  # the manifest, when committed
    repairing: bool = False  # dead, fenced by a repair whose re-archive has not ended

    def young(self, now: datetime, timeout: timedelta) -> bool:
        """A pending blob whose writer may still be at work: written within `timeout`."""
        return self.written is None or now - self.written <= timeout


def pending_row(ref: BlobRef, plan: int) -> dict[str, Any]:
    partition, row = ref.manifest_keys
    return {"PartitionKey": partition, "RowKey": row, STATE: PENDING, PLAN: int64(plan)}


def fenced_row(ref: BlobRef, plan: int | None, *, repairing: bool = False) -> dict[str, Any]:
    partition, row = ref.manifest_keys
    state = REPAIRING if repairing else FENCED
    fenced: dict[str, Any] = {"PartitionKey": partition, "RowKey": row, STATE: state}
    if plan is not None:
        fenced[PLAN] = int64(plan)
    return fenced


def instance_of(ref: BlobRef, found: tuple[dict[str, Any], str, datetime] | None) -> Instance:
    """A manifest row as read (shared.adapters.index_tables.IndexTables.read)."""
    if found is None:
        return Instance(ref, Stage.DEAD)
    row, etag, written = found
    plan = as_int(row[PLAN]) if PLAN in row else None
    state = row.get(STATE)
    if state is None:
        return Instance(ref, Stage.COMMITTED, plan, written, etag, row)
    stage = Stage.PENDING if state == PENDING else Stage.DEAD
    return Instance(ref, stage, plan, written, etag, repairing=state == REPAIRING)


class Instances:
    """Blobs' manifest rows as one write (or sweep) knows them; fences and commits them.

    Threads share it (claim slots are settled side by side)."""

    def __init__(self, tables: IndexTables, clock: Callable[[], datetime]) -> None:
        self._tables = tables
        self._clock = clock
        self._known: dict[BlobRef, Instance] = {}
        self.own: set[BlobRef] = set()  # the blobs this write began
        self._lock = threading.Lock()

    def get(self, ref: BlobRef) -> Instance:
        """The row as this write knows it (read once; fences and commits made here update it)."""
        with self._lock:
            known = self._known.get(ref)
        return known if known is not None else self.read(ref)

    def read(self, ref: BlobRef) -> Instance:
        """The row as it is now (never from memory)."""
        partition, row = ref.manifest_keys
        found = instance_of(ref, self._tables.read(ref.month, partition, row))
        with self._lock:
            self._known[ref] = found
        return found

    # --- this write's own blobs ------------------------------------------------------------

    def begin(self, blobs: Sequence[tuple[BlobRef, int]]) -> None:
        """Insert this write's blobs' pending rows (one transaction a day), before any claim."""
        by_partition: dict[tuple[str, str], list[tuple[BlobRef, int]]] = {}
        for ref, plan in blobs:
            by_partition.setdefault((ref.month, ref.manifest_keys[0]), []).append((ref, plan))
        groups = list(by_partition.items())

        def insert(group: tuple[tuple[str, str], list[tuple[BlobRef, int]]]) -> None:
            (month, _), members = group
            for start in range(0, len(members), MAX_BATCH):
                chunk = members[start : start + MAX_BATCH]
                etags = self._tables.insert_rows(month, [pending_row(r, p) for r, p in chunk])
                with self._lock:
                    for (ref, plan), etag in zip(chunk, etags, strict=True):
                        self._known[ref] = Instance(ref, Stage.PENDING, plan, self._clock(), etag)
                        self.own.add(ref)

        self._tables.parallel(insert, groups)

    def commit(self, ref: BlobRef, manifest: dict[str, Any]) -> bool:
        """Replace this write's pending row with its manifest, If-Match: False when fenced."""
        with self._lock:
            known = self._known[ref]
        if known.stage is not Stage.PENDING or known.etag is None or ref not in self.own:
            return False  # abandoned here
        if self._tables.replace_if(ref.month, manifest, known.etag) is not None:
            return True
        # The answer may have been lost after the replace was applied (the SDK retried it):
        # a committed row of this blob is this write's, for no one else commits its id.
        return self.read(ref).stage is Stage.COMMITTED

    def commit_all(self, manifests: Sequence[tuple[BlobRef, dict[str, Any]]]) -> list[bool]:
        """`commit` each, the blobs of a day in one transaction (one request, not one a
        blob); when that is refused (a blob of it fenced), each blob alone, so that the
        others still commit."""
        done: dict[BlobRef, bool] = {}
        days: dict[tuple[str, str], list[tuple[BlobRef, dict[str, Any], str]]] = {}
        for ref, manifest in manifests:
            with self._lock:
                known = self._known[ref]
            if known.stage is Stage.PENDING and known.etag is not None and ref in self.own:
                days.setdefault((ref.month, ref.manifest_keys[0]), []).append(
                    (ref, manifest, known.etag)
                )
            else:
                done[ref] = False  # abandoned here
        for (month, _), members in days.items():
            for start in range(0, len(members), MAX_BATCH):
                chunk = members[start : start + MAX_BATCH]
                rows = [(manifest, etag) for _, manifest, etag in chunk]
                if len(chunk) > 1 and self._tables.replace_all_if(month, rows) is not None:
                    done.update((ref, True) for ref, _, _ in chunk)
                else:
                    done.update((ref, self.commit(ref, manifest)) for ref, manifest, _ in chunk)
        return [done[ref] for ref, _ in manifests]

    def abandon(self, refs: Sequence[BlobRef]) -> None:
        """Fence this write's own pending rows: its claims stop holding anything at once."""
        self._tables.parallel(lambda ref: self.fence(self.get(ref)), list(refs))

    # --- anyone's blobs ----------------------------------------------------------------------

    def fence(self, instance: Instance) -> Instance:
        """Make a pending blob uncommittable, If-Match the ETag read: the row as it is after
        (dead when fenced here or by another; committed or pending when it changed first)."""
        ref = instance.ref
        if instance.stage is not Stage.PENDING or instance.etag is None:
            return instance
        fenced = self._tables.replace_if(ref.month, fenced_row(ref, instance.plan), instance.etag)
        if fenced is None:
            return self.read(ref)
        dead = Instance(ref, Stage.DEAD, instance.plan, self._clock(), fenced)
        with self._lock:
            self._known[ref] = dead
        return dead
