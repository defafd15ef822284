"""Claiming events for archive blobs: one live claim per event, across writers and paths.

A write inserts its claims first and decides after. Each writer process appends to a lane of
its own in a slot (shared.services.claim_log), so its insert competes with no other writer:
per slot, it inserts a claim row per blob listing the events it plans that no live claim it
knows of holds, then reads what is new in the slot's other lanes, and decides. Of two writers
claiming one event, at least one sees the other's claim: if A's read misses B's claim, B
inserted it after that read, so after A's insert, and B's read (after B's insert) sees A's.
So a write never takes an event that another live claim holds.

A claim holds its events only while its blob's manifest row (shared.services.instances) is
pending or committed: an event is archived when a committed blob's claim lists it, and held
while another pending blob's does. Pending blobs are ordered as every writer sees them: by
the server's time of the pending row's insert, then blob id. One is taken over (fenced,
If-Match: its writer can then never commit it) when its writer looks gone (the row is older
than CLAIM_TIMEOUT), or when it was planned for exactly the same events (a retry of the same
input) and sorts before this write's blob: of two attempts at one input, the later takes the
earlier over, never both each other. Of two writes of different plans that see each other,
the younger gives way at once, and the older waits a moment (GIVE_WAY_SECONDS) for that. A
write held by a live writer fences its own blobs, so two writers holding parts of each
other's events never wait on each other for long, and raises ClaimedElsewhere (which events,
held by which blobs, until when); its caller retries later or dead-letters. A claim of this
write listing events it then found archived elsewhere is rewritten to the events its blob
owns (or deleted) before anything is uploaded: a committed blob's claims list its events.

CLAIM_STATS counts claim appends and those lost (a lane another writer uses, or whose
registry row changed or went): each is logged ("claim append lost"), then a new lane is used.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from azure.core.exceptions import HttpResponseError

from shared.adapters.index_tables import IndexTables
from shared.core.archive_keys import (
    EVENT_ID_BYTES,
    BlobRef,
    event_id,
    id_chunks,
    lane_row,
    new_lane,
    pack_ids,
    slot_partition,
)
from shared.core.records import NormalizedRecord
from shared.core.written import WriteResult
from shared.services.claim_log import (
    CLAIM_STATS,
    LAST,
    Claim,
    ClaimLogs,
    ClaimStats,
    SlotLog,
    claim_entity,
)
from shared.services.instances import Instance, Instances, Stage

__all__ = ["CLAIM_STATS", "CLAIM_TIMEOUT", "ClaimStats", "ClaimedElsewhere", "Claimer"]

# host.json's functionTimeout is 10 minutes: a claim older than this has no live writer.
CLAIM_TIMEOUT = timedelta(minutes=15)
LANE_ATTEMPTS = 8  # appends lost (each on a new lane) before giving up
APPEND_ROWS = 50  # claim rows of at most 60 KB each in one transaction: under its 4 MiB
# How long a write held only by younger writers waits for them to give way, in steps.
GIVE_WAY_SECONDS = (0.02, 0.05, 0.1, 0.2)
OWN_LANES = 4096  # slots whose lane state a process keeps (one forgotten costs a new lane)
# The service's answers to an append whose lane is not this writer's as it thought.
LOST = ("EntityAlreadyExists", "UpdateConditionNotSatisfied", "ResourceNotFound")
_LOG = logging.getLogger(__name__)


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
    held: list[tuple[Member, Instance]] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)  # this write's claim rows


@dataclass(slots=True)
class _Write:
    """One write's view: its manifest rows, its blobs by plan, and their rows' insert times."""

    instances: Instances
    plans: dict[int, BlobRef]
    stamps: dict[BlobRef, tuple[datetime, int] | None] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sorts_before(self, other: Instance, mine: BlobRef) -> bool:
        """Whether another pending blob's row sorts before this write's blob `mine`: (the
        server's time of the pending row's insert, blob id), as every writer sees it."""
        stamp = self._stamp(mine)
        if stamp is None or other.written is None:
            return False  # this write's blob is fenced already: take nothing over
        return (other.written, other.ref.blob_id) < stamp

    def older(self, mine: BlobRef, other: Instance) -> bool:
        """Whether this write's blob `mine` sorts before another pending blob."""
        stamp = self._stamp(mine)
        if stamp is None or other.written is None:
            return False
        return stamp < (other.written, other.ref.blob_id)

    def _stamp(self, mine: BlobRef) -> tuple[datetime, int] | None:
        with self.lock:
            if mine not in self.stamps:
                own = self.instances.read(mine)  # the server's time, not this clock's
                written = own.written if own.stage is Stage.PENDING else None
                self.stamps[mine] = None if written is None else (written, mine.blob_id)
            return self.stamps[mine]


