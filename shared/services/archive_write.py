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

from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.adapters.archive_store import ArchiveStore
from shared.adapters.index_tables import IndexTables, int64
from shared.core.archive_format import encode_blob, pack_offsets
from shared.core.archive_keys import (
    BUCKETS,
    MAX_BLOB_RECORDS,
    SINGLE_ROW,
    SINGLE_ROW_VALUES,
    BlobRef,
    blob_id_for,
    category_class,
    day_of,
    pack_postings,
    posting_row,
    second_of_day,
    value_hash,
)
from shared.core.keys import LOOKUP_COLUMNS, parse_canonical_time
from shared.core.records import NormalizedRecord
from shared.core.written import WriteResult
from shared.services.claims import CLAIM_TIMEOUT, ClaimedElsewhere, Claimer

_POSTINGS_OF_BLOB = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"
__all__ = ["CLAIM_TIMEOUT", "ArchiveWriter", "ClaimedElsewhere", "plan_blobs", "postings"]


@dataclass(slots=True, eq=False)  # compared (and hashed) by identity: one per planned blob
class PlannedBlob:
    ref: BlobRef
    records: list[NormalizedRecord]  # every event planned for it, by EventKey
    owned: list[NormalizedRecord] = field(default_factory=list)
    resumed: bool = False  # an earlier attempt claimed some events: it may have left postings


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
        self._claims = Claimer(tables, clock, claim_timeout)

    def write(self, records: Sequence[NormalizedRecord]) -> WriteResult:
        result = WriteResult()
        unique: dict[str, NormalizedRecord] = {}
        for record in records:
            if record["EventKey"] in unique:
                result.duplicates.append(record)  # the same event twice in one write
            else:
                unique[record["EventKey"]] = record
        planned = plan_blobs(list(unique.values()))
        existing = self._claims.claim(planned)  # raises ClaimedElsewhere: nothing written
        result.duplicates.extend(existing)
        result.existing.extend(existing)
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
            blob_rows = postings(blob.ref, ordered)
            if blob.resumed:
                self._drop_stale_postings(blob.ref, blob_rows)
            rows[blob.ref.month].extend(blob_rows)
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
        # Blobs and postings go side by side: only the manifests must wait for both.
        with ThreadPoolExecutor(max_workers=1) as pool:
            uploaded = pool.submit(
                self._tables.parallel, lambda item: self._archive.put(*item), uploads
            )
            for month, entities in rows.items():
                self._tables.upsert(month, entities)
            uploaded.result()
        committed = {blob.ref for blob in blobs}
        for month, entities in manifests.items():
            for partition, row in self._tables.create(month, entities):
                committed.discard(BlobRef.of_manifest(month, partition, row))
        return committed

    def _drop_stale_postings(self, ref: BlobRef, rows: list[dict[str, Any]]) -> None:
        """Delete the blob's posting rows that its contents no longer give: an earlier attempt
        wrote them for other events (some since archived elsewhere). Only on a retry: one
        range read for each kind and bucket the blob could have rows in."""
        wanted = {(row["PartitionKey"], row["RowKey"]) for row in rows}
        ranges = [
            (kind, posting_row(bucket, ref, 0)[:-1])
            for kind in LOOKUP_COLUMNS
            for bucket in (SINGLE_ROW, *(f"{b:x}" for b in range(BUCKETS)))
        ]
        found = self._tables.parallel(
            lambda item: [
                row["RowKey"]
                for row in self._tables.query(
                    ref.month,
                    _POSTINGS_OF_BLOB,
                    {"pk": item[0], "low": item[1], "high": item[1] + "~"},
                    select=["RowKey"],
                )
            ],
            ranges,
        )
        stale = [
            {"PartitionKey": kind, "RowKey": row}
            for (kind, _), rows_found in zip(ranges, found, strict=True)
            for row in rows_found
            if (kind, row) not in wanted
        ]
        if stale:
            self._tables.delete(ref.month, stale)
