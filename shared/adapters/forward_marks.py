"""Which archived records Log Analytics has accepted: mark rows beside the events' claims.

Once Log Analytics accepts records, one row per claim slot (shared.core.archive_keys) lists
their event ids (`f{random}` RowKey, `K` the ids), so a redelivery or a replay does not send
them again. Rows are only ever added: no read-modify-write, no race between two markers.
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from collections.abc import Iterable

from shared.adapters.index_tables import IndexTables
from shared.core.archive_keys import (
    MARK,
    day_of,
    event_id,
    id_chunks,
    month_of,
    pack_ids,
    slot_partition,
    unpack_ids,
)
from shared.core.records import NormalizedRecord

MARK_ATTEMPTS = 4  # inserts of fresh rows: trying again is always safe
FORWARDED = "K"
_MARKS = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"


def _by_slot(records: Iterable[NormalizedRecord]) -> dict[tuple[str, str], dict[bytes, str]]:
    """{(month, slot partition): {event id: EventKey}}."""
    slots: dict[tuple[str, str], dict[bytes, str]] = defaultdict(dict)
    for record in records:
        month = month_of(day_of(record["TimeGenerated"]))
        slot = slot_partition(record["TimeGenerated"])
        slots[(month, slot)][event_id(record["EventKey"])] = record["EventKey"]
    return slots


class ForwardMarks:
    """The forward marks: add, read one, read many."""

    def __init__(self, tables: IndexTables) -> None:
        self._tables = tables

    def mark(self, records: Iterable[NormalizedRecord]) -> None:
        """Record that Log Analytics accepted these, so redelivery does not send them again.

        Tried a few times: failing here after Log Analytics accepted would send them twice.
        """
        by_month: dict[str, list[dict[str, object]]] = defaultdict(list)
        for (month, slot), ids in _by_slot(records).items():
            by_month[month].extend(
                {
                    "PartitionKey": slot,
                    "RowKey": MARK + secrets.token_hex(8),
                    FORWARDED: pack_ids(chunk),
                }
                for chunk in id_chunks(list(ids))
            )
        for attempt in range(MARK_ATTEMPTS):
            try:
                for month, entities in by_month.items():
                    self._tables.upsert(month, entities)
                return
            except Exception:
                if attempt == MARK_ATTEMPTS - 1:
                    raise
                time.sleep(0.5 * 2**attempt)

    def is_forwarded(self, record: NormalizedRecord) -> bool:
        """Whether Log Analytics is marked as having accepted the record, read now."""
        return not self.unforwarded([record])

    def unforwarded(self, records: Iterable[NormalizedRecord]) -> set[str]:
        """EventKeys of these records that Log Analytics has not accepted yet, read now
        (one range read per claim slot)."""
        slots = _by_slot(records)
        found = self._tables.parallel(self._marked_in, list(slots))
        marked = set().union(*found) if found else set()
        return {
            event_key
            for (month, slot), ids in slots.items()
            for key_id, event_key in ids.items()
            if (month, slot, key_id) not in marked
        }

    def _marked_in(self, slot: tuple[str, str]) -> set[tuple[str, str, bytes]]:
        month, partition = slot
        rows = self._tables.query(
            month, _MARKS, {"pk": partition, "low": MARK, "high": "g"}, select=[FORWARDED]
        )
        return {
            (month, partition, marked)
            for row in rows
            for marked in unpack_ids(bytes(row[FORWARDED]))
        }
