"""The index's month tables (`{prefix}{YYYYMM}`): create, read, write and drop rows.

One adapter over Table storage; what the rows mean is shared.core.archive_keys's. Writes go
in entity-group transactions (one partition, at most 100 entities, under 4 MiB), several at
once. A table that does not exist reads as empty; writing creates it (once per process).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import (
    EdmType,
    EntityProperty,
    TableClient,
    TableServiceClient,
    TableTransactionError,
    UpdateMode,
)

from shared.adapters.table_changesets import Operation, submit
from shared.adapters.thread_pools import side_by_side
from shared.core.archive_keys import index_table

_IF_MATCH = MatchConditions.IfNotModified
MAX_BATCH = 100  # operations per transaction (service limit)
MAX_BATCH_BYTES = 3_500_000  # under the 4 MiB request limit, with room for the envelope
_T = TypeVar("_T")
_R = TypeVar("_R")
Entity = dict[str, Any]


def int64(value: int) -> EntityProperty:
    """A 64-bit integer property (a plain int is sent as 32-bit and refused when larger)."""
    return EntityProperty(value, EdmType.INT64)


def as_int(value: object) -> int:
    """An integer property as read: 64-bit ones come back as EntityProperty."""
    if isinstance(value, EntityProperty):
        value = value.value
    return int(str(value))


def _size(entity: Mapping[str, Any]) -> int:
    return 512 + sum(len(v) * 4 // 3 for v in entity.values() if isinstance(v, bytes))


def transactions(entities: Iterable[Entity]) -> list[list[Entity]]:
    """Entities grouped into transaction-sized batches, each of one partition."""
    by_partition: dict[str, list[Entity]] = defaultdict(list)
    for entity in entities:
        by_partition[entity["PartitionKey"]].append(entity)
    batches: list[list[Entity]] = []
    for rows in by_partition.values():
        batch: list[Entity] = []
        size = 0
        for entity in rows:
            if batch and (len(batch) == MAX_BATCH or size + _size(entity) > MAX_BATCH_BYTES):
                batches.append(batch)
                batch, size = [], 0
            batch.append(entity)
            size += _size(entity)
        if batch:
            batches.append(batch)
    return batches


class IndexTables:
    """The month tables of one store prefix."""

    def __init__(self, service: TableServiceClient, prefix: str, *, parallelism: int = 8) -> None:
        self._service = service
        self.prefix = prefix
        self._parallelism = parallelism
        self._created: set[str] = set()
        self._lock = threading.Lock()

    @property
    def parallelism(self) -> int:
        return self._parallelism

    def table(self, month: str) -> TableClient:
        return self._service.get_table_client(index_table(self.prefix, month))

    def ensure(self, month: str) -> TableClient:
        """The month's table, created if it does not exist yet (once per process)."""
        name = index_table(self.prefix, month)
        if name not in self._created:
            self._service.create_table_if_not_exists(name)
            with self._lock:
                self._created.add(name)
        return self._service.get_table_client(name)

    def months(self) -> list[str]:
        """Every month that has a table, oldest first."""
        low, high = self.prefix + "0", self.prefix + ":"  # ":" sorts right after "9"
        names = self._service.query_tables(
            "TableName ge @low and TableName lt @high", parameters={"low": low, "high": high}
        )
        months = [t.name[len(self.prefix) :] for t in names]
        return sorted(m for m in months if len(m) == 6 and m.isdigit())  # noqa: PLR2004

    def drop(self, month: str) -> None:
        self._service.delete_table(index_table(self.prefix, month))
        with self._lock:
            self._created.discard(index_table(self.prefix, month))

    # --- reads ---------------------------------------------------------------------------

    def query(
        self,
        month: str,
        query_filter: str,
        parameters: Mapping[str, Any],
        select: list[str] | None = None,
        page_size: int | None = None,
    ) -> Iterator[Entity]:
        """Rows of a month matching a filter with bound parameters; none if no table."""
        rows = self.table(month).query_entities(
            query_filter, parameters=dict(parameters), select=select, results_per_page=page_size
        )
        try:
            yield from rows
        except ResourceNotFoundError:
            return

    def get(self, month: str, partition: str, row: str) -> Entity | None:
        try:
            return dict(self.table(month).get_entity(partition, row))
        except ResourceNotFoundError:
            return None

    def read(self, month: str, partition: str, row: str) -> tuple[Entity, str, datetime] | None:
        """A row with its ETag and the service's time of its last write; None if none."""
        try:
            entity = self.table(month).get_entity(partition, row)
        except ResourceNotFoundError:
            return None
        written = entity.metadata["timestamp"]
        assert written is not None  # the service stamps every entity
        return dict(entity), str(entity.metadata["etag"]), written

    # --- conditional writes: what fences a write (shared.services.instances) ----------------

    def _on_table(self, month: str, work: Callable[[TableClient], _R]) -> _R:
        """`work` on the month's table, made if need be. A table this process made may have
        been dropped since (retention, in another worker): a write that finds it gone wrote
        nothing, so the table is made again and the write done once more."""
        try:
            return work(self.ensure(month))
        except (TableTransactionError, ResourceNotFoundError) as error:
            if getattr(error, "error_code", None) != "TableNotFound":
                raise
        with self._lock:
            self._created.discard(index_table(self.prefix, month))
        return work(self.ensure(month))

    def insert_rows(self, month: str, entities: Sequence[Entity]) -> list[str]:
        """Insert rows of one partition in one transaction; their ETags. Raises the service's
        EntityAlreadyExists error when any of them exists (then none was inserted)."""
        rows: list[Operation] = [("create", entity) for entity in entities]
        return self._on_table(month, lambda table: submit(table, rows))

    def replace_if(self, month: str, entity: Entity, etag: str) -> str | None:
        """Replace a row only if its ETag is still `etag` (If-Match): its new ETag, or None
        when the row changed or went meanwhile. https://learn.microsoft.com/rest/api/
        storageservices/update-entity2: a 412 Precondition Failed means another write came
        between."""
        try:
            answer = self.table(month).update_entity(
                entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=_IF_MATCH
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return str(answer["etag"])

    def replace_all_if(self, month: str, rows: Sequence[tuple[Entity, str]]) -> list[str] | None:
        """Replace rows of one partition (at most 100) in one transaction, each only if its
        ETag is still the one given: their new ETags, or None when the transaction was
        refused (a row changed or went meanwhile): then none was replaced."""
        operations: list[Operation] = [("replace", entity, etag) for entity, etag in rows]
        try:
            return submit(self.table(month), operations)
        except (TableTransactionError, ResourceModifiedError, ResourceNotFoundError):
            return None

    # --- writes --------------------------------------------------------------------------

    def upsert(self, month: str, entities: Sequence[Entity]) -> None:
        """Insert or replace (idempotent), in transactions run side by side."""

        def upsert(table: TableClient) -> None:
            self.parallel(
                lambda batch: submit(table, [("upsert", entity) for entity in batch]),
                transactions(entities),
            )

        self._on_table(month, upsert)

    def create(self, month: str, entities: Sequence[Entity]) -> dict[tuple[str, str], Entity]:
        """Insert rows that do not exist yet; the keys of those that did, by (PartitionKey,
        RowKey)."""

        def create(table: TableClient) -> dict[tuple[str, str], Entity]:
            found: dict[tuple[str, str], Entity] = {}
            batches = transactions(entities)
            for batch_found in self.parallel(lambda b: _create_batch(table, b), batches):
                found.update(batch_found)
            return found

        return self._on_table(month, create)

    def append(self, month: str, entities: Sequence[Entity]) -> None:
        """Insert rows of one partition in one transaction: all or none. Raises the
        service's EntityAlreadyExists error when any of them exists."""
        rows: list[Operation] = [("create", entity) for entity in entities]
        self._on_table(month, lambda table: submit(table, rows))

    def delete(self, month: str, keys: Sequence[Mapping[str, Any]]) -> None:
        """Delete rows by key, a transaction per partition and hundred; gone is no error."""
        table = self.table(month)
        rows = [{"PartitionKey": k["PartitionKey"], "RowKey": k["RowKey"]} for k in keys]

        def delete(batch: list[Entity]) -> None:
            try:
                submit(table, [("delete", entity) for entity in batch])
            except (TableTransactionError, ResourceNotFoundError) as error:
                if getattr(error, "error_code", None) not in ("ResourceNotFound", "TableNotFound"):
                    raise
                for entity in batch:
                    try:
                        table.delete_entity(entity["PartitionKey"], entity["RowKey"])
                    except ResourceNotFoundError:
                        continue

        self.parallel(delete, transactions(rows))

    def parallel(self, work: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
        return side_by_side(work, items, self._parallelism)


def _create_batch(table: TableClient, batch: list[Entity]) -> dict[tuple[str, str], Entity]:
    """Create a batch's rows; the rows that already existed (created by no one here)."""
    pending = batch
    existing: dict[tuple[str, str], Entity] = {}
    for _ in range(5):
        if not pending:
            return existing
        try:
            submit(table, [("create", entity) for entity in pending])
            return existing
        except (TableTransactionError, ResourceExistsError) as error:
            if getattr(error, "error_code", None) != "EntityAlreadyExists":
                raise
        # Some rows exist (a redelivery, another path, another instance): read which, in one
        # range query over the batch's keys, and create only the rest.
        partition = pending[0]["PartitionKey"]
        wanted = {entity["RowKey"] for entity in pending}
        rows = table.query_entities(
            "PartitionKey eq @pk and RowKey ge @low and RowKey le @high",
            parameters={"pk": partition, "low": min(wanted), "high": max(wanted)},
            select=["PartitionKey", "RowKey"],
        )
        found = {row["RowKey"]: dict(row) for row in rows if row["RowKey"] in wanted}
        existing.update({(partition, row): value for row, value in found.items()})
        pending = [entity for entity in pending if entity["RowKey"] not in found]
    raise RuntimeError("an index table kept reporting conflicts for one batch")
