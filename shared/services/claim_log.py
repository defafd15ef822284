"""A claim slot's log as this process knows it, so a write reads only what is new.

A slot's rows are append-only and numbered (`c{sequence:07d}`, shared.core.archive_keys): a
claim names a blob and the events it claims; a release (property `R`, written only by
versions before fencing) names earlier claims that their writer took back. Nothing is ever
deleted from a live log (retention drops the month's table, or a whole class's day), so a
number is never used twice and, after one full read, a writer needs only the rows past the
last number it saw. An entry is read whole again after MAX_AGE_SECONDS (a month table
dropped and made again starts its numbers anew) and the least recently used go past
CAPACITY slots.
"""

from __future__ import annotations

import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from shared.adapters.index_tables import IndexTables, as_int
from shared.core.archive_keys import CLAIM, CODE_CLASSES, BlobRef, claim_row, unpack_ids

CAPACITY = 256
MAX_AGE_SECONDS = 600.0
RELEASED = "R"
_NUMBER = struct.Struct(">I")
_NEWER_ROWS = "PartitionKey eq @pk and RowKey gt @after and RowKey lt @high"
_PAST_CLAIMS = "d"  # "c…" RowKeys are the log; "d" sorts after every one of them


@dataclass(frozen=True, slots=True)
class Claim:
    """One claim row as read: the blob it names, when it was written, the events it holds."""

    ref: BlobRef
    sequence: int
    written: datetime | None
    ids: list[bytes]


def sequence_of(row: Mapping[str, Any]) -> int:
    return int(str(row["RowKey"])[1:])


def is_release(row: Mapping[str, Any]) -> bool:
    return RELEASED in row


def released_numbers(row: Mapping[str, Any]) -> list[int]:
    return [number for (number,) in _NUMBER.iter_unpack(bytes(row[RELEASED]))]


def parse_claim(day: date, row: Mapping[str, Any]) -> Claim:
    ref = BlobRef(day, CODE_CLASSES[str(row["C"])], as_int(row["B"]))
    written = getattr(row, "metadata", {}).get("timestamp")
    return Claim(ref, sequence_of(row), written, unpack_ids(bytes(row["K"])))


def live_claims(day: date, rows: Iterable[Mapping[str, Any]]) -> list[Claim]:
    """One slot's claims, in order, less those a release row took back."""
    claims: list[Claim] = []
    released: set[int] = set()
    for row in rows:
        if is_release(row):
            released.update(released_numbers(row))
        else:
            claims.append(parse_claim(day, row))
    return sorted(
        (claim for claim in claims if claim.sequence not in released),
        key=lambda claim: claim.sequence,
    )


@dataclass(slots=True)
class _Slot:
    read_at: float
    claims: list[Claim] = field(default_factory=list)
    released: set[int] = field(default_factory=set)
    last: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def live(self) -> list[Claim]:
        return [claim for claim in self.claims if claim.sequence not in self.released]


class ClaimLogs:
    def __init__(
        self, tables: IndexTables, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._tables = tables
        self._monotonic = monotonic
        self._slots: OrderedDict[tuple[str, str], _Slot] = OrderedDict()
        self._lock = threading.Lock()

    def known(self, month: str, partition: str) -> tuple[list[Claim], int] | None:
        """(the slot's live claims, its last number) as known here; None: not read lately."""
        slot = self._cached(month, partition)
        if slot is None:
            return None
        with slot.lock:
            return slot.live(), slot.last

    def read(self, month: str, day: date, partition: str) -> tuple[list[Claim], int]:
        """(every live claim of the slot, in order, its last number) as of now."""
        slot = self._cached(month, partition) or self._fresh(month, partition)
        with slot.lock:
            after = claim_row(slot.last) if slot.last else CLAIM
            rows = self._tables.query(
                month, _NEWER_ROWS, {"pk": partition, "after": after, "high": _PAST_CLAIMS}
            )
            for row in sorted(rows, key=sequence_of):
                if is_release(row):
                    slot.released.update(released_numbers(row))
                else:
                    slot.claims.append(parse_claim(day, row))
                slot.last = max(slot.last, sequence_of(row))
            return slot.live(), slot.last

    def appended(self, month: str, partition: str, claims: list[Claim]) -> None:
        """Claims this process appended right after the last number it knew (the append's
        success proved nobody came between)."""
        slot = self._cached(month, partition)
        if slot is not None:
            with slot.lock:
                if claims[0].sequence == slot.last + 1:
                    slot.claims.extend(claims)
                    slot.last = claims[-1].sequence
                    return
        self.forget(month, partition)  # read by another thread meanwhile: read again

    def forget(self, month: str, partition: str) -> None:
        with self._lock:
            self._slots.pop((month, partition), None)

    def _cached(self, month: str, partition: str) -> _Slot | None:
        key = (month, partition)
        with self._lock:
            slot = self._slots.get(key)
            if slot is None or self._monotonic() - slot.read_at > MAX_AGE_SECONDS:
                return None
            self._slots.move_to_end(key)
            return slot

    def _fresh(self, month: str, partition: str) -> _Slot:
        slot = _Slot(read_at=self._monotonic())
        with self._lock:
            self._slots[(month, partition)] = slot
            while len(self._slots) > CAPACITY:
                self._slots.popitem(last=False)
        return slot
