"""Writing records to the archive and its index, each event once, whichever path brings it.

A write groups its records by (class, day) into planned blobs, each with a plan id hashed
from its events and a blob id of its own (random: no two writes ever write one name), and
then, in this order:

1. inserts each blob's manifest row as *pending* (shared.services.instances): the fence;
2. claims its events, slot by slot (shared.services.claims): inserts one claim row per blob
   for the events no live claim it knows of holds, in a lane of its own in the slot (so it
   competes with no other writer), then reads the slot's other lanes and decides: an event
   two writers claimed goes to one of them. A claim holds only while its blob is pending or
   committed; a blob whose writer looks gone, or planned for the same events, is fenced
   before its events are taken over;
3. uploads each blob with the events it owns (gzip JSON Lines; never over another's bytes);
4. upserts the blob's posting rows (after the upload: a posting always has its blob until
   the blob is swept, so a sweep finds a blob's postings from its bytes);
5. replaces each pending row with its manifest, If-Match the ETag of step 1: the commit. A
   blob fenced meanwhile (this writer was paused past the takeover time, and another took
   its events) fails here, whatever the clocks say: its upload and postings are removed
   and ClaimedElsewhere is raised; the events are archived once, by the taker.

A crash between any two steps leaves a pending blob that the retry (same input: same plan)
fences and replaces at once, and that any other writer fences once it is older than
CLAIM_TIMEOUT. A blob without a manifest does not exist for queries; `verify` names it
(pending while its writer may be at work, orphaned once fenced or stale) and retention
sweeps it once it is fenced (shared.services.retention_archive).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeGuard

from shared.adapters.archive_store import ArchiveStore
from shared.adapters.index_tables import IndexTables, int64
from shared.core.archive_format import EncodedBlob, encode_blob, pack_offsets
from shared.core.archive_keys import (
    MAX_BLOB_RECORDS,
    MEMBERS,
    PLAN,
    SINGLE_ROW,
    SINGLE_ROW_RECORDS,
    SINGLE_ROW_VALUES,
    BlobRef,
    category_class,
    day_of,
    new_blob_id,
    pack_postings,
    plan_id_for,
    posting_row,
    prefix_lead,
    second_of_day,
    value_hash,
)
from shared.core.keys import LOOKUP_COLUMNS, parse_canonical_time
from shared.core.records import NormalizedRecord
from shared.core.written import WriteResult
from shared.services.claims import CLAIM_TIMEOUT, ClaimedElsewhere, Claimer
from shared.services.index_kinds import kinds_of
from shared.services.instances import Instances

__all__ = ["CLAIM_TIMEOUT", "ArchiveWriter", "ClaimedElsewhere", "plan_blobs", "postings"]

HELD_PAUSES = (0.2, 0.5, 1.0, 2.0)  # seconds between tries of a write another writer holds


@dataclass(slots=True, eq=False)  # compared (and hashed) by identity: one per planned blob
class PlannedBlob:
    ref: BlobRef
    plan: int  # the hash of the events planned for it: the same input plans the same
    records: list[NormalizedRecord]  # every event planned for it, by EventKey
    owned: list[NormalizedRecord] = field(default_factory=list)


def plan_blobs(
    records: Sequence[NormalizedRecord], new_id: Callable[[], int] = new_blob_id
) -> list[PlannedBlob]:
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
            plan = plan_id_for(archive_class, day, (r["EventKey"] for r in chunk))
            planned.append(PlannedBlob(BlobRef(day, archive_class, new_id()), plan, chunk))
    return planned


def is_posted(value: object) -> TypeGuard[str]:
    """Whether a key column's value is posted: a string, not blank."""
    return isinstance(value, str) and bool(value.strip())


def posted_values(record: NormalizedRecord) -> Iterator[tuple[str, str]]:
    """(kind, value) of each posting kind a record has a value of: what it is posted under."""
    for kind, column in LOOKUP_COLUMNS.items():
        value = record.get(column)
        if is_posted(value):
            yield kind, value


def posted_kinds(record: NormalizedRecord) -> Iterator[str]:
    """The posting kinds a record has a value of (what verify holds its blob to)."""
    return (kind for kind, _ in posted_values(record))


def postings(ref: BlobRef, records: Sequence[NormalizedRecord]) -> list[dict[str, Any]]:
    """A blob's posting rows: per kind and hash prefix (or, for a small blob, one for all of
    a kind's values when they are few), each value's records' places."""
    seconds = [second_of_day(record["TimeGenerated"]) for record in records]
    small = len(records) <= SINGLE_ROW_RECORDS
    rows = []
    digests: dict[object, bytes | None] = {}  # a value's hash, None when not posted
    for kind, column in LOOKUP_COLUMNS.items():  # kind by kind: one pass of a column each
        by_digest: dict[bytes, list[tuple[int, int]]] = {}
        for ordinal, record in enumerate(records):
            value = record.get(column)
            try:
                digest = digests[value]
            except KeyError:
                digest = digests[value] = value_hash(value)[1] if is_posted(value) else None
            except TypeError:  # unhashable: no string
                continue
            if digest is not None:
                places = by_digest.get(digest)
                if places is None:
                    places = by_digest[digest] = []
                places.append((seconds[ordinal], ordinal))
        if not by_digest:
            continue
        buckets: dict[str, dict[bytes, list[tuple[int, int]]]] = defaultdict(dict)
        single = small and len(by_digest) <= SINGLE_ROW_VALUES
        for digest, places in by_digest.items():
            buckets[SINGLE_ROW if single else prefix_lead(digest)][digest] = places
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


