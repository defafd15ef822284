"""The table index: each record's body stored once, plus key-only lookups for each query.

Every key is derived from the record alone (see shared.core.keys), so writing the same event
twice, by any path, lands on the same rows:

* records table: properties `CategoryValue`, and `Body` (the record's JSON, zlib-compressed)
  or, when that would not fit an entity, `BodyBlob` (the name of a blob holding the JSON
  whole). Whether Log Analytics has the record is shared.adapters.forward_marks's, not this.
* lookup table: only `CategoryValue` is copied, for category filters and per-category
  retention.

Partitions are bucketed by time, so retention deletes whole partitions, and no query scans:
each reads PartitionKey equality with a RowKey range.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import orjson
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode
from azure.storage.blob import ContainerClient

from shared.core.keys import (
    LOOKUP_COLUMNS,
    MAX_BATCH,
    MAX_CATEGORY,
    RecordKey,
    lookup_partition,
    lookup_value,
    parse_canonical_time,
)
from shared.core.records import NormalizedRecord

MAX_BATCH_BYTES = 3_500_000  # under the 4 MiB transaction limit, with room for the envelope
MAX_INLINE_BODY = 60_000  # a binary property holds 64 KiB; past this the body goes to a blob
_In = TypeVar("_In")
_Out = TypeVar("_Out")


def lag_seconds(records: Iterable[NormalizedRecord], now: datetime) -> float | None:
    """Seconds from the oldest record's TimeGenerated to `now`; None when there is no record."""
    # The canonical form is fixed-width, so the smallest string is the oldest time.
    oldest = min((record["TimeGenerated"] for record in records), default=None)
    if oldest is None:
        return None
    whole, _ = parse_canonical_time(oldest)
    return (now - whole).total_seconds() - int(oldest[20:27]) / 10_000_000


def larger_lag(first: float | None, second: float | None) -> float | None:
    """The larger of two lags, either of which may be None (nothing indexed)."""
    if first is None or second is None:
        return second if first is None else first
    return max(first, second)


@dataclass(slots=True)
class WriteResult:
    """What one write did; `indexed` + `duplicates` hold every record written, once each."""

    indexed: list[NormalizedRecord] = field(default_factory=list)
    duplicates: list[NormalizedRecord] = field(default_factory=list)
    # The duplicates whose row was already in the table (not a repeat within this write).
    existing: list[NormalizedRecord] = field(default_factory=list)


@dataclass(slots=True)
class WritePlan:
    records: dict[RecordKey, NormalizedRecord] = field(default_factory=dict)
    repeated: list[NormalizedRecord] = field(default_factory=list)
    oversize: list[tuple[str, bytes]] = field(default_factory=list)  # (blob name, record JSON)
    lookup_batches: list[list[dict[str, Any]]] = field(default_factory=list)
    record_batches: list[list[dict[str, Any]]] = field(default_factory=list)


def encode_body(record: NormalizedRecord) -> bytes:
    return zlib.compress(orjson.dumps(record), 6)


def decode_body(body: bytes) -> NormalizedRecord:
    record: NormalizedRecord = orjson.loads(zlib.decompress(body))
    return record


def _oversize_blob_name(key: RecordKey) -> str:
    day = key.partition_key
    return f"{day[:4]}/{day[4:6]}/{day[6:]}/{key.row_key}.json"


