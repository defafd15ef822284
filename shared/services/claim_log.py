"""What this process has read of each claim slot, so a write reads only what is new.

A slot's claim rows are an append-only log (sequence-numbered RowKeys, shared.core.
archive_keys), so after one full read a writer needs only the rows past the last sequence it
saw: one small range read a write, however many events the slot already holds. An entry is
read whole again after MAX_AGE (a month table that retention dropped and a backfill brought
back starts its sequence anew) and the least recently used go past CAPACITY slots.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

from shared.adapters.index_tables import IndexTables, as_int
from shared.core.archive_keys import CLAIM, CODE_CLASSES, BlobRef, claim_row, unpack_ids

CAPACITY = 256
MAX_AGE_SECONDS = 600.0
_NEWER_CLAIMS = "PartitionKey eq @pk and RowKey gt @after and RowKey lt @high"
_PAST_CLAIMS = "d"  # "c…" RowKeys are claims; "d" sorts after every one of them


@dataclass(frozen=True, slots=True)
class Claim:
    """One claim row as read: the blob it names, when it was written, the events it holds."""

    ref: BlobRef
    sequence: int
    written: datetime | None
    ids: list[bytes]


@dataclass(slots=True)
class _Slot:
    read_at: float
    claims: list[Claim] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def last(self) -> int:
        return self.claims[-1].sequence if self.claims else 0


def parse_claim(day: date, row: dict[str, object]) -> Claim:
    ref = BlobRef(day, CODE_CLASSES[str(row["C"])], as_int(row["B"]))
    written = getattr(row, "metadata", {}).get("timestamp")
    sequence = int(str(row["RowKey"])[1:])
    return Claim(ref, sequence, written, unpack_ids(bytes(row["K"])))  # type: ignore[call-overload]


class ClaimLogs:
    def __init__(
        self, tables: IndexTables, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._tables = tables
        self._monotonic = monotonic
        self._slots: OrderedDict[tuple[str, str], _Slot] = OrderedDict()
        self._lock = threading.Lock()

    def known(self, month: str, partition: str) -> list[Claim] | None:
        """The slot's claims as last read (and appended here); None when not read lately."""
        with self._lock:
            slot = self._slots.get((month, partition))
            if slot is None or self._monotonic() - slot.read_at > MAX_AGE_SECONDS:
                return None
        with slot.lock:
            return list(slot.claims)

    def appended(self, month: str, partition: str, claims: list[Claim]) -> None:
        """Claims this process appended right after the ones it knew (the append proved it)."""
        with self._lock:
            slot = self._slots.get((month, partition))
        if slot is None:
            return
        with slot.lock:
            if not slot.claims or claims[0].sequence == slot.last + 1:
                slot.claims.extend(claims)
            else:  # read by another thread meanwhile: let the next write read again
                with self._lock:
                    self._slots.pop((month, partition), None)

    def forget(self, month: str, partition: str) -> None:
        with self._lock:
            self._slots.pop((month, partition), None)

    def read(self, month: str, day: date, partition: str) -> list[Claim]:
        """Every claim of the slot, in sequence order, as of now."""
        slot = self._slot(month, partition)
        with slot.lock:
            rows = self._tables.query(
                month,
                _NEWER_CLAIMS,
                {
                    "pk": partition,
                    "after": claim_row(slot.last) if slot.claims else CLAIM,
                    "high": _PAST_CLAIMS,
                },
            )
            new = sorted((parse_claim(day, row) for row in rows), key=lambda claim: claim.sequence)
            slot.claims.extend(new)
            return list(slot.claims)

    def _slot(self, month: str, partition: str) -> _Slot:
        key = (month, partition)
        now = self._monotonic()
        with self._lock:
            slot = self._slots.get(key)
            if slot is None or now - slot.read_at > MAX_AGE_SECONDS:
                slot = _Slot(read_at=now)
                self._slots[key] = slot
            self._slots.move_to_end(key)
            while len(self._slots) > CAPACITY:
                self._slots.popitem(last=False)
            return slot
