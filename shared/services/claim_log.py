"""A claim slot's claims as this process knows them, read incrementally; one's own appended.

A slot (an hour of TimeGenerated, shared.core.archive_keys) holds lanes: each writer process
appends its claims to a lane of its own (`c{lane}{sequence:07d}`), numbered from 1 without
gaps, in one transaction with the lane's registry row (`l{lane}`, `N` its last number: an
insert for a lane new to the slot, else a replace If-Match the ETag of the writer's last
append). So an append competes with nobody (a lane another writer happens to use, or one
whose registry row changed, fails the whole transaction instead), and rows are never
renumbered: after one whole read, a process needs only the registry (one range query) and
then the rows past the last number it knows of each lane the registry shows further on (a
range query each, side by side). A lane's rows are visible as a prefix (1..n), so a read never
leaves a hole. Rows of versions before lanes (`c{sequence:07d}`, lane "") and their release
rows (`R`: earlier claims their writer took back) are read by the whole read; nothing appends
to them any more.

What was read is kept per slot: the claims (blob, lane, number, when written) and an index
of their event ids (16 bytes an event in 256 byte strings by the id's first byte, no object
an event), with how far each lane is known. A slot is read whole again after MAX_AGE_SECONDS,
when a lane's registry went back (its rows were deleted), or when a whole read failed; the
least recently used go past CAPACITY slots.
"""

from __future__ import annotations

import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from azure.core import MatchConditions
from azure.data.tables import UpdateMode

from shared.adapters.index_tables import IndexTables, as_int, int64
from shared.core.archive_keys import (
    CLAIM,
    CODE_CLASSES,
    EVENT_ID_BYTES,
    LANE,
    LANE_CHARS,
    BlobRef,
    claim_key,
    claim_row,
    unpack_ids,
)

CAPACITY = 256
MAX_AGE_SECONDS = 600.0
RELEASED = "R"
LAST = "N"  # a lane registry row's last sequence number
_NUMBER = struct.Struct(">I")
_ROWS = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"
_PAST_CLAIMS = chr(ord(CLAIM) + 1)  # "c…" RowKeys are claims; "d" sorts after every one
_PAST_LANES = chr(ord(LANE) + 1)
_PAST_SEQUENCES = ":"  # sorts right after "9": past every number of a lane
_ENTRY = EVENT_ID_BYTES + _NUMBER.size  # an index entry: event id, claim number


@dataclass(frozen=True, slots=True)
class Claim:
    """One claim row: the blob it names, its lane and number, when it was written, and the
    12-byte ids of the events it claims, packed (b"" once kept in a slot's index)."""

    ref: BlobRef
    lane: str
    sequence: int
    written: datetime | None = None
    ids: bytes = b""

    def events(self) -> list[bytes]:
        return unpack_ids(self.ids)


def is_release(row: Mapping[str, Any]) -> bool:
    return RELEASED in row


def released_numbers(row: Mapping[str, Any]) -> list[int]:
    """The numbers (lane "") a release row of the layout before lanes took back."""
    return [number for (number,) in _NUMBER.iter_unpack(bytes(row[RELEASED]))]


def parse_claim(day: date, row: Mapping[str, Any]) -> Claim:
    lane, sequence = claim_key(str(row["RowKey"]))
    ref = BlobRef(day, CODE_CLASSES[str(row["C"])], as_int(row["B"]))
    written = getattr(row, "metadata", {}).get("timestamp")
    return Claim(ref, lane, sequence, written, bytes(row["K"]))


def claim_entity(partition: str, claim: Claim) -> dict[str, Any]:
    return {
        "PartitionKey": partition,
        "RowKey": claim_row(claim.sequence, claim.lane),
        "B": int64(claim.ref.blob_id),
        "C": claim.ref.code,
        "K": claim.ids,
    }


