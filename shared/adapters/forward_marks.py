"""Which indexed records Log Analytics has accepted: a mark on each record's row.

Once Log Analytics accepts a record, `Forwarded: True` is merged into its row in the records
table, so a redelivery or a replay does not send it again. A row without the mark (or with
`Forwarded: False`, as rows written before the mark moved here have) is not forwarded yet: the
index writer creates rows knowing nothing of forwarding.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from shared.core.keys import MAX_BATCH, RecordKey
from shared.core.records import NormalizedRecord

MARK_ATTEMPTS = 4  # merges are idempotent: trying again is always safe
FORWARDED = "Forwarded"
_FILTER_RANGE = "PartitionKey eq @pk and RowKey ge @low and RowKey le @high"
_In = TypeVar("_In")
_Out = TypeVar("_Out")


def _by_partition(records: Iterable[NormalizedRecord]) -> dict[str, dict[str, str]]:
    """Row keys (each with its record's EventKey) by day partition, one entry per record."""
    partitions: dict[str, dict[str, str]] = defaultdict(dict)
    for record in records:
        key = RecordKey.of(record)
        partitions[key.partition_key][key.row_key] = record["EventKey"]
    return partitions


def _groups(partitions: dict[str, dict[str, str]]) -> Iterator[tuple[str, list[str]]]:
    """(partition, up to MAX_BATCH of its row keys in order): each a narrow RowKey range."""
    for partition, rows in partitions.items():
        row_keys = sorted(rows)
        for start in range(0, len(row_keys), MAX_BATCH):
            yield partition, row_keys[start : start + MAX_BATCH]


class ForwardMarks:
    """The forward marks on the records table's rows: set, read one, read many."""

    def __init__(self, records: TableClient, *, parallelism: int = 4) -> None:
        self._records = records
        self._parallelism = parallelism

    def mark(self, records: Iterable[NormalizedRecord]) -> None:
        """Record that Log Analytics accepted these, so redelivery does not send them again.

        Tried a few times: failing here after Log Analytics accepted would send them twice.
        """
        batches = list(_groups(_by_partition(records)))
        for attempt in range(MARK_ATTEMPTS):
            try:
                self._run_parallel(self._merge_batch, batches)
                return
            except Exception:
                if attempt == MARK_ATTEMPTS - 1:
                    raise
                time.sleep(0.5 * 2**attempt)

    def is_forwarded(self, record: NormalizedRecord) -> bool:
        """Whether the index marks the record as accepted by Log Analytics, read now."""
        key = RecordKey.of(record)
        try:
            row = self._records.get_entity(key.partition_key, key.row_key, select=[FORWARDED])
        except ResourceNotFoundError:
            return False
        return bool(row.get(FORWARDED, False))

    def unforwarded(self, records: Iterable[NormalizedRecord]) -> set[str]:
        """EventKeys of these records that Log Analytics has not accepted yet, read now.

        Meant for records whose row already existed (a write's duplicates): one range read per
        partition and hundred rows. A row without the mark, or no row at all, is not forwarded.
        """
        partitions = _by_partition(records)
        found = self._run_parallel(self._forwarded_of, list(_groups(partitions)))
        forwarded = set().union(*found)
        return {
            event_key
            for rows in partitions.values()
            for row_key, event_key in rows.items()
            if row_key not in forwarded
        }

    def _forwarded_of(self, group: tuple[str, list[str]]) -> set[str]:
        """The row keys of the group that carry the mark."""
        partition, row_keys = group
        wanted = set(row_keys)
        rows = self._records.query_entities(
            _FILTER_RANGE,
            parameters={"pk": partition, "low": row_keys[0], "high": row_keys[-1]},
            select=["RowKey", FORWARDED],
        )
        return {row["RowKey"] for row in rows if row["RowKey"] in wanted and row.get(FORWARDED)}

    def _merge_batch(self, group: tuple[str, list[str]]) -> None:
        # Update, never upsert: a mark must not create a row without its body (say, for a
        # record that retention deleted before a dead letter was replayed).
        partition, row_keys = group
        entities = [
            {"PartitionKey": partition, "RowKey": row_key, FORWARDED: True} for row_key in row_keys
        ]
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

    def _run_parallel(self, work: Callable[[_In], _Out], batches: Sequence[_In]) -> list[_Out]:
        if len(batches) <= 1 or self._parallelism <= 1:
            return [work(batch) for batch in batches]
        with ThreadPoolExecutor(max_workers=self._parallelism) as pool:
            return list(pool.map(work, batches))
