"""Claiming events for archive blobs: one live claim per event, across writers and paths.

A slot's claim rows are a log with contiguous sequence numbers (shared.core.archive_keys).
A writer decides which of its events are free from the claims it knows, and appends its own
at the next number in one transaction: the insert fails if any other writer appended since,
so a successful append proves the decision was made on the whole log. It then reads what is
new and decides again. In the common case (one writer per slot at a time) a write costs one
append a slot and no read (shared.services.claim_log keeps what was read).

An event is held by a committed blob above all, else by the first live claim: one whose
writer may still be at work (younger than CLAIM_TIMEOUT), judged alike by every writer, the
claim's own included (a retry later than that claims again, behind any taker). When another
live writer holds some of this write's events, the write releases the claims it appended (a
release row: the log is only ever appended to), so two writers holding parts of each other's
events never wait on each other, and raises ClaimedElsewhere; its caller retries later or
dead-letters.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableTransactionError

from shared.adapters.index_tables import IndexTables, int64
from shared.core.archive_keys import (
    CLASS_CODES,
    BlobRef,
    claim_row,
    event_id,
    id_chunks,
    pack_ids,
    slot_partition,
)
from shared.core.records import NormalizedRecord
from shared.services.claim_log import RELEASED, Claim, ClaimLogs, pack_numbers

# host.json's functionTimeout is 10 minutes: a claim older than this has no live writer.
CLAIM_TIMEOUT = timedelta(minutes=15)
CLAIM_ATTEMPTS = 20  # appends lost to other writers of the same slot before giving up
APPEND_ROWS = 50  # claim rows of at most 60 KB each in one transaction: under its 4 MiB


class ClaimedElsewhere(Exception):
    """Some events are being archived right now by another writer: try again later."""


class Planned(Protocol):
    """A blob a write plans (shared.services.archive_write.PlannedBlob)."""

    ref: BlobRef
    records: list[NormalizedRecord]
    owned: list[NormalizedRecord]
    resumed: bool


Slot = tuple[str, date, str]  # month, day, claim partition
Member = tuple[Planned, NormalizedRecord]


@dataclass(slots=True)
class SlotOutcome:
    owned: list[Member] = field(default_factory=list)
    existing: list[NormalizedRecord] = field(default_factory=list)
    held: int = 0
    appended: list[str] = field(default_factory=list)  # RowKeys this write added


class Committed:
    """Which blobs have their manifest, read once per write (threads share it)."""

    def __init__(self, tables: IndexTables) -> None:
        self._tables = tables
        self._known: dict[BlobRef, bool] = {}
        self._lock = threading.Lock()

    def __call__(self, ref: BlobRef) -> bool:
        with self._lock:
            known = self._known.get(ref)
        if known is None:
            partition, row = ref.manifest_keys
            known = self._tables.get(ref.month, partition, row) is not None
            with self._lock:
                self._known[ref] = known
        return known


class Claimer:
    def __init__(
        self, tables: IndexTables, clock: Callable[[], datetime], timeout: timedelta
    ) -> None:
        self._tables = tables
        self._clock = clock
        self._timeout = timeout
        self._logs = ClaimLogs(tables)

    def claim(self, planned: Sequence[Planned]) -> list[NormalizedRecord]:
        """Give each planned blob the events it owns; the events archived already.

        Raises ClaimedElsewhere (having taken back its own claims) when a live writer holds
        some of them."""
        slots: dict[Slot, list[Member]] = defaultdict(list)
        for blob in planned:
            for record in blob.records:
                partition = slot_partition(record["TimeGenerated"])
                slots[(blob.ref.month, blob.ref.day, partition)].append((blob, record))
        committed = Committed(self._tables)
        items = list(slots.items())
        outcomes = self._tables.parallel(
            lambda item: self._claim_slot(item[0], item[1], committed), items
        )
        if sum(outcome.held for outcome in outcomes):
            appended = [(slot, o.appended) for (slot, _), o in zip(items, outcomes, strict=True)]
            self._take_back(appended)
            held = sum(outcome.held for outcome in outcomes)
            raise ClaimedElsewhere(f"{held} events are being archived by another writer")
        existing: list[NormalizedRecord] = []
        for outcome in outcomes:
            for blob, record in outcome.owned:
                blob.owned.append(record)
            existing.extend(outcome.existing)
        return existing

    def _claim_slot(self, slot: Slot, members: list[Member], committed: Committed) -> SlotOutcome:
        month, day, partition = slot
        outcome = SlotOutcome()
        pending = members
        log, fresh = self._logs.known(month, partition), False
        for _ in range(CLAIM_ATTEMPTS):
            if log is None:
                log, fresh = self._logs.read(month, day, partition), True
            claims, last = log
            named = {claim.ref for claim in claims}
            for blob, _ in pending:
                blob.resumed = blob.resumed or blob.ref in named  # an earlier attempt's blob
            wanted = {event_id(record["EventKey"]) for _, record in pending}
            sorted_out = self._sort(pending, self._owners(claims, wanted, committed), committed)
            free, mine, existing, held = sorted_out
            if held and not fresh:
                log = None  # held as far as this process knew: make sure, from the log itself
                continue
            outcome.owned += mine
            outcome.existing += existing
            outcome.held += held
            if not free or held:
                return outcome
            taken = self._append(slot, last + 1, free, outcome)
            outcome.owned.extend((blob, r) for blob in taken for r in free[blob])
            # Only what is still free goes round again: what was sorted out above is settled.
            pending = [
                (blob, r) for blob, records in free.items() if blob not in taken for r in records
            ]
            if not taken:
                log = None  # another writer appended since: read what is new
                continue
            if not pending:
                return outcome
            log, fresh = self._logs.known(month, partition), False
        raise RuntimeError(f"claims of slot {partition} in {month} kept changing under us")

    @staticmethod
    def _sort(
        pending: list[Member], owner: dict[bytes, Claim], committed: Committed
    ) -> tuple[dict[Planned, list[NormalizedRecord]], list[Member], list[NormalizedRecord], int]:
        """(free events by blob, events already this blob's, events archived, events held)."""
        free: dict[Planned, list[NormalizedRecord]] = defaultdict(list)
        mine: list[Member] = []
        existing: list[NormalizedRecord] = []
        held = 0
        for blob, record in pending:
            holder = owner.get(event_id(record["EventKey"]))
            if holder is None:
                free[blob].append(record)
            elif committed(holder.ref):
                existing.append(record)
            elif holder.ref == blob.ref:
                mine.append((blob, record))  # a retry finishing its own claim
            else:
                held += 1
        return free, mine, existing, held

    def _owners(
        self, claims: list[Claim], wanted: set[bytes], committed: Committed
    ) -> dict[bytes, Claim]:
        """Who holds each wanted event: a committed blob above all, else the first live
        claim. Only claims holding a wanted event are judged (a manifest read each, once)."""
        owner: dict[bytes, Claim] = {}
        for claim in claims:
            held = wanted.intersection(claim.ids)
            if not held:
                continue
            if committed(claim.ref):
                for claimed in held:
                    if claimed not in owner or not committed(owner[claimed].ref):
                        owner[claimed] = claim
            elif self._young(claim):  # judged alike by every writer, its own included
                for claimed in held:
                    owner.setdefault(claimed, claim)
        return owner

    def _young(self, claim: Claim) -> bool:
        return claim.written is None or self._clock() - claim.written <= self._timeout

    def _append(
        self,
        slot: Slot,
        sequence: int,
        free: dict[Planned, list[NormalizedRecord]],
        outcome: SlotOutcome,
    ) -> set[Planned]:
        """Append claim rows for as many blobs as one transaction takes; the blobs claimed
        (none when another writer appended first)."""
        month, _, partition = slot
        entities: list[dict[str, Any]] = []
        claims: list[Claim] = []
        taken: set[Planned] = set()
        for blob, records in free.items():
            chunks = list(id_chunks([event_id(record["EventKey"]) for record in records]))
            if entities and len(entities) + len(chunks) > APPEND_ROWS:
                break
            for chunk in chunks:
                number = sequence + len(entities)
                entities.append(
                    {
                        "PartitionKey": partition,
                        "RowKey": claim_row(number),
                        "B": int64(blob.ref.blob_id),
                        "C": CLASS_CODES[blob.ref.archive_class],
                        "K": pack_ids(chunk),
                    }
                )
                claims.append(Claim(blob.ref, number, self._clock(), chunk))
            taken.add(blob)
        try:
            self._tables.append(month, entities)
        except (TableTransactionError, ResourceExistsError) as error:
            if getattr(error, "error_code", None) != "EntityAlreadyExists":
                raise
            return set()
        self._logs.appended(month, partition, claims)
        outcome.appended.extend(entity["RowKey"] for entity in entities)
        return taken

    def _take_back(self, appended: list[tuple[Slot, list[str]]]) -> None:
        """Release the claims this write appended: a release row naming them, appended like
        any claim (the log is never rewritten, so what others know of it stays true)."""
        for slot, rows in appended:
            if rows:
                self._release(slot, [int(row[1:]) for row in rows])

    def _release(self, slot: Slot, numbers: list[int]) -> None:
        month, day, partition = slot
        log = self._logs.known(month, partition)
        for _ in range(CLAIM_ATTEMPTS):
            if log is None:
                log = self._logs.read(month, day, partition)
            sequence = log[1] + 1
            row: dict[str, Any] = {"PartitionKey": partition, "RowKey": claim_row(sequence)}
            row[RELEASED] = pack_numbers(numbers)
            try:
                self._tables.append(month, [row])
            except (TableTransactionError, ResourceExistsError) as error:
                if getattr(error, "error_code", None) != "EntityAlreadyExists":
                    raise
                log = None
                continue
            self._logs.released(month, partition, sequence, numbers)
            return
        raise RuntimeError(f"claims of slot {partition} in {month} kept changing under us")
