"""Writing records to the archive and its index, each event once, whichever path brings it.

A write groups its records by (class, day) into planned blobs, each with an id hashed from
the events planned for it, and then, in this order:

1. claims its events, slot by slot (shared.core.archive_keys): reads the slot's claims, and
   appends one claim row per blob for the events nobody holds, with the next sequence
   numbers, in one transaction that fails if another writer appended first (then it reads
   again). So one blob wins each event, across paths, redeliveries and instances;
2. uploads each blob with the events it owns (gzip JSON Lines; same events, same bytes);
3. upserts the blob's posting rows (idempotent);
4. creates the blob's manifest row: the commit point. A blob without a manifest does not
   exist for queries or `verify` (which names it); retention sweeps it.

A crash between any two steps is repaired by the retry: it plans the same blobs, finds its
own claims (same blob id) and finishes them. An event held by another blob is a duplicate
when that blob is committed, free again when its writer is surely gone (its claim is older
than CLAIM_TIMEOUT and uncommitted), and otherwise in flight elsewhere: the write raises
ClaimedElsewhere before archiving anything, and the caller's retry or dead letter follows.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableTransactionError

from shared.adapters.archive_store import ArchiveStore
from shared.adapters.index_tables import IndexTables, int64
from shared.core.archive_format import encode_blob, pack_offsets
from shared.core.archive_keys import (
    CLASS_CODES,
    MAX_BLOB_RECORDS,
    SINGLE_ROW,
    SINGLE_ROW_VALUES,
    BlobRef,
    blob_id_for,
    category_class,
    claim_row,
    day_of,
    event_id,
    id_chunks,
    pack_ids,
    pack_postings,
    posting_row,
    second_of_day,
    slot_partition,
    value_hash,
)
from shared.core.keys import LOOKUP_COLUMNS, parse_canonical_time
from shared.core.records import NormalizedRecord
from shared.core.written import WriteResult
from shared.services.claim_log import Claim, ClaimLogs

# host.json's functionTimeout is 10 minutes: a claim older than this has no live writer.
CLAIM_TIMEOUT = timedelta(minutes=15)
CLAIM_ATTEMPTS = 20  # appends lost to other writers of the same slot before giving up
APPEND_ROWS = 50  # claim rows of at most 60 KB each in one transaction: under its 4 MiB


class ClaimedElsewhere(Exception):
    """Some events are being archived right now by another writer: try again later."""


@dataclass(slots=True, eq=False)  # compared (and hashed) by identity: one per planned blob
class PlannedBlob:
    ref: BlobRef
    records: list[NormalizedRecord]  # every event planned for it, by EventKey
    owned: list[NormalizedRecord] = field(default_factory=list)


def plan_blobs(records: Sequence[NormalizedRecord]) -> list[PlannedBlob]:
    """Records (unique by EventKey) grouped by class and day, at most MAX_BLOB_RECORDS each."""
    groups: dict[tuple[str, date], list[NormalizedRecord]] = defaultdict(list)
    for record in records:
        key = (category_class(record["CategoryValue"]), day_of(record["TimeGenerated"]))
        groups[key].append(record)
    planned = []
    for (archive_class, day), members in groups.items():
        members.sort(key=lambda r: r["EventKey"])
        for start in range(0, len(members), MAX_BLOB_RECORDS):
            chunk = members[start : start + MAX_BLOB_RECORDS]
            blob_id = blob_id_for(archive_class, day, (r["EventKey"] for r in chunk))
            planned.append(PlannedBlob(BlobRef(day, archive_class, blob_id), chunk))
    return planned


def postings(ref: BlobRef, records: Sequence[NormalizedRecord]) -> list[dict[str, Any]]:
    """A blob's posting rows: per kind and value bucket (or one for all of a kind's values
    when they are few), each value's records' places."""
    values: dict[str, dict[bytes, tuple[str, list[tuple[int, int]]]]] = defaultdict(dict)
    for ordinal, record in enumerate(records):
        second = second_of_day(record["TimeGenerated"])
        for kind, column in LOOKUP_COLUMNS.items():
            value = record[column]
            if isinstance(value, str) and value.strip():
                bucket, digest = value_hash(value)
                values[kind].setdefault(digest, (bucket, []))[1].append((second, ordinal))
    rows = []
    for kind, by_digest in values.items():
        buckets: dict[str, dict[bytes, list[tuple[int, int]]]] = defaultdict(dict)
        single = len(by_digest) <= SINGLE_ROW_VALUES
        for digest, (bucket, places) in by_digest.items():
            buckets[SINGLE_ROW if single else bucket][digest] = places
        rows += [
            {"PartitionKey": kind, "RowKey": posting_row(bucket, ref, part), "E": packed}
            for bucket, groups in buckets.items()
            for part, packed in enumerate(pack_postings(groups))
        ]
    return rows


def _ticks(record: NormalizedRecord) -> int:
    return parse_canonical_time(record["TimeGenerated"])[1]


def archive_order(records: list[NormalizedRecord]) -> list[NormalizedRecord]:
    return sorted(records, key=lambda r: (r["TimeGenerated"], r["EventKey"]))


@dataclass(slots=True)
class SlotOutcome:
    owned: list[tuple[PlannedBlob, NormalizedRecord]] = field(default_factory=list)
    existing: list[NormalizedRecord] = field(default_factory=list)
    held: int = 0


class _Committed:
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


Slot = tuple[str, date, str]  # month, day, claim partition


class ArchiveWriter:
    """Writes records once each; a record already archived counts as a duplicate."""

    def __init__(
        self,
        tables: IndexTables,
        archive: ArchiveStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        claim_timeout: timedelta = CLAIM_TIMEOUT,
    ) -> None:
        self._tables = tables
        self._archive = archive
        self._clock = clock
        self._claim_timeout = claim_timeout
        self._logs = ClaimLogs(tables)

    def write(self, records: Sequence[NormalizedRecord]) -> WriteResult:
        result = WriteResult()
        unique: dict[str, NormalizedRecord] = {}
        for record in records:
            if record["EventKey"] in unique:
                result.duplicates.append(record)  # the same event twice in one write
            else:
                unique[record["EventKey"]] = record
        planned = plan_blobs(list(unique.values()))
        self._claim(planned, result)
        committed = self._archive_and_commit([blob for blob in planned if blob.owned])
        for blob in planned:
            if not blob.owned:
                continue
            if blob.ref in committed:
                result.indexed.extend(blob.owned)
            else:  # another writer of the same blob committed it first
                result.duplicates.extend(blob.owned)
                result.existing.extend(blob.owned)
        return result

    # --- 1. claims -------------------------------------------------------------------------

    def _claim(self, planned: list[PlannedBlob], result: WriteResult) -> None:
        slots: dict[Slot, list[tuple[PlannedBlob, NormalizedRecord]]] = defaultdict(list)
        for blob in planned:
            for record in blob.records:
                partition = slot_partition(record["TimeGenerated"])
                slots[(blob.ref.month, blob.ref.day, partition)].append((blob, record))
        committed = _Committed(self._tables)
        mine = {blob.ref for blob in planned}
        outcomes = self._tables.parallel(
            lambda item: self._claim_slot(item[0], item[1], committed, mine), list(slots.items())
        )
        held = 0
        for outcome in outcomes:
            for blob, record in outcome.owned:
                blob.owned.append(record)
            result.duplicates.extend(outcome.existing)
            result.existing.extend(outcome.existing)
            held += outcome.held
        if held:
            raise ClaimedElsewhere(
                f"{held} events are being archived by another writer; try again later"
            )

    def _claim_slot(
        self,
        slot: Slot,
        members: list[tuple[PlannedBlob, NormalizedRecord]],
        committed: _Committed,
        mine: set[BlobRef],
    ) -> SlotOutcome:
        """Claim a slot's events: read its claims, append ours, again if another writer
        appended first. One transaction an attempt, so each append is atomic."""
        month, day, partition = slot
        outcome = SlotOutcome()
        pending = members
        for _ in range(CLAIM_ATTEMPTS):
            claims = self._logs.read(month, day, partition)
            wanted = {event_id(record["EventKey"]) for _, record in pending}
            owner = self._owners(claims, wanted, committed, mine)
            free: dict[PlannedBlob, list[NormalizedRecord]] = defaultdict(list)
            for blob, record in pending:
                holder = owner.get(event_id(record["EventKey"]))
                if holder is None:
                    free[blob].append(record)
                elif committed(holder.ref):
                    outcome.existing.append(record)
                elif holder.ref == blob.ref:
                    outcome.owned.append((blob, record))  # a retry finishing its own claim
                else:
                    outcome.held += 1
            if not free:
                return outcome
            sequence = max((claim.sequence for claim in claims), default=0) + 1
            taken = self._append(month, partition, sequence, free)
            outcome.owned.extend((blob, r) for blob in taken for r in free[blob])
            pending = [(blob, r) for blob, r in pending if blob in free and blob not in taken]
            if not pending:
                return outcome
        raise RuntimeError(f"claims of slot {partition} in {month} kept changing under us")

    def _owners(
        self,
        claims: list[Claim],
        wanted: set[bytes],
        committed: _Committed,
        mine: set[BlobRef],
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
            elif self._live(claim, committed, mine):
                for claimed in held:
                    owner.setdefault(claimed, claim)
        return owner

    def _live(self, claim: Claim, committed: _Committed, mine: set[BlobRef]) -> bool:
        """Whether a claim still holds its events: committed, ours, or its writer may live."""
        if claim.ref in mine or committed(claim.ref):
            return True
        return claim.written is None or self._clock() - claim.written <= self._claim_timeout

    def _append(
        self,
        month: str,
        partition: str,
        sequence: int,
        free: dict[PlannedBlob, list[NormalizedRecord]],
    ) -> set[PlannedBlob]:
        """Append claim rows for as many blobs as one transaction takes; the blobs claimed
        (none when another writer appended first)."""
        entities: list[dict[str, Any]] = []
        taken: set[PlannedBlob] = set()
        for blob, records in free.items():
            ids = [event_id(record["EventKey"]) for record in records]
            rows = [
                {
                    "PartitionKey": partition,
                    "RowKey": claim_row(sequence + len(entities) + index),
                    "B": int64(blob.ref.blob_id),
                    "C": CLASS_CODES[blob.ref.archive_class],
                    "K": pack_ids(chunk),
                }
                for index, chunk in enumerate(id_chunks(ids))
            ]
            if entities and len(entities) + len(rows) > APPEND_ROWS:
                break
            entities.extend(rows)
            taken.add(blob)
        try:
            self._tables.append(month, entities)
        except (TableTransactionError, ResourceExistsError) as error:
            if getattr(error, "error_code", None) != "EntityAlreadyExists":
                raise
            return set()
        return taken

    # --- 2-4. archive, postings, manifests --------------------------------------------------

    def _archive_and_commit(self, blobs: list[PlannedBlob]) -> set[BlobRef]:
        if not blobs:
            return set()
        manifests: dict[str, list[dict[str, Any]]] = defaultdict(list)
        rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        uploads = []
        for blob in blobs:
            ordered = archive_order(blob.owned)
            encoded = encode_blob(ordered)
            uploads.append((blob.ref.name, encoded))
            rows[blob.ref.month].extend(postings(blob.ref, ordered))
            partition, row = blob.ref.manifest_keys
            manifests[blob.ref.month].append(
                {
                    "PartitionKey": partition,
                    "RowKey": row,
                    "N": encoded.count,
                    "H": bytes.fromhex(encoded.sha256),
                    "O": pack_offsets(encoded.offsets),
                    "Lo": int64(_ticks(ordered[0])),
                    "Hi": int64(_ticks(ordered[-1])),
                }
            )
        self._tables.parallel(lambda item: self._archive.put(*item), uploads)
        for month, entities in rows.items():
            self._tables.upsert(month, entities)
        committed = {blob.ref for blob in blobs}
        for month, entities in manifests.items():
            for partition, row in self._tables.create(month, entities):
                committed.discard(BlobRef.of_manifest(month, partition, row))
        return committed