def _chunks(entities: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Transaction-sized groups: at most 100 entities and under the 4 MiB request limit."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for entity in entities:
        entity_size = len(entity.get("Body", b"")) * 4 // 3 + 512  # base64 on the wire
        if chunk and (len(chunk) == MAX_BATCH or size + entity_size > MAX_BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(entity)
        size += entity_size
    if chunk:
        yield chunk


def _record_entity(
    key: RecordKey, record: NormalizedRecord, oversize: list[tuple[str, bytes]]
) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": key.partition_key,
        "RowKey": key.row_key,
        "CategoryValue": record["CategoryValue"][:MAX_CATEGORY],
    }
    body = encode_body(record)
    if len(body) <= MAX_INLINE_BODY:
        entity["Body"] = body
    else:
        # Too big for an entity: the whole record goes to a blob first, never truncated.
        name = _oversize_blob_name(key)
        oversize.append((name, orjson.dumps(record)))
        entity["BodyBlob"] = name
    return entity


def _lookup_entities(key: RecordKey, record: NormalizedRecord) -> Iterator[dict[str, Any]]:
    """The record's lookup rows: one per key column it has a value in."""
    month = key.partition_key[:6]
    category = record["CategoryValue"][:MAX_CATEGORY]
    for kind, column in LOOKUP_COLUMNS.items():
        value = record[column]
        if value:
            yield {
                "PartitionKey": lookup_partition(kind, month, value),
                "RowKey": lookup_value(value) + key.row_key,
                "CategoryValue": category,
            }


class IndexWriter:
    """Writes records to the index idempotently: a record already there counts as duplicate.

    Order matters for crash safety: lookups (idempotent upserts) and oversize blobs first, the
    record row last. The record row is the commit point: once it exists, everything it needs
    exists; if we crash before it, redelivery rewrites the same lookups and then creates it.
    """

    def __init__(
        self,
        records: TableClient,
        lookup: TableClient,
        oversize: ContainerClient,
        *,
        parallelism: int = 4,
    ) -> None:
        self._records = records
        self._lookup = lookup
        self._oversize = oversize
        self._parallelism = parallelism

    def plan(self, records: Sequence[NormalizedRecord]) -> WritePlan:
        """Every entity and blob a write needs, grouped into transactions; no I/O."""
        plan = WritePlan()
        lookups: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            key = RecordKey.of(record)
            if key in plan.records:
                # The same event twice in one batch is one record and one duplicate.
                plan.repeated.append(record)
                continue
            plan.records[key] = record
            for entity in _lookup_entities(key, record):
                lookups[entity["PartitionKey"]][entity["RowKey"]] = entity
            rows[key.partition_key].append(_record_entity(key, record, plan.oversize))
        plan.lookup_batches = [
            group for partition in lookups.values() for group in _chunks(list(partition.values()))
        ]
        plan.record_batches = [chunk for entities in rows.values() for chunk in _chunks(entities)]
        return plan

    def write(self, records: Sequence[NormalizedRecord]) -> WriteResult:
        plan = self.plan(records)
        result = WriteResult(duplicates=list(plan.repeated))
        for name, data in plan.oversize:
            self._oversize.upload_blob(name, data, overwrite=True)
        self._run_parallel(self._upsert_batch, plan.lookup_batches)
        for created, existing in self._run_parallel(self._create_batch, plan.record_batches):
            for row_key in created:
                result.indexed.append(plan.records[RecordKey.of_row_key(row_key)])
            for row_key in existing:
                record = plan.records[RecordKey.of_row_key(row_key)]
                result.duplicates.append(record)
                result.existing.append(record)
        return result

    def _run_parallel(self, work: Callable[[_In], _Out], batches: Sequence[_In]) -> list[_Out]:
        if len(batches) <= 1 or self._parallelism <= 1:
            return [work(batch) for batch in batches]
        with ThreadPoolExecutor(max_workers=self._parallelism) as pool:
            return list(pool.map(work, batches))

    def _upsert_batch(self, entities: list[dict[str, Any]]) -> None:
        self._lookup.submit_transaction(
            [("upsert", entity, {"mode": UpdateMode.REPLACE}) for entity in entities]
        )

    def _create_batch(self, entities: list[dict[str, Any]]) -> tuple[list[str], set[str]]:
        """Create rows: the RowKeys created, and those of rows that already existed."""
        pending = entities
        existing: set[str] = set()
        for _ in range(5):
            if not pending:
                return [], existing
            try:
                self._records.submit_transaction([("create", entity) for entity in pending])
                return [entity["RowKey"] for entity in pending], existing
            except (TableTransactionError, ResourceExistsError) as error:
                if getattr(error, "error_code", None) != "EntityAlreadyExists":
                    raise
            # Some rows exist (a redelivery, or another instance): read which, in one range
            # query over the batch's keys, and create only the rest.
            found = self._existing(pending)
            existing.update(found)
            pending = [entity for entity in pending if entity["RowKey"] not in found]
        raise RuntimeError("records table kept reporting conflicts for one batch")

    def _existing(self, entities: list[dict[str, Any]]) -> set[str]:
        partition = entities[0]["PartitionKey"]
        row_keys = {entity["RowKey"] for entity in entities}
        rows = self._records.query_entities(
            "PartitionKey eq @pk and RowKey ge @low and RowKey le @high",
            parameters={"pk": partition, "low": min(row_keys), "high": max(row_keys)},
            select=["RowKey"],
        )
        return {row["RowKey"] for row in rows if row["RowKey"] in row_keys}


class IndexReader:
    """Reads records back by key; bodies that live in blobs are fetched from there."""

    def __init__(self, records: TableClient, oversize: ContainerClient) -> None:
        self._records = records
        self._oversize = oversize

    def body_of(self, entity: dict[str, Any]) -> NormalizedRecord:
        """The record a row holds; UnreadableRecord when its body cannot be read back."""
        try:
            if "Body" in entity:
                return decode_body(bytes(entity["Body"]))
            blob = self._oversize.download_blob(entity["BodyBlob"]).readall()
            record = orjson.loads(blob)
            if not isinstance(record, dict):
                raise TypeError(f"the body is a JSON {type(record).__name__}")
        except (zlib.error, ValueError, TypeError, KeyError, ResourceNotFoundError) as error:
            raise UnreadableRecord(str(entity.get("RowKey", "")), error) from None
        return record

    def get(self, key: RecordKey) -> NormalizedRecord | UnreadableRecord | None:
        """The record under the key; None when there is none, the error when it is damaged."""
        try:
            entity = self._records.get_entity(key.partition_key, key.row_key)
        except ResourceNotFoundError:
            return None
        try:
            return self.body_of(entity)
        except UnreadableRecord as error:
            return error

    def get_many(
        self, keys: Sequence[RecordKey], parallelism: int = 8
    ) -> list[NormalizedRecord | UnreadableRecord | None]:
        if len(keys) <= 1:
            return [self.get(key) for key in keys]
        with ThreadPoolExecutor(max_workers=parallelism) as pool:
            return list(pool.map(self.get, keys))


class UnreadableRecord(Exception):
    """A record row whose body cannot be read back (damaged storage): named, never fatal."""

    def __init__(self, row_key: str, cause: Exception) -> None:
        super().__init__(f"record {row_key} cannot be read: {type(cause).__name__}: {cause}")
        self.row_key = row_key


def _same_partition_batches(
    entities: Iterable[Mapping[str, Any]],
) -> Iterator[list[Mapping[str, Any]]]:
    """Same-partition groups of at most 100, in the order given."""
    batch: list[Mapping[str, Any]] = []
    for entity in entities:
        if batch and (
            len(batch) == MAX_BATCH or batch[0]["PartitionKey"] != entity["PartitionKey"]
        ):
            yield batch
            batch = []
        batch.append(entity)
    if batch:
        yield batch


def delete_rows(table: TableClient, rows: Sequence[Mapping[str, Any]]) -> None:
    """Delete rows by their keys, a transaction per partition and hundred rows.

    A row already gone (a concurrent run deleted it) is no error.
    """
    for batch in _same_partition_batches(rows):
        try:
            table.submit_transaction(
                [
                    ("delete", {"PartitionKey": r["PartitionKey"], "RowKey": r["RowKey"]})
                    for r in batch
                ]
            )
        except HttpResponseError as error:
            if getattr(error, "error_code", "") != "ResourceNotFound":
                raise
            # Someone deleted one of them already (a concurrent run): delete one by one.
            for row in batch:
                table.delete_entity(row["PartitionKey"], row["RowKey"])
