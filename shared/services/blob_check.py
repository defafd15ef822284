"""One committed blob read whole and checked against its manifest and metadata (verify)."""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from dataclasses import dataclass

from shared.adapters.archive_store import COUNT, SHA256, ArchiveStore, StoredBlob
from shared.core import eventkey, exact_json
from shared.core.archive_format import decode_lines
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
            # Numbers read as the normalizer read them (exact where a float would round), so
            # the content's key is the one computed when the record was made.
            record = exact_json.loads(line)
        except (*_DAMAGED, RecursionError):
            return f"line {number} is not a JSON object"
        event_key = record.get("EventKey") if isinstance(record, dict) else None
        if not isinstance(event_key, str) or not _EVENT_KEY.fullmatch(event_key):
            return f"line {number} has no EventKey"
        if not eventkey.holds_its_key(record):
            # The EventKey is a hash of the content: a record changed after it was archived
            # (its manifest and metadata re-hashed alike) is still caught here.
            return f"line {number}: its EventKey is not its content's (changed since written)"
        keys.append(event_key)
    return None
