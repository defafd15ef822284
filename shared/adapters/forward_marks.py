"""Which archived records Log Analytics has accepted: a mark on each record's key row.

Once Log Analytics accepts a record, `F: True` is merged into its key row (shared.core.
archive_keys), so a redelivery or a replay does not send it again. A key row without the mark
is not forwarded yet: the archive writer claims events knowing nothing of forwarding.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator

from shared.adapters.index_tables import IndexTables
from shared.core.archive_keys import category_class, day_of, key_row, month_of
from shared.core.records import NormalizedRecord

MARK_ATTEMPTS = 4  # merges are idempotent: trying again is always safe
FORWARDED = "F"
_BATCH = 100
_FILTER_RANGE = "PartitionKey eq @pk and RowKey ge @low and RowKey le @high"


def _key_rows(records: Iterable[NormalizedRecord]) -> dict[tuple[str, str], dict[str, str]]:
    """{(month, PartitionKey): {RowKey: EventKey}}, one entry per record."""
    rows: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for record in records:
        day = day_of(record["TimeGenerated"])
        partition, row = key_row(record["EventKey"], category_class(record["CategoryValue"]), day)
        rows[(month_of(day), partition)][row] = record["EventKey"]
    return rows


def _groups(
    rows: dict[tuple[str, str], dict[str, str]],
) -> Iterator[tuple[str, str, list[str]]]:
    """(month, partition, up to 100 of its row keys in order): each a narrow RowKey range."""
    for (month, partition), keys in rows.items():
        ordered = sorted(keys)
        for start in range(0, len(ordered), _BATCH):
            yield month, partition, ordered[start : start + _BATCH]


class ForwardMarks:
    """The forward marks on the key rows: set, read one, read many."""

    def __init__(self, tables: IndexTables) -> None:
        self._tables = tables

    def mark(self, records: Iterable[NormalizedRecord]) -> None:
        """Record that Log Analytics accepted these, so redelivery does not send them again.

        Tried a few times: failing here after Log Analytics accepted would send them twice.
        """
        by_month: dict[str, list[dict[str, object]]] = defaultdict(list)
        for (month, partition), keys in _key_rows(records).items():
            by_month[month].extend(
                {"PartitionKey": partition, "RowKey": row, FORWARDED: True} for row in keys
            )
        for attempt in range(MARK_ATTEMPTS):
            try:
                for month, entities in by_month.items():
                    # Merge, never upsert: a mark must not make a key row for a record that
                    # retention deleted before its dead letter was replayed.
                    self._tables.merge_existing(month, entities)
                return
            except Exception:
                if attempt == MARK_ATTEMPTS - 1:
                    raise
                time.sleep(0.5 * 2**attempt)

    def is_forwarded(self, record: NormalizedRecord) -> bool:
        """Whether the index marks the record as accepted by Log Analytics, read now."""
        return not self.unforwarded([record])

    def unforwarded(self, records: Iterable[NormalizedRecord]) -> set[str]:
        """EventKeys of these records that Log Analytics has not accepted yet, read now.

        One range read per partition and hundred rows. A key row without the mark, or no key
        row at all, is not forwarded.
        """
        rows = _key_rows(records)
        groups = list(_groups(rows))
        found = self._tables.parallel(self._forwarded_of, groups)
        forwarded = set().union(*found) if found else set()
        return {
            event_key
            for (month, partition), keys in rows.items()
            for row, event_key in keys.items()
            if (month, partition, row) not in forwarded
        }

    def _forwarded_of(self, group: tuple[str, str, list[str]]) -> set[tuple[str, str, str]]:
        month, partition, keys = group
        wanted = set(keys)
        found = self._tables.query(
            month,
            _FILTER_RANGE,
            {"pk": partition, "low": keys[0], "high": keys[-1]},
            select=["RowKey", FORWARDED],
        )
        return {
            (month, partition, row["RowKey"])
            for row in found
            if row["RowKey"] in wanted and row.get(FORWARDED)
        }
