"""Writing records to the archive and its index, each event once, whichever path brings it.

A write groups its records by (class, day) into planned blobs, each with an id hashed from
the events planned for it, and then, in this order:

1. claims each event: inserts its key row naming the blob (an insert fails for an event
   already claimed: one blob wins each event, across paths, redeliveries and instances);
2. uploads each blob with the events it owns (gzip JSON Lines; same events, same bytes);
3. upserts the blob's posting rows (idempotent);
4. creates the blob's manifest row: the commit point. A blob without a manifest does not
   exist for queries, `verify` or engines' users (`verify` names it; retention sweeps it).

A crash between any two steps is repaired by the retry: it plans the same blobs, finds its
own claims (same blob id) and finishes them. A claim naming another blob is a duplicate when
that blob is committed, taken over when its writer is surely gone (older than CLAIM_TIMEOUT,
with an ETag check so one taker wins), and otherwise in flight elsewhere: the write raises
ClaimedElsewhere before archiving anything, and the caller's retry or dead letter follows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.adapters.archive_store import ArchiveStore
from shared.adapters.index_tables import Found, IndexTables, as_int, int64
from shared.core.archive_format import encode_blob, pack_offsets
from shared.core.archive_keys import (
    MAX_BLOB_RECORDS,
    BlobRef,
    blob_id_for,
    category_class,
    day_of,
    key_row,
    pack_entries,
    posting_partition,
    posting_row,
    second_of_day,
)
from shared.core.keys import LOOKUP_COLUMNS, parse_canonical_time
from shared.core.records import NormalizedRecord
from shared.core.written import WriteResult

# host.json's functionTimeout is 10 minutes: a claim older than this has no live writer.
CLAIM_TIMEOUT = timedelta(minutes=15)
BLOB = "B"


class ClaimedElsewhere(Exception):
    """Some events are being archived right now by another writer: try again later."""


@dataclass(slots=True)
class PlannedBlob:
    ref: BlobRef
    records: list[NormalizedRecord]  # every event planned for it, by EventKey
    owned: list[NormalizedRecord] = field(default_factory=list)


def plan_blobs(records: Sequence[NormalizedRecord]) -> list[PlannedBlob]:
    """Records (unique by EventKey) grouped by class and day, at most MAX_BLOB_RECORDS each."""
    groups: dict[tuple[str, Any], list[NormalizedRecord]] = defaultdict(list)
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
    """A blob's posting rows: one per distinct key value, listing its records' places."""
    entries: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for ordinal, record in enumerate(records):
        second = second_of_day(record["TimeGenerated"])
        for kind, column in LOOKUP_COLUMNS.items():
            value = record[column]
            if isinstance(value, str) and value.strip():
                entries[(kind, value.strip().lower())].append((second, ordinal))
    return [
        {
            "PartitionKey": posting_partition(kind, value),
            "RowKey": posting_row(value, ref),
            "E": pack_entries(places),
        }
        for (kind, value), places in entries.items()
    ]


def _ticks(record: NormalizedRecord) -> int:
    return parse_canonical_time(record["TimeGenerated"])[1]


def archive_order(records: list[NormalizedRecord]) -> list[NormalizedRecord]:
    return sorted(records, key=lambda r: (r["TimeGenerated"], r["EventKey"]))


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
        by_month: dict[str, list[dict[str, Any]]] = defaultdict(list)
        owner: dict[tuple[str, str, str], tuple[PlannedBlob, NormalizedRecord]] = {}
        for blob in planned:
            for record in blob.records:
                partition, row = key_row(record["EventKey"], blob.ref.archive_class, blob.ref.day)
                by_month[blob.ref.month].append(
                    {"PartitionKey": partition, "RowKey": row, BLOB: int64(blob.ref.blob_id)}
                )
                owner[(blob.ref.month, partition, row)] = (blob, record)
        existing: dict[tuple[str, str, str], tuple[PlannedBlob, NormalizedRecord, Found]] = {}
        for month, entities in by_month.items():
            for (partition, row), found in self._tables.create(month, entities).items():
                blob, record = owner.pop((month, partition, row))
                existing[(month, partition, row)] = (blob, record, found)
        for blob, record in owner.values():
            blob.owned.append(record)
        held = self._settle_existing(existing, result)
        if held:
            raise ClaimedElsewhere(
                f"{held} events are being archived by another writer; try again later"
            )

    def _settle_existing(
        self,
        existing: dict[tuple[str, str, str], tuple[PlannedBlob, NormalizedRecord, Found]],
        result: WriteResult,
    ) -> int:
        """Sort claims found: mine to finish, committed elsewhere, or to take over; the
        number held by a live writer."""
        committed: dict[BlobRef, bool] = {}
        held = 0
        for (month, _, _), (blob, record, found) in existing.items():
            ref = BlobRef(blob.ref.day, blob.ref.archive_class, as_int(found.entity[BLOB]))
            if ref not in committed:
                committed[ref] = self._is_committed(ref)
            if committed[ref]:
                result.duplicates.append(record)
                result.existing.append(record)
            elif ref == blob.ref or self._take_over(month, found, blob.ref):
                blob.owned.append(record)
            else:
                held += 1
        return held

    def _is_committed(self, ref: BlobRef) -> bool:
        partition, row = ref.manifest_keys
        return self._tables.get(ref.month, partition, row) is not None

    def _take_over(self, month: str, found: Found, mine: BlobRef) -> bool:
        """Claim an event whose claiming writer is surely gone; one taker wins (ETag)."""
        claimed_at = found.timestamp
        if claimed_at is not None and self._clock() - claimed_at <= self._claim_timeout:
            return False
        replacement = {
            "PartitionKey": found.entity["PartitionKey"],
            "RowKey": found.entity["RowKey"],
            BLOB: int64(mine.blob_id),
        }
        return self._tables.replace_if_unchanged(month, replacement, found.etag)

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