class ClaimStats:
    """Claim appends made by this process, and those lost to another writer."""

    def __init__(self) -> None:
        self.appends = 0
        self.lost_appends = 0
        self._lock = threading.Lock()

    def count(self, *, lost: bool) -> None:
        with self._lock:
            self.appends += 1
            self.lost_appends += lost


CLAIM_STATS = ClaimStats()


class ClaimIndex:
    """Event id -> the numbers of the claims listing it, packed in 256 byte strings."""

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        self._buckets: list[bytearray | None] = [None] * 256

    def add(self, ids: bytes, number: int) -> None:
        tail = _NUMBER.pack(number)
        buckets = self._buckets
        for start in range(0, len(ids), EVENT_ID_BYTES):
            event = ids[start : start + EVENT_ID_BYTES]
            bucket = buckets[event[0]]
            if bucket is None:
                bucket = buckets[event[0]] = bytearray()
            bucket += event
            bucket += tail

    def numbers(self, event: bytes) -> list[int]:
        bucket = self._buckets[event[0]]
        found: list[int] = []
        at = -1 if bucket is None else bucket.find(event)
        while bucket is not None and at >= 0:
            if at % _ENTRY == 0:  # not a match straddling two entries
                found.append(_NUMBER.unpack_from(bucket, at + EVENT_ID_BYTES)[0])
            at = bucket.find(event, at + 1)
        return found


class SlotLog:
    """One slot's claims as read here (complete once read whole), indexed by event."""

    def __init__(self, read_at: float) -> None:
        self.read_at = read_at
        self.complete = False
        self.claims: list[Claim] = []  # without their ids: those are in the index
        self.lanes: dict[str, int] = {}  # the last number known of each lane
        self.released: set[int] = set()  # lane "" numbers a release row took back
        self.lock = threading.Lock()
        self._index = ClaimIndex()

    def add(self, claim: Claim) -> None:
        """A claim read or appended (the caller holds the lock; a lane's in order)."""
        known = self.lanes.get(claim.lane, 0)
        if claim.lane and claim.sequence <= known:
            return  # read already
        self._index.add(claim.ids, len(self.claims))
        self.claims.append(Claim(claim.ref, claim.lane, claim.sequence, claim.written))
        self.lanes[claim.lane] = max(known, claim.sequence)

    def holders(self, events: Iterable[bytes]) -> dict[bytes, list[Claim]]:
        """The live claims listing each of the events (those no claim lists left out)."""
        found: dict[bytes, list[Claim]] = {}
        with self.lock:
            for event in events:
                claims = [self.claims[number] for number in self._index.numbers(event)]
                live = [c for c in claims if c.lane or c.sequence not in self.released]
                if live:
                    found[event] = live
        return found


