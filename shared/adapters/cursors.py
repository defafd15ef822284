"""Table Storage: how far each blob is indexed (its cursor), and the catch-up watermark."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import (
    ResourceNotFoundError,
)
from azure.data.tables import TableClient

from shared.adapters.storage import write_unless_changed
from shared.core.keys import encode_key_value
from shared.core.pt1h import hour_key

log = logging.getLogger(__name__)

# The catch-up watermark's place in the cursor table. Letters sort after every YYYYMMDDHH
# cursor partition, so neither a cursor nor retention's "older than" range can reach it.
WATERMARK_PARTITION = "catchup"
WATERMARK_ROW = "watermark"


@dataclass(slots=True)
class Cursor:
    """How far a blob is indexed. `offset` is always the end of a complete line."""

    blob: str
    hour: str  # YYYYMMDDHH from the path, or "unknown"
    offset: int = 0
    lines: int = 0
    events: int = 0
    indexed: int = 0
    duplicates: int = 0
    deadlettered: int = 0
    blob_etag: str = ""
    last_growth: datetime | None = None
    sealed: bool = False
    etag: str | None = None  # the cursor entity's own ETag, for the conditional write
    created: datetime | None = None  # the blob's creation time when it was last read
    # `{n}:{hash}` of the n bytes before `offset`: a replaced blob no longer has them there.
    tail: str = ""
    # `offset` ends a last line that had no newline: a newline after it ends no new line.
    open_line: bool = False

    @property
    def partition_key(self) -> str:
        return self.hour

    @property
    def row_key(self) -> str:
        return encode_key_value(self.blob)

    def entity(self) -> dict[str, Any]:
        return {
            "PartitionKey": self.partition_key,
            "RowKey": self.row_key,
            "Blob": self.blob,
            "Offset": self.offset,
            "Lines": self.lines,
            "Events": self.events,
            "Indexed": self.indexed,
            "Duplicates": self.duplicates,
            "DeadLettered": self.deadlettered,
            "BlobEtag": self.blob_etag,
            "LastGrowth": self.last_growth,
            "Sealed": self.sealed,
            "Created": self.created,
            "Tail": self.tail,
            "OpenLine": self.open_line,
        }

    @classmethod
    def from_entity(cls, entity: Any) -> Cursor:
        return cls(
            blob=entity["Blob"],
            hour=entity["PartitionKey"],
            offset=int(entity["Offset"]),
            lines=int(entity["Lines"]),
            events=int(entity["Events"]),
            indexed=int(entity["Indexed"]),
            duplicates=int(entity["Duplicates"]),
            deadlettered=int(entity["DeadLettered"]),
            blob_etag=entity.get("BlobEtag", ""),
            last_growth=entity.get("LastGrowth"),
            sealed=bool(entity.get("Sealed", False)),
            etag=entity.metadata.get("etag") if hasattr(entity, "metadata") else None,
            created=entity.get("Created"),
            tail=entity.get("Tail", ""),
            open_line=bool(entity.get("OpenLine", False)),
        )


@dataclass(frozen=True, slots=True)
class Watermark:
    """The hour from which the next catch-up must look; None before the first clean run."""

    hour: datetime | None = None
    etag: str | None = None  # the entity's ETag, for the conditional write; None: not stored


class CursorStore:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    def load(self, blob: str, hour: datetime | None) -> Cursor:
        fresh = Cursor(blob=blob, hour=hour_key(hour))
        try:
            entity = self._table.get_entity(fresh.partition_key, fresh.row_key)
        except ResourceNotFoundError:
            return fresh
        return Cursor.from_entity(entity)

    def save(self, cursor: Cursor) -> bool:
        """Write the cursor if nobody moved it since we read it; False when someone did."""
        metadata = self._write(cursor.entity(), cursor.etag)
        if metadata is None:
            return False
        cursor.etag = metadata.get("etag")
        return True

    def watermark(self) -> Watermark:
        try:
            entity = self._table.get_entity(WATERMARK_PARTITION, WATERMARK_ROW)
        except ResourceNotFoundError:
            return Watermark()
        etag = entity.metadata.get("etag")
        value = entity.get("Hour")
        if not isinstance(value, datetime):
            # Looked at as absent (the recent hours only); the next write replaces it.
            log.error("unreadable catch-up watermark", extra={"watermark": repr(value)})
            return Watermark(None, etag)
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return Watermark(datetime(value.year, value.month, value.day, value.hour, tzinfo=UTC), etag)

    def move_watermark(self, current: Watermark, hour: datetime) -> bool:
        """Set the watermark if nobody moved it since `current` was read; False when someone did."""
        entity = {"PartitionKey": WATERMARK_PARTITION, "RowKey": WATERMARK_ROW, "Hour": hour}
        return self._write(entity, current.etag) is not None

    def _write(self, entity: dict[str, Any], etag: str | None) -> dict[str, Any] | None:
        """Create (etag None) or replace if unchanged; the write's metadata, None on a lost race."""
        return write_unless_changed(self._table, entity, etag)

    def in_hours(self, hours: list[datetime]) -> Iterator[Cursor]:
        for hour in hours:
            for entity in self._table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": hour_key(hour)}
            ):
                try:
                    yield Cursor.from_entity(entity)
                except (KeyError, TypeError, ValueError):
                    # One damaged cursor fails its own blob (when indexed), not the whole scan.
                    log.error("unreadable cursor", extra={"cursor": entity.get("RowKey")})