@dataclass(slots=True)
class _Own:
    """This process's lane in one slot: its name, last number, registry row's ETag."""

    lane: str
    last: int = 0
    etag: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class Claimer:
    def __init__(
        self, tables: IndexTables, clock: Callable[[], datetime], timeout: timedelta
    ) -> None:
        self._tables = tables
        self._clock = clock
        self._timeout = timeout
        self.logs = ClaimLogs(tables)
        self.lane = new_lane()  # this process's, in every slot (a new one after a lost append)
        self._own: OrderedDict[tuple[str, str], _Own] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, planned: Sequence[Planned], instances: Instances) -> list[NormalizedRecord]:
        """Give each planned blob the events it owns; the events archived already.

        The blobs' pending rows exist (Instances.begin). Raises ClaimedElsewhere (having
        fenced its own blobs) when a live writer holds some of the events."""
        slots: dict[Slot, list[Member]] = defaultdict(list)
        for blob in planned:
            for record in blob.records:
                partition = slot_partition(record["TimeGenerated"])
                slots[(blob.ref.month, blob.ref.day, partition)].append((blob, record))
        write = _Write(instances, {blob.plan: blob.ref for blob in planned})
        items = list(slots.items())
        outcomes = self._tables.parallel(lambda item: self._claim_slot(*item, write), items)
        held = [(record, holder) for o in outcomes for (_, record), holder in o.held]
        if held:
            instances.abandon([blob.ref for blob in planned])
            raise held_elsewhere(held, self._timeout)
        for (slot, _), outcome in zip(items, outcomes, strict=True):
            self._shrink(slot, outcome)
        existing: list[NormalizedRecord] = []
        for outcome in outcomes:
            for blob, record in outcome.owned:
                blob.owned.append(record)
            existing.extend(outcome.existing)
        return existing

    def _claim_slot(self, slot: Slot, members: list[Member], write: _Write) -> SlotOutcome:
        """Judge the events from the claims known, insert claims of those free, read what
        came meanwhile, judge again."""
        month, day, partition = slot
        outcome = SlotOutcome()
        log = self.logs.known(month, partition) or self.logs.read(month, day, partition)
        free = self._judge(log, members, write, outcome)
        if outcome.held or not free:
            return outcome
        outcome.claims = self._insert(slot, free)
        log = self.logs.read(month, day, partition)  # every claim inserted before ours
        outcome.owned = self._judge(log, free, write, outcome)
        self._give_way_time(log, write, outcome)
        return outcome

    def _give_way_time(self, log: SlotLog, write: _Write, outcome: SlotOutcome) -> None:
        """Events held only by younger writers of other plans, which give way on seeing
        this write's claims (they fence their blobs): a moment for that, then judged again.
        Still pending after it, they are held; this write gives way in turn."""
        for delay in GIVE_WAY_SECONDS:
            if not outcome.held or not all(
                holder.plan != blob.plan and write.older(blob.ref, holder)
                for (blob, _), holder in outcome.held
            ):
                return
            time.sleep(delay)
            for ref in {holder.ref for _, holder in outcome.held}:
                write.instances.read(ref)  # fenced, committed, or still pending
            members = [member for member, _ in outcome.held]
            outcome.held = []
            outcome.owned += self._judge(log, members, write, outcome)

    def _judge(
        self, log: SlotLog, members: list[Member], write: _Write, outcome: SlotOutcome
    ) -> list[Member]:
        """The members no other live claim holds; the others go to `outcome`: archived
        already (a committed blob holds them), or held by a live writer."""
        holders = log.holders({event_id(record["EventKey"]) for _, record in members})
        free: list[Member] = []
        for blob, record in members:
            claims = holders.get(event_id(record["EventKey"]))
            holder = self._holder(claims, write) if claims else None
            if holder is None:
                free.append((blob, record))
            elif holder.stage is Stage.COMMITTED:
                outcome.existing.append(record)
            else:
                outcome.held.append(((blob, record), holder))
        return free

    def _holder(self, claims: list[Claim], write: _Write) -> Instance | None:
        """Who holds an event among other blobs' claims of it: a committed blob above all,
        else a pending one this write may not take over (one it may is fenced first)."""
        holder: Instance | None = None
        for claim in claims:
            if claim.ref in write.instances.own:
                continue
            instance = write.instances.get(claim.ref)
            if instance.stage is Stage.PENDING and self._may_take(instance, write):
                instance = write.instances.fence(instance)  # dead now, or committed meanwhile
            if instance.stage is Stage.COMMITTED:
                return instance
            if instance.stage is Stage.PENDING and holder is None:
                holder = instance
        return holder

    def _may_take(self, instance: Instance, write: _Write) -> bool:
        """Another write's pending blob whose writer looks gone, or that planned the very
        events this write plans and began before it (the same input again: its first
        attempt crashed or stalls)."""
        if not instance.young(self._clock(), self._timeout):
            return True
        mine = write.plans.get(instance.plan) if instance.plan is not None else None
        return mine is not None and write.sorts_before(instance, mine)

    # --- this process's lane ---------------------------------------------------------------

    def _insert(self, slot: Slot, free: list[Member]) -> list[Claim]:
        """Claim rows for the free events, a row per blob (more when large), appended to
        this process's lane, APPEND_ROWS to a transaction."""
        month, _, partition = slot
        by_blob: dict[BlobRef, list[bytes]] = defaultdict(list)
        for blob, record in free:
            by_blob[blob.ref].append(event_id(record["EventKey"]))
        chunks = [
            (ref, pack_ids(chunk)) for ref, ids in by_blob.items() for chunk in id_chunks(ids)
        ]
        claims: list[Claim] = []
        for start in range(0, len(chunks), APPEND_ROWS):
            claims += self._append(month, partition, chunks[start : start + APPEND_ROWS])
        return claims

    def _append(
        self, month: str, partition: str, chunks: list[tuple[BlobRef, bytes]]
    ) -> list[Claim]:
        own = self._own_lane(month, partition)
        with own.lock:
            for _ in range(LANE_ATTEMPTS):
                lane = self.lane
                if own.lane != lane:
                    own.lane, own.last, own.etag = lane, 0, None
                claims = [
                    Claim(ref, lane, own.last + n, None, ids)
                    for n, (ref, ids) in enumerate(chunks, 1)
                ]
                rows = [claim_entity(partition, claim) for claim in claims]
                last = claims[-1].sequence
                rows.append({"PartitionKey": partition, "RowKey": lane_row(lane), LAST: last})
                try:
                    etag = self.logs.append(month, rows, own.etag)
                except HttpResponseError as error:
                    self._new_lane(lane)  # the lane's state here is unknown now, or wrong
                    if getattr(error, "error_code", None) not in LOST:
                        raise
                    self._lost(month, partition, lane, error)
                    continue
                except Exception:
                    self._new_lane(lane)  # applied or not: unknown, so the lane's state too
                    raise
                own.last, own.etag = last, etag
                CLAIM_STATS.count(lost=False)
                self.logs.appended(month, partition, claims)
                return claims
        raise RuntimeError(f"claims of slot {partition} in {month} kept being lost")

    def _lost(self, month: str, partition: str, lane: str, error: HttpResponseError) -> None:
        CLAIM_STATS.count(lost=True)
        code = getattr(error, "error_code", None)
        _LOG.info(
            "claim append lost to another writer in slot %s of %s (lane %s: %s); "
            "going on in lane %s",
            partition,
            month,
            lane,
            code,
            self.lane,
        )

    def _own_lane(self, month: str, partition: str) -> _Own:
        key = (month, partition)
        with self._lock:
            own = self._own.get(key)
            if own is None:
                own = self._own[key] = _Own(self.lane)
                while len(self._own) > OWN_LANES:
                    self._own.popitem(last=False)
            self._own.move_to_end(key)
            return own

    def _new_lane(self, old: str) -> None:
        with self._lock:
            if self.lane == old:
                self.lane = new_lane()

    def _shrink(self, slot: Slot, outcome: SlotOutcome) -> None:
        """This write's claim rows of the slot listing events archived elsewhere (found
        after its insert: rare), rewritten to the events their blobs own, or deleted."""
        if sum(len(claim.ids) for claim in outcome.claims) == EVENT_ID_BYTES * len(outcome.owned):
            return  # it owns every event it claimed
        owned = {(blob.ref, event_id(record["EventKey"])) for blob, record in outcome.owned}
        month, _, partition = slot
        rewritten: list[dict[str, Any]] = []
        dropped: list[dict[str, Any]] = []
        for claim in outcome.claims:
            events = claim.events()
            kept = [event for event in events if (claim.ref, event) in owned]
            if len(kept) < len(events):
                row = claim_entity(partition, replace(claim, ids=pack_ids(kept)))
                (rewritten if kept else dropped).append(row)
        if rewritten:
            self._tables.upsert(month, rewritten)
        if dropped:
            self._tables.delete(month, dropped)