class ClaimLogs:
    def __init__(
        self, tables: IndexTables, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._tables = tables
        self._monotonic = monotonic
        self._slots: OrderedDict[tuple[str, str], SlotLog] = OrderedDict()
        self._lock = threading.Lock()

    def known(self, month: str, partition: str) -> SlotLog | None:
        """The slot as known here, without reading; None: not read (whole) lately."""
        slot = self._cached(month, partition)
        return slot if slot is not None and slot.complete else None

    def read(self, month: str, day: date, partition: str) -> SlotLog:
        """The slot with every claim appended before this call: what is new since it was
        last read here, or all of it."""
        slot = self._cached(month, partition)
        if slot is not None:
            with slot.lock:
                if slot.complete and self._read_new(slot, month, day, partition):
                    return slot
        slot = self._fresh(month, partition)  # its lock held: others wait for the read
        try:
            self._read_all(slot, month, day, partition)
        finally:
            slot.lock.release()
        return slot

    def appended(self, month: str, partition: str, claims: Sequence[Claim]) -> None:
        """Claims this process appended to its lane, known here without reading them."""
        slot = self._cached(month, partition)
        if slot is None:
            return
        with slot.lock:
            lane = claims[0].lane
            if slot.complete and claims[0].sequence <= slot.lanes.get(lane, 0) + 1:
                for claim in claims:
                    slot.add(claim)
            # Else another thread's append is not known here yet: the registry tells.

    def append(self, month: str, entities: Sequence[dict[str, Any]], etag: str | None) -> str:
        """Insert claim rows of one lane and write its registry row (the last entity) in one
        transaction: inserted when `etag` is None, else replaced If-Match `etag`; the
        registry row's new ETag. Raises the service's error when the lane is not this
        writer's as it thought (EntityAlreadyExists, UpdateConditionNotSatisfied,
        ResourceNotFound): then nothing was written."""
        *claims, registry = entities
        operations: list[Any] = [("create", row) for row in claims]
        if etag is None:
            operations.append(("create", registry))
        else:
            condition = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
            operations.append(("update", registry, {"mode": UpdateMode.REPLACE, **condition}))
        answers = self._tables.ensure(month).submit_transaction(operations)
        return str(answers[-1]["etag"])

    def forget(self, month: str, partition: str) -> None:
        with self._lock:
            self._slots.pop((month, partition), None)

    # --- reading ------------------------------------------------------------------------

    def _read_all(self, slot: SlotLog, month: str, day: date, partition: str) -> None:
        bounds = {"pk": partition, "low": CLAIM, "high": _PAST_CLAIMS}
        rows = sorted(self._tables.query(month, _ROWS, bounds), key=lambda r: str(r["RowKey"]))
        for row in rows:
            if is_release(row):
                slot.released.update(released_numbers(row))
            else:
                slot.add(parse_claim(day, row))
        slot.complete = True

    def _read_new(self, slot: SlotLog, month: str, day: date, partition: str) -> bool:
        """The rows past what is known of each lane the registry shows further on; False
        when a lane went back (its rows were deleted: read the slot whole again)."""
        bounds = {"pk": partition, "low": LANE, "high": _PAST_LANES}
        registry: dict[str, int] = {}
        for row in self._tables.query(month, _ROWS, bounds, select=["RowKey", LAST]):
            lane = str(row["RowKey"])[1:]
            if len(lane) == LANE_CHARS and LAST in row:
                registry[lane] = as_int(row[LAST])
        if any(last < slot.lanes.get(lane, 0) for lane, last in registry.items()):
            return False
        behind = sorted(
            (lane, slot.lanes.get(lane, 0))
            for lane, last in registry.items()
            if last > slot.lanes.get(lane, 0)
        )
        found = self._tables.parallel(lambda lane: self._lane_rows(month, partition, *lane), behind)
        for (lane, _), rows in zip(behind, found, strict=True):
            for row in rows:
                slot.add(parse_claim(day, row))
            # Rows up to the registry's number were there with it: any not read are deleted.
            slot.lanes[lane] = max(slot.lanes.get(lane, 0), registry[lane])
        return True

    def _lane_rows(self, month: str, partition: str, lane: str, after: int) -> list[Any]:
        low, high = claim_row(after + 1, lane), f"{CLAIM}{lane}{_PAST_SEQUENCES}"
        bounds = {"pk": partition, "low": low, "high": high}
        return sorted(self._tables.query(month, _ROWS, bounds), key=lambda r: str(r["RowKey"]))

    def _cached(self, month: str, partition: str) -> SlotLog | None:
        key = (month, partition)
        with self._lock:
            slot = self._slots.get(key)
            if slot is None or self._monotonic() - slot.read_at > MAX_AGE_SECONDS:
                return None
            self._slots.move_to_end(key)
            return slot

    def _fresh(self, month: str, partition: str) -> SlotLog:
        """A new empty entry for the slot, in place of any other, its lock held."""
        slot = SlotLog(read_at=self._monotonic())
        slot.lock.acquire()
        with self._lock:
            self._slots[(month, partition)] = slot
            while len(self._slots) > CAPACITY:
                self._slots.popitem(last=False)
        return slot
