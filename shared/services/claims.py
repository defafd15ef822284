"""Claiming events for archive blobs: one live claim per event, across writers and paths.

A slot's claim rows are a log with contiguous sequence numbers (shared.core.archive_keys).
A writer decides which of its events are free from the claims it knows, and appends its own
at the next number in one transaction: the insert fails if any other writer appended since,
so a successful append proves the decision was made on the whole log. It then reads what is
new and decides again. In the common case (one writer per slot at a time) a write costs one
append a slot and no read (shared.services.claim_log keeps what was read).

A claim holds its events only while its blob's manifest row (shared.services.instances) is
pending or committed: an event is held by a committed blob above all, else by the first claim
whose blob is pending. A pending blob is taken over (fenced, If-Match: its writer can then
never commit it) when its writer looks gone (the row is older than CLAIM_TIMEOUT) or when it
was planned for exactly the same events (a retry of the same input after a crash: no need to
wait). When a live writer holds some of this write's events, the write fences its own blobs,
so two writers holding parts of each other's events never wait on each other, and raises
ClaimedElsewhere (which events, held by which blobs, until when); its caller retries later or
dead-letters.
"""

from __future__ import annotations

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
from shared.core.written import WriteResult
from shared.services.claim_log import Claim, ClaimLogs
from shared.services.instances import Instance, Instances, Stage

# host.json's functionTimeout is 10 minutes: a claim older than this has no live writer.
CLAIM_TIMEOUT = timedelta(minutes=15)
CLAIM_ATTEMPTS = 20  # appends lost to other writers of the same slot before giving up
APPEND_ROWS = 50  # claim rows of at most 60 KB each in one transaction: under its 4 MiB


class ClaimedElsewhere(Exception):
    """Some events are being archived right now by another writer: try again later."""

    def __init__(
        self,
        message: str,
        *,
        event_keys: Sequence[str] = (),
        holders: Sequence[str] = (),
        retry_after: datetime | None = None,
        written: WriteResult | None = None,
    ) -> None:
        super().__init__(message)
        self.event_keys = list(event_keys)
        self.holders = list(holders)
        self.retry_after = retry_after
        self.written = written  # what the write did commit before it was stopped, if anything


def held_elsewhere(
    held: Sequence[tuple[NormalizedRecord, Instance]], timeout: timedelta
) -> ClaimedElsewhere:
    """The error for events live writers hold: which, by which blobs, and until when."""
    keys = sorted({record["EventKey"] for record, _ in held})
    holders = sorted({instance.ref.name for _, instance in held})
    ends = [instance.written + timeout for _, instance in held if instance.written is not None]
    until = max(ends, default=None)
    when = (
        f"; it may take them over after {until:%Y-%m-%dT%H:%M:%SZ} at the latest, retry then"
        if until is not None
        else "; retry in a few minutes"
    )
    message = (
        f"{len(keys)} events are being archived right now by another writer (blob "
        f"{holders[0]}{f' and {len(holders) - 1} more' if len(holders) > 1 else ''}; e.g. "
        f"EventKey {keys[0]}): nothing was written{when}"
    )
    return ClaimedElsewhere(message, event_keys=keys, holders=holders, retry_after=until)


class Planned(Protocol):
    """A blob a write plans (shared.services.archive_write.PlannedBlob)."""

    ref: BlobRef
    plan: int
    records: list[NormalizedRecord]
    owned: list[NormalizedRecord]


Slot = tuple[str, date, str]  # month, day, claim partition
Member = tuple[Planned, NormalizedRecord]


@dataclass(slots=True)
class SlotOutcome:
    owned: list[Member] = field(default_factory=list)
    existing: list[NormalizedRecord] = field(default_factory=list)
    held: list[tuple[NormalizedRecord, Instance]] = field(default_factory=list)


