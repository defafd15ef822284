"""The table index: each record's body stored once, plus key-only lookups for each query.

Layout (every key is derived from the record alone, so writing the same event twice, by
any path, lands on the same rows):

* records table: PartitionKey `YYYYMMDD` (the day of TimeGenerated), RowKey
  `{inverted ticks:019}_{EventKey}` so a partition reads newest first. Properties:
  `CategoryValue`, `Body` (the record's JSON, zlib-compressed) or, when that would not fit
  an entity, `BodyBlob` (the name of a blob holding the JSON whole), and `Forwarded`
  (whether Log Analytics accepted it) when forwarding is configured.
* lookup table: PartitionKey `{kind}|{YYYYMM}|{bucket}` (the bucket a hash of the value, so
  a batch's lookups share a few partitions and go in few transactions), RowKey
  `{encoded value}|{record RowKey}` (from which the record's keys follow). Only
  `CategoryValue` is copied, for category filters and per-category retention.

Partitions are bucketed by time, so retention deletes whole partitions, and no query scans:
each reads PartitionKey equality with a RowKey range.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode
from azure.storage.blob import ContainerClient

from shared.core.records import NormalizedRecord

# Lookup kinds: the query filter each one answers, and the record column it keys on.
LOOKUP_COLUMNS: dict[str, str] = {
    "s": "SubscriptionId",
    "r": "ResourceId",
    "c": "Caller",
    "x": "CorrelationId",
    "o": "OperationNameValue",
}

MARK_ATTEMPTS = 4  # merges are idempotent: trying again is always safe
MAX_BATCH = 100  # operations per transaction (service limit)
MAX_BATCH_BYTES = 3_500_000  # under the 4 MiB transaction limit, with room for the envelope
MAX_INLINE_BODY = 60_000  # a binary property holds 64 KiB; past this the body goes to a blob
LOOKUP_BUCKETS = 16  # per kind and month: 16 x 2,000 entities/s, few transactions per batch
MAX_KEY_VALUE = 300
# The eight categories are short; an unknown one is kept whole in the body, but the copy on
# each row is cut so that no input can make Table storage refuse the entity.
MAX_CATEGORY = 256  # encoded lookup value; keys stay well under Azurite's 512 characters
_EPOCH_TICKS = 621_355_968_000_000_000  # .NET ticks at 1970-01-01, so keys sort like Azure's
_MAX_TICKS = 10**19 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._@:=+-]")


def _escape_key_char(match: re.Match[str]) -> str:
    return "".join(f"~{byte:02x}" for byte in match.group().encode("utf-8"))


def encode_key_value(value: str) -> str:
    """A lookup value as a key part: forbidden and odd characters escaped, length bounded.

    `/ \\ # ?`, controls, quotes, `%` and `|` never reach a key. A long value keeps a readable
    prefix and is made unique by a hash of the whole.
    """
    encoded = _SAFE_KEY_CHARS.sub(_escape_key_char, value)
    if len(encoded) <= MAX_KEY_VALUE:
        return encoded
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]
    return f"{encoded[: MAX_KEY_VALUE - 34]}~~{digest}"


def parse_canonical_time(value: str) -> tuple[datetime, int]:
    """`YYYY-MM-DDTHH:MM:SS.fffffffZ` → (datetime to the second, ticks since 0001-01-01)."""
    whole = datetime(
        int(value[0:4]),
        int(value[5:7]),
        int(value[8:10]),
        int(value[11:13]),
        int(value[14:16]),
        int(value[17:19]),
        tzinfo=UTC,
    )
    ticks = _EPOCH_TICKS + int(whole.timestamp()) * 10_000_000 + int(value[20:27])
    return whole, ticks


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


def row_key_for(time_generated: str, event_key: str) -> str:
    _, ticks = parse_canonical_time(time_generated)
    return f"{_MAX_TICKS - ticks:019d}_{event_key}"


def row_key_bound(moment: datetime) -> str:
    """The RowKey prefix of a moment: rows at or after it sort before it (newest first)."""
    ticks = _EPOCH_TICKS + (moment - _EPOCH) // timedelta(microseconds=1) * 10
    return f"{_MAX_TICKS - ticks:019d}"


def time_of_row_key(row_key: str) -> datetime:
    # Integer arithmetic only: a float would round 23:59:59.9999999 into the next day.
    ticks = _MAX_TICKS - int(row_key[:19])
    return _EPOCH + timedelta(microseconds=(ticks - _EPOCH_TICKS) // 10)


def day_partition(moment: date) -> str:
    """`YYYYMMDD`, four-digit year for every year 0001-9999, so keys compare in time order.

    (`strftime("%Y")` does not pad years before 1000 on Linux.)
    """
    return f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"


def month_bucket(moment: date) -> str:
    """`YYYYMM`, fixed width like `day_partition`."""
    return f"{moment.year:04d}{moment.month:02d}"


def lookup_value(value: str) -> str:
    """A lookup value as its RowKey prefix: folded (trimmed, lower case) and encoded."""
    return encode_key_value(value.strip().lower()) + "|"


def lookup_partition(kind: str, month: str, value: str) -> str:
    folded = value.strip().lower().encode("utf-8", "surrogatepass")
    bucket = hashlib.sha256(folded).digest()[0] % LOOKUP_BUCKETS
    return f"{kind}|{month}|{bucket:02d}"


def record_row_key(lookup_row_key: str) -> str:
    """The record's RowKey inside a lookup RowKey (the part after the value's `|`)."""
    return lookup_row_key.rsplit("|", 1)[-1]


@dataclass(frozen=True, slots=True)
class RecordKey:
    partition_key: str
    row_key: str

    @classmethod
    def of(cls, record: NormalizedRecord) -> RecordKey:
        time_generated: str = record["TimeGenerated"]
        whole, ticks = parse_canonical_time(time_generated)
        return cls(day_partition(whole), f"{_MAX_TICKS - ticks:019d}_{record['EventKey']}")

    @classmethod
    def of_row_key(cls, row_key: str) -> RecordKey:
        return cls(day_partition(time_of_row_key(row_key)), row_key)


@dataclass(slots=True)
class WriteResult:
    """What one write did; `indexed` + `duplicates` hold every record written, once each."""

    indexed: list[NormalizedRecord] = field(default_factory=list)
    duplicates: list[NormalizedRecord] = field(default_factory=list)
    # EventKeys of duplicates that Log Analytics has not accepted yet (to be forwarded).
    unforwarded_duplicates: set[str] = field(default_factory=set)


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
        forwarding: bool = False,
        parallelism: int = 4,
    ) -> None:
        self._records = records
        self._lookup = lookup
        self._oversize = oversize
        self._forwarding = forwarding
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
            month = key.partition_key[:6]
            category = record["CategoryValue"][:MAX_CATEGORY]
            for kind, column in LOOKUP_COLUMNS.items():
                value = record[column]
                if value:
                    partition = lookup_partition(kind, month, value)
                    row_key = lookup_value(value) + key.row_key
                    lookups[partition][row_key] = {
                        "PartitionKey": partition,
                        "RowKey": row_key,
                        "CategoryValue": category,
                    }
            rows[key.partition_key].append(self._record_entity(key, record, plan.oversize))
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
            for row_key, forwarded in existing.items():
                record = plan.records[RecordKey.of_row_key(row_key)]
                result.duplicates.append(record)
                if self._forwarding and not forwarded:
                    result.unforwarded_duplicates.add(record["EventKey"])
        return result

    def mark_forwarded(self, records: Iterable[NormalizedRecord]) -> None:
        """Record that Log Analytics accepted these, so redelivery does not send them again.

        Tried a few times: failing here after Log Analytics accepted would send them twice.
        """
        by_partition: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            key = RecordKey.of(record)
            by_partition[key.partition_key].append(
                {"PartitionKey": key.partition_key, "RowKey": key.row_key, "Forwarded": True}
            )
        batches = [chunk for entities in by_partition.values() for chunk in _chunks(entities)]
        for attempt in range(MARK_ATTEMPTS):
            try:
                self._run_parallel(self._merge_batch, batches)
                return
            except Exception:
                if attempt == MARK_ATTEMPTS - 1:
                    raise
                time.sleep(0.5 * 2**attempt)

    def _record_entity(
        self, key: RecordKey, record: NormalizedRecord, oversize: list[tuple[str, bytes]]
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
        if self._forwarding:
            entity["Forwarded"] = False
        return entity

    def _run_parallel(self, work: Any, batches: Sequence[Any]) -> list[Any]:
        if len(batches) <= 1 or self._parallelism <= 1:
            return [work(batch) for batch in batches]
        with ThreadPoolExecutor(max_workers=self._parallelism) as pool:
            return list(pool.map(work, batches))

    def _upsert_batch(self, entities: list[dict[str, Any]]) -> None:
        self._lookup.submit_transaction(
            [("upsert", entity, {"mode": UpdateMode.REPLACE}) for entity in entities]
        )

    def _merge_batch(self, entities: list[dict[str, Any]]) -> None:
        # Update, never upsert: a mark must not create a row without its body (say, for a
        # record that retention deleted before a dead letter was replayed).
        try:
            self._records.submit_transaction(
                [("update", entity, {"mode": UpdateMode.MERGE}) for entity in entities]
            )
        except TableTransactionError as error:
            if getattr(error, "error_code", None) != "ResourceNotFound":
                raise
            for entity in entities:
                with contextlib.suppress(ResourceNotFoundError):
                    self._records.update_entity(entity, mode=UpdateMode.MERGE)

    def _create_batch(self, entities: list[dict[str, Any]]) -> tuple[list[str], dict[str, bool]]:
        """Create rows; rows that already exist are reported with their Forwarded flag."""
        pending = entities
        existing: dict[str, bool] = {}
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

    def is_forwarded(self, record: NormalizedRecord) -> bool:
        """Whether the index marks the record as accepted by Log Analytics, read now."""
        key = RecordKey.of(record)
        try:
            row = self._records.get_entity(key.partition_key, key.row_key, select=["Forwarded"])
        except ResourceNotFoundError:
            return False
        return bool(row.get("Forwarded", False))

    def _existing(self, entities: list[dict[str, Any]]) -> dict[str, bool]:
        partition = entities[0]["PartitionKey"]
        row_keys = {entity["RowKey"] for entity in entities}
        rows = self._records.query_entities(
            "PartitionKey eq @pk and RowKey ge @low and RowKey le @high",
            parameters={"pk": partition, "low": min(row_keys), "high": max(row_keys)},
            select=["RowKey", "Forwarded"],
        )
        return {
            row["RowKey"]: bool(row.get("Forwarded", False))
            for row in rows
            if row["RowKey"] in row_keys
        }


class IndexReader:
    """Reads records back by key; bodies that live in blobs are fetched from there."""

    def __init__(self, records: TableClient, oversize: ContainerClient) -> None:
        self._records = records
        self._oversize = oversize

    def body_of(self, entity: dict[str, Any]) -> NormalizedRecord:
        if "Body" in entity:
            body = entity["Body"]
            return decode_body(bytes(body))
        blob = self._oversize.download_blob(entity["BodyBlob"]).readall()
        record: NormalizedRecord = orjson.loads(blob)
        return record

    def get(self, key: RecordKey) -> NormalizedRecord | None:
        try:
            entity = self._records.get_entity(key.partition_key, key.row_key)
        except ResourceNotFoundError:
            return None
        return self.body_of(entity)

    def get_many(
        self, keys: Sequence[RecordKey], parallelism: int = 8
    ) -> list[NormalizedRecord | None]:
        if len(keys) <= 1:
            return [self.get(key) for key in keys]
        with ThreadPoolExecutor(max_workers=parallelism) as pool:
            return list(pool.map(self.get, keys))


def days_between(since: datetime, until: datetime) -> list[str]:
    """Day partitions from `until` back to `since`, newest first."""
    days: list[str] = []
    day = until.replace(hour=0, minute=0, second=0, microsecond=0)
    while day >= since.replace(hour=0, minute=0, second=0, microsecond=0):
        days.append(day_partition(day))
        if day.date() == date.min:
            break  # 0001-01-01: there is no day before it
        day -= timedelta(days=1)
    return days


def months_between(since: datetime, until: datetime) -> list[str]:
    """Month buckets from `until` back to `since`, newest first."""
    months: list[str] = []
    year, month = until.year, until.month
    while (year, month) >= (since.year, since.month):
        months.append(f"{year:04d}{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return months
