"""Blob Storage: an archive blob read by byte ranges, and the shape every byte source has."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError
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

    def read(self, offset: int, length: int) -> bytes:
        """Bytes of the object as the last `properties()` saw it; BlobChanged if it changed
        since (a source that cannot change, a local file, never raises it)."""
        ...


class BlobChanged(Exception):
    """The blob changed (appended to, or replaced) since its properties were read: what was
    checked of it no longer holds for what a read would return. Read it again from the top."""


class ArchiveBlob:
    watched = True

    def __init__(self, container: ContainerClient, name: str) -> None:
        self.name = name
        self._blob = container.get_blob_client(name)
        self._etag: str | None = None

    def properties(self) -> BlobState:
        props = self._blob.get_blob_properties()
        self._etag = str(props.etag)
        return BlobState(int(props.size), str(props.etag), props.last_modified, props.creation_time)

    def read(self, offset: int, length: int) -> bytes:
        # Of the version `properties()` saw (If-Match its ETag): a blob replaced between the
        # indexer's check of it and this read must not hand that check's offset new bytes
        # (found from outside: a fragment dead-lettered, the new blob's first lines never
        # read). An append meanwhile fails the read too: the run starts again, once more.
        # length ≤ the indexer's chunk (1 MiB) < the SDK's single-GET size: one request.
        pinned = MatchConditions.IfNotModified if self._etag else None
        try:
            download = self._blob.download_blob(
                offset=offset,
                length=length,
                max_concurrency=1,
                etag=self._etag,
                match_condition=pinned,
            )
            return download.readall()
        except ResourceModifiedError as error:
            raise BlobChanged(f"{self.name} changed since its properties were read") from error