class Claimer:
    def __init__(
        self, tables: IndexTables, clock: Callable[[], datetime], timeout: timedelta
    ) -> None:
        self._tables = tables
        self._clock = clock
        self._timeout = timeout
        self._logs = ClaimLogs(tables)

    def claim(self, planned: Sequence[Planned], instances: Instances) -> list[NormalizedRecord]:
        """Give each planned blob the events it owns; the events archived already.

        The blobs' pending rows exist (Instances.begin). Raises ClaimedElsewhere (having
        fenced its own blobs) when a live writer holds some of the events."""
        slots: dict[Slot, list[Member]] = defaultdict(list)
        for blob in planned:
            for record in blob.records:
                partition = slot_partition(record["TimeGenerated"])
                slots[(blob.ref.month, blob.ref.day, partition)].append((blob, record))
        plans = {blob.plan for blob in planned}
        items = list(slots.items())
        outcomes = self._tables.parallel(
            lambda item: self._claim_slot(item[0], item[1], instances, plans), items
        )
        held = [pair for outcome in outcomes for pair in outcome.held]
        if held:
            instances.abandon([blob.ref for blob in planned])
            raise held_elsewhere(held, self._timeout)
        existing: list[NormalizedRecord] = []
        for outcome in outcomes:
            for blob, record in outcome.owned:
                blob.owned.append(record)
            existing.extend(outcome.existing)
        return existing

    def _claim_slot(
        self, slot: Slot, members: list[Member], instances: Instances, plans: set[int]
    ) -> SlotOutcome:
        month, day, partition = slot
        outcome = SlotOutcome()
        pending = members
        log, fresh = self._logs.known(month, partition), False
        for _ in range(CLAIM_ATTEMPTS):
            if log is None:
                log, fresh = self._logs.read(month, day, partition), True
            claims, last = log
            wanted = {event_id(record["EventKey"]) for _, record in pending}
            owner = self._owners(claims, wanted, instances, plans)
            free, mine, existing, held = self._sort(pending, owner)
            if held and not fresh:
                # Held as far as this write knew: make sure, from the log and the rows now.
                for ref in {instance.ref for _, instance in held}:
                    instances.read(ref)
                log = None
                continue
            outcome.owned += mine
            outcome.existing += existing
            outcome.held += held
            if not free or held:
                return outcome
            taken = self._append(slot, last + 1, free)
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
        pending: list[Member], owner: dict[bytes, Instance]
    ) -> tuple[
        dict[Planned, list[NormalizedRecord]],
        list[Member],
        list[NormalizedRecord],
        list[tuple[NormalizedRecord, Instance]],
    ]:
        """(free events by blob, events already this blob's, events archived, events held)."""
        free: dict[Planned, list[NormalizedRecord]] = defaultdict(list)
        mine: list[Member] = []
        existing: list[NormalizedRecord] = []
        held: list[tuple[NormalizedRecord, Instance]] = []
        for blob, record in pending:
            holder = owner.get(event_id(record["EventKey"]))
            if holder is None:
                free[blob].append(record)
            elif holder.stage is Stage.COMMITTED:
                existing.append(record)
            elif holder.ref == blob.ref:
                mine.append((blob, record))  # claimed by this write, in an earlier round
            else:
                held.append((record, holder))
        return free, mine, existing, held

    def _owners(
        self, claims: list[Claim], wanted: set[bytes], instances: Instances, plans: set[int]
    ) -> dict[bytes, Instance]:
        """Who holds each wanted event: a committed blob above all, else the first pending
        one that this write may not take over. Only claims holding a wanted event are judged
        (a manifest row read each, once a write); a blob taken over is fenced first."""
        owner: dict[bytes, Instance] = {}
        for claim in claims:
            held = wanted.intersection(claim.ids)
            if not held:
                continue
            instance = instances.get(claim.ref)
            if instance.stage is Stage.PENDING and self._may_take(instance, instances, plans):
                instance = instances.fence(instance)  # dead now, or committed meanwhile
            if instance.stage is Stage.DEAD:
                continue
            for claimed in held:
                current = owner.get(claimed)
                if current is None or (
                    instance.stage is Stage.COMMITTED and current.stage is not Stage.COMMITTED
                ):
                    owner[claimed] = instance
        return owner

    def _may_take(self, instance: Instance, instances: Instances, plans: set[int]) -> bool:
        """Another write's pending blob whose writer looks gone, or that planned the very
        events this write plans (the same input again: its first attempt crashed or stalls)."""
        if instance.ref in instances.own:
            return False
        return instance.plan in plans or not instance.young(self._clock(), self._timeout)

    def _append(
        self, slot: Slot, sequence: int, free: dict[Planned, list[NormalizedRecord]]
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
        return taken
