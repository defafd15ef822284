"""The app's record archive: immutable gzip JSON Lines block blobs in a container of its own.

Blobs are uploaded once, directly at the configured access tier (Cold by default: written
once, read rarely, and still online, unlike Archive; https://learn.microsoft.com/azure/storage/
blobs/access-tiers-overview), with their SHA-256 and record count as metadata so that anyone
can check them without the index. Deletion is by whole blobs, 256 to a batch request.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from azure.core.exceptions import (
    DecodeError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceResponseError,
)
from azure.core.rest import HttpRequest
from azure.storage.blob import ContainerClient, StandardBlobTier

from shared.core.archive_format import EncodedBlob

SHA256 = "sha256"
COUNT = "records"
MAX_DELETE_BATCH = 256  # sub-requests per blob batch (service limit)
_READ_ATTEMPTS = 3


class BlobNameTaken(RuntimeError):
    """An upload found other bytes under its name: nothing is ever written over them."""


@dataclass(frozen=True, slots=True)
class StoredBlob:
    name: str
    size: int
    last_modified: datetime
    metadata: dict[str, str]


class ArchiveStore:
    def __init__(self, container: ContainerClient, tier: str = "Cold") -> None:
        self._container = container
        self._tier = StandardBlobTier(tier)

    @property
    def name(self) -> str:
        return str(self._container.container_name)

    def ensure(self) -> None:
        try:
            self._container.create_container()
        except ResourceExistsError:
            return

    def put(self, name: str, blob: EncodedBlob) -> None:
        """Upload a blob that must not exist yet (If-None-Match: *): blob names are never
        reused, so a name already there is this upload's own, applied before its answer was
        lost (the SDK retried it), and holds the same bytes. Never overwrites: different
        bytes there raise BlobNameTaken."""
        metadata = {SHA256: blob.sha256, COUNT: str(blob.count)}
        client = self._container.get_blob_client(name)
        try:
            client.upload_blob(
                blob.data, metadata=metadata, standard_blob_tier=self._tier, overwrite=False
            )
            return
        except ResourceExistsError:
            pass
        found = client.get_blob_properties().metadata.get(SHA256)
        if found != blob.sha256:
            raise BlobNameTaken(f"{name} holds other bytes (SHA-256 {found}): not replaced")

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes | None:
        """A blob's bytes (or a range of them); None when it does not exist.

        One GET through the container client's own pipeline (its credential, retries,
        headers and hooks), not `download_blob`: the downloader builds a blob client and
        deserializes some fifty response headers into models a read never looks at, twice
        the CPU of the request itself (1.6 against 0.8 ms a ranged read, measured on
        Azurite), and an export is CPU-bound on exactly these reads (bench/bench_api.py)."""
        headers = {"x-ms-version": self._container.api_version}
        if length is not None:
            if length <= 0:
                return b""
            headers["x-ms-range"] = f"bytes={offset}-{offset + length - 1}"
        base, _, query = self._container.url.partition("?")
        url = f"{base}/{quote(name, safe='~/')}" + (f"?{query}" if query else "")
        for attempt in range(_READ_ATTEMPTS):
            response = self._container._pipeline.run(
                HttpRequest("GET", url, headers=headers), stream=True
            ).http_response
            try:
                data = bytes(response.read())
            except (HttpResponseError, DecodeError, ServiceResponseError):
                # Cut off after its headers, which the pipeline's retries do not cover (the
                # errors the SDK's downloader reads again on; IncompleteReadError is one).
                if attempt + 1 == _READ_ATTEMPTS:
                    raise
                continue
            if response.status_code in (200, 206):  # whole, or a range
                return data
            if response.status_code == 404:  # noqa: PLR2004 - the blob or its container
                return None
            raise HttpResponseError(response=response)
        raise AssertionError("unreachable")

    def blobs(self, prefix: str = "") -> Iterator[StoredBlob]:
        try:
            for blob in self._container.list_blobs(name_starts_with=prefix, include=["metadata"]):
                yield StoredBlob(
                    blob.name, blob.size, blob.last_modified, dict(blob.metadata or {})
                )
        except ResourceNotFoundError:
            return

    def folders(self, prefix: str) -> list[str]:
        """The `folder/` names right under a prefix (one listing with a delimiter)."""
        try:
            items = self._container.walk_blobs(name_starts_with=prefix, delimiter="/")
            return [item.name for item in items if item.name.endswith("/")]
        except ResourceNotFoundError:
            return []

    def delete(self, names: Sequence[str]) -> dict[str, str]:
        """Delete blobs, 256 to a request; {name: error code} of those that could not go.

        A blob already gone is deleted; a protected one (immutability policy, legal hold,
        lease) is reported, never raised: retention skips it.
        """
        refused: dict[str, str] = {}
        for start in range(0, len(names), MAX_DELETE_BATCH):
            batch = list(names[start : start + MAX_DELETE_BATCH])
            responses = self._container.delete_blobs(*batch, raise_on_any_failure=False)
            for name, response in zip(batch, responses, strict=True):
                if response.status_code in (200, 202, 404):
                    continue
                refused[name] = _error_code(response)
        return refused


def _error_code(response: object) -> str:
    headers = getattr(response, "headers", {}) or {}
    code = headers.get("x-ms-error-code") if hasattr(headers, "get") else None
    return str(code or f"HTTP {getattr(response, 'status_code', '?')}")
