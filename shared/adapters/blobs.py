"""Blob Storage: an archive blob read by byte ranges, and the shape every byte source has."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from azure.storage.blob import ContainerClient


@dataclass(frozen=True, slots=True)
class BlobState:
    """What a blob's properties say now; `created` is None where the store does not say."""

    size: int
    etag: str
    last_modified: datetime
    created: datetime | None = None


class ByteSource(Protocol):
    """An append-only object read by ranges: an archive blob, or a file in a local copy."""

    name: str
    # In the container the catch-up timer lists (growth after a read is read again): a blob
    # under a name it would not list is reported outside the layout.
    watched: bool

    def properties(self) -> BlobState: ...

    def read(self, offset: int, length: int) -> bytes: ...


class ArchiveBlob:
    watched = True

    def __init__(self, container: ContainerClient, name: str) -> None:
        self.name = name
        self._blob = container.get_blob_client(name)

    def properties(self) -> BlobState:
        props = self._blob.get_blob_properties()
        return BlobState(int(props.size), str(props.etag), props.last_modified, props.creation_time)

    def read(self, offset: int, length: int) -> bytes:
        # length ≤ the indexer's chunk (1 MiB) < the SDK's single-GET size: one request, no
        # ETag lock.
        return self._blob.download_blob(offset=offset, length=length, max_concurrency=1).readall()