def manifest_row(
    ref: BlobRef, plan: int, ordered: list[NormalizedRecord], encoded: EncodedBlob
) -> dict[str, Any]:
    """A blob's manifest: what its commit records."""
    partition, row = ref.manifest_keys
    return {
        "PartitionKey": partition,
        "RowKey": row,
        "N": encoded.count,
        "H": bytes.fromhex(encoded.sha256),
        "O": pack_offsets(encoded.offsets),
        MEMBERS: encoded.member_records,
        "Lo": int64(_ticks(ordered[0])),
        "Hi": int64(_ticks(ordered[-1])),
        PLAN: int64(plan),
    }


def _after(earlier: WriteResult, later: WriteResult) -> WriteResult:
    """Two tries of one write as one: what the earlier committed is indexed, never the
    later's duplicate (the later finds it archived)."""
    ours = {record["EventKey"] for record in earlier.indexed}
    return WriteResult(
        indexed=earlier.indexed + later.indexed,
        duplicates=[r for r in later.duplicates if r["EventKey"] not in ours],
        existing=[r for r in later.existing if r["EventKey"] not in ours],
    )


def taken_over(blobs: Sequence[PlannedBlob], written: WriteResult) -> ClaimedElsewhere:
    count = sum(len(blob.owned) for blob in blobs)
    names = ", ".join(blob.ref.name for blob in blobs[:3])
    return ClaimedElsewhere(
        f"{count} events were taken over by another writer while this write was held up "
        f"(its blobs {names} were fenced before their commit, and removed): they are "
        "archived once, by that writer, or, for any it did not take, by running this again "
        "(which counts the others as duplicates)",
        event_keys=[record["EventKey"] for blob in blobs for record in blob.owned],
        holders=[blob.ref.name for blob in blobs],
        written=written,
    )


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
        self._kinds = kinds_of(tables)

    def write(self, records: Sequence[NormalizedRecord]) -> WriteResult:
        result = WriteResult()
        unique: dict[str, NormalizedRecord] = {}
        for record in records:
            if record["EventKey"] in unique:
                result.duplicates.append(record)  # the same event twice in one write
            else:
                unique[record["EventKey"]] = record
        planned = plan_blobs(list(unique.values()))
        self._kinds.mark(blob.ref.month for blob in planned)  # before its first pending row
        instances = Instances(self._tables, self._clock)
        instances.begin([(blob.ref, blob.plan) for blob in planned])
        existing = self._claims.claim(planned, instances)  # raises ClaimedElsewhere
        result.duplicates.extend(existing)
        result.existing.extend(existing)
        self._drop_unused([blob.ref for blob in planned if not blob.owned])
        owned = [blob for blob in planned if blob.owned]
        fenced = self._archive_and_commit(owned, instances)
        for blob in owned:
            if blob not in fenced:
                result.indexed.extend(blob.owned)
        if fenced:
            raise taken_over(fenced, result)
        return result

    def write_when_free(
        self, records: Sequence[NormalizedRecord], pauses: Sequence[float] = HELD_PAUSES
    ) -> WriteResult:
        """`write`; held by another live writer (or fenced by one that took the same events
        over), tried again a few times within seconds, for that writer usually commits
        meanwhile: the events then count as duplicates here, indexed there. What a try
        committed before it was stopped counts as indexed, not as the next try's duplicates.
        Raises the last ClaimedElsewhere when they are held still, with all that was
        committed."""
        committed = WriteResult()
        for pause in (*pauses, None):
            try:
                return _after(committed, self.write(records))
            except ClaimedElsewhere as error:
                committed = _after(committed, error.written or WriteResult())
                if pause is None:
                    error.written = committed
                    raise
                time.sleep(pause)
        raise AssertionError("unreachable")

    # --- 3-5. archive, postings, commits ----------------------------------------------------

    def _archive_and_commit(
        self, blobs: list[PlannedBlob], instances: Instances
    ) -> list[PlannedBlob]:
        """Upload, post and commit each blob; the blobs fenced before their commit (their
        upload and postings removed again)."""
        if not blobs:
            return []
        ordered = {blob: archive_order(blob.owned) for blob in blobs}
        encoded = {blob: encode_blob(ordered[blob]) for blob in blobs}
        rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for blob in blobs:
            rows[blob.ref.month].extend(postings(blob.ref, ordered[blob]))
        self._tables.parallel(lambda blob: self._archive.put(blob.ref.name, encoded[blob]), blobs)
        for month, entities in rows.items():
            self._tables.upsert(month, entities)
        commits = instances.commit_all(
            [
                (blob.ref, manifest_row(blob.ref, blob.plan, ordered[blob], encoded[blob]))
                for blob in blobs
            ]
        )
        fenced = [blob for blob, done in zip(blobs, commits, strict=True) if not done]
        for blob in fenced:
            self._remove(blob.ref, postings(blob.ref, ordered[blob]))
        return fenced

    def _drop_unused(self, refs: list[BlobRef]) -> None:
        """Pending rows of blobs that got no event (all archived already): gone is dead."""
        by_month: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for ref in refs:
            partition, row = ref.manifest_keys
            by_month[ref.month].append({"PartitionKey": partition, "RowKey": row})
        for month, keys in by_month.items():
            self._tables.delete(month, keys)

    def _remove(self, ref: BlobRef, rows: list[dict[str, Any]]) -> None:
        """A fenced blob's postings, then its bytes: nothing of it stays to be swept."""
        self._tables.delete(ref.month, rows)
        self._archive.delete([ref.name])
