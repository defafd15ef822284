"""One committed blob read whole and checked against its manifest and metadata (verify)."""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from dataclasses import dataclass

from shared.adapters.archive_store import COUNT, SHA256, ArchiveStore, StoredBlob
from shared.core.archive_format import decode_lines, decode_record
from shared.core.archive_keys import BlobRef
from shared.services.archive_read import Manifest

_EVENT_KEY = re.compile(r"[0-9a-f]{32}")
# What damaged bytes raise when decoded (orjson's JSONDecodeError is a ValueError).
_DAMAGED = (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError, TypeError)


@dataclass(frozen=True, slots=True)
class Checked:
    """One committed blob as read: its size, and its EventKeys or what is wrong with it."""

    ref: BlobRef
    size: int
    event_keys: list[str]
    missing: bool = False
    altered: str | None = None


def check_blob(archive: ArchiveStore, manifest: Manifest, stored: StoredBlob | None) -> Checked:
    """Read one committed blob whole and check it against its manifest and metadata."""
    ref = manifest.ref
    data = archive.read(ref.name) if stored is not None else None
    if stored is None or data is None:
        return Checked(ref, 0, [], missing=True)
    keys: list[str] = []
    problem = _bytes_problem(data, manifest, stored) or _lines_problem(data, manifest, keys)
    return Checked(ref, len(data), [] if problem else keys, altered=problem)


def _bytes_problem(data: bytes, manifest: Manifest, stored: StoredBlob) -> str | None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.sha256:
        return "its SHA-256 is not the manifest's"
    if stored.metadata.get(SHA256) != digest:
        return "its SHA-256 is not its metadata's"
    if stored.metadata.get(COUNT, str(manifest.count)) != str(manifest.count):
        said = stored.metadata[COUNT]
        return f"its metadata says {said!r} records, the manifest {manifest.count}"
    if manifest.offsets and manifest.offsets[-1] != len(data):
        return f"{len(data)} bytes, the manifest says {manifest.offsets[-1]}"
    return None


def _lines_problem(data: bytes, manifest: Manifest, keys: list[str]) -> str | None:
    """What is wrong with a blob's lines, if anything; their EventKeys go to `keys`."""
    try:
        lines = decode_lines(data)
    except _DAMAGED as error:
        return f"not gzip JSON lines: {error}"
    if len(lines) != manifest.count:
        return f"{len(lines)} lines, N is {manifest.count}"
    for number, line in enumerate(lines, start=1):
        try:
            event_key = decode_record(line).get("EventKey")
        except _DAMAGED:
            return f"line {number} is not a JSON object"
        if not isinstance(event_key, str) or not _EVENT_KEY.fullmatch(event_key):
            return f"line {number} has no EventKey"
        keys.append(event_key)
    return None
