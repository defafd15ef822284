"""What the archive holds, read the way an engine would (committed blobs only), for tests."""

from __future__ import annotations

from typing import Any

from shared.adapters.archive_store import ArchiveStore
from shared.adapters.index_tables import IndexTables, as_int
from shared.bootstrap import Runtime
from shared.core.archive_keys import (
    BlobRef,
    places_of,
    posting_ref,
)
from shared.core.records import NormalizedRecord
from shared.services.archive_read import Place
from shared.services.archive_write import ArchiveWriter
from shared.settings import Settings


def committed_blobs(app: Runtime) -> list[BlobRef]:
    """Every archive blob that has its manifest row (committed), in name order."""
    refs = []
    for blob in app.archive.blobs():
        ref = BlobRef.of_name(blob.name)
        if ref is not None and app.reader.manifest(ref) is not None:
            refs.append(ref)
    return refs


def archived_records(app: Runtime) -> list[NormalizedRecord]:
    """Every record in every committed blob, duplicates included (a test checks there are none)."""
    records: list[NormalizedRecord] = []
    for ref in committed_blobs(app):
        found = app.reader.blob_records(ref)
        assert isinstance(found, list), f"{ref.name} cannot be read: {found}"
        records.extend(found)
    return records


def archived_keys(app: Runtime) -> list[str]:
    """EventKeys of every archived record, sorted, duplicates kept."""
    return sorted(record["EventKey"] for record in archived_records(app))


def index_rows(app: Runtime, kind: str = "") -> list[dict[str, Any]]:
    """Every row of every month table whose PartitionKey starts with `kind` (all when "")."""
    rows: list[dict[str, Any]] = []
    for month in app.tables.months():
        for row in app.tables.query(month, "PartitionKey ge @low", {"low": kind or "0"}):
            if row["PartitionKey"].startswith(kind):
                rows.append(dict(row))
    return rows


def forwarded_keys(app: Runtime) -> set[str]:
    """EventKeys of archived records that the forward marks say Log Analytics accepted."""
    records = archived_records(app)
    unforwarded = app.marks.unforwarded(records)
    return {record["EventKey"] for record in records} - unforwarded


def posting_places(app: Runtime, kind: str, value: str) -> list[Place]:
    """Where one key value's posting rows say its records are: (blob, ordinal), every month
    (its whole posting partition read, each row's entries for the value taken)."""
    places: list[Place] = []
    for month in app.tables.months():
        rows = app.tables.query(month, "PartitionKey eq @pk", {"pk": kind})
        for row in rows:
            ref = posting_ref(month, row["RowKey"])
            places.extend((ref, ordinal) for _, ordinal in places_of(bytes(row["E"]), value))
    return places


def unreachable_writer(settings: Settings) -> ArchiveWriter:
    """An archive whose table and blob endpoints refuse connections: storage is down."""
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient

    from shared.tools.azurite import connection_string

    dead = connection_string(1, 1, 1)
    tables = TableServiceClient.from_connection_string(dead, retry_total=0)
    blobs = BlobServiceClient.from_connection_string(dead, retry_total=0)
    return ArchiveWriter(
        IndexTables(tables, settings.index_table_prefix),
        ArchiveStore(blobs.get_container_client(settings.records_container)),
    )


def claim_rows(app: Runtime, ref: BlobRef) -> list[dict[str, Any]]:
    """The claim rows naming a blob."""
    rows = app.tables.query(
        ref.month,
        "PartitionKey ge @low and PartitionKey lt @high and RowKey ge @first and RowKey lt @after",
        {"low": f"k{ref.day.day:02d}", "high": f"k{ref.day.day:02d}~", "first": "c", "after": "d"},
    )
    return [dict(row) for row in rows if as_int(row["B"]) == ref.blob_id]


def blob_of(app: Runtime, event_key: str) -> BlobRef:
    """The committed blob that holds an event (blob ids are random: found, not predicted)."""
    for ref in committed_blobs(app):
        found = app.reader.blob_records(ref)
        if isinstance(found, list) and any(r["EventKey"] == event_key for r in found):
            return ref
    raise AssertionError(f"no committed blob holds {event_key}")
