"""One committed blob read whole and checked against its manifest and metadata (verify)."""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from dataclasses import dataclass
from itertools import pairwise

from shared.adapters.archive_store import COUNT, SHA256, ArchiveStore, StoredBlob
from shared.core.archive_format import decode_lines, decode_record
from shared.core.archive_keys import BlobRef
from shared.core.keys import LOOKUP_COLUMNS, parse_canonical_time
from shared.services.archive_read import Manifest
from shared.services.archive_write import posted_kinds

_EVENT_KEY = re.compile(r"[0-9a-f]{32}")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{7}Z")
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
    # The posting kinds its records have a value of: each must have a posting row naming it.
    kinds: frozenset[str] = frozenset()


def check_blob(archive: ArchiveStore, manifest: Manifest, stored: StoredBlob | None) -> Checked:
    """Read one committed blob whole and check it against its manifest and metadata."""
    ref = manifest.ref
    data = archive.read(ref.name) if stored is not None else None
    if stored is None or data is None:
        return Checked(ref, 0, [], missing=True)
    keys: list[str] = []
    kinds: set[str] = set()
    problem = _bytes_problem(data, manifest, stored) or _lines_problem(data, manifest, keys, kinds)
    return Checked(ref, len(data), [] if problem else keys, altered=problem, kinds=frozenset(kinds))


def _bytes_problem(data: bytes, manifest: Manifest, stored: StoredBlob) -> str | None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.sha256:
        return "its SHA-256 is not the manifest's"
    if stored.metadata.get(SHA256) != digest:
        return "its SHA-256 is not its metadata's"
    # Every blob the app writes carries its count (archive_store.COUNT): removing it is a change.
    said = stored.metadata.get(COUNT)
    if said != str(manifest.count):
        if said is None:
            return f"its metadata has no {COUNT!r} count, the manifest says {manifest.count}"
        return f"its metadata says {said[:32]!r} records, the manifest {manifest.count}"
    if manifest.offsets and manifest.offsets[-1] != len(data):
        return f"{len(data)} bytes, the manifest says {manifest.offsets[-1]}"
    return None


def _lines_problem(data: bytes, manifest: Manifest, keys: list[str], kinds: set[str]) -> str | None:
    """What is wrong with a blob's lines, if anything; their EventKeys go to `keys`, and the
    posting kinds they have values of (as the writer posts them) to `kinds`."""
    lines = _member_lines(data, manifest)  # each member gunzipped once, the blob not again
    if not isinstance(lines, list):
        try:
            whole = decode_lines(data)
        except _DAMAGED as error:
            return f"not gzip JSON lines: {error}"
        if lines is not None:
            return lines
        lines = whole
    if len(lines) != manifest.count:
        return f"{len(lines)} lines, N is {manifest.count}"
    times: list[str] = []
    for number, line in enumerate(lines, start=1):
        problem = _line_problem(number, line, keys, kinds, times)
        if problem is not None:
            return problem
    return _span_problem(manifest, times)


def _member_lines(data: bytes, manifest: Manifest) -> list[bytes] | str | None:
    """The blob's lines, member by member, when the manifest's gzip members (offsets O,
    records per member M) are the blob's; else what is wrong with them (a lookup reads a
    record by them alone, so another layout makes it skip records); None without offsets."""
    offsets, size = manifest.offsets, manifest.member_records
    if not offsets:
        return None  # written before offsets were kept: read whole
    members = -(-manifest.count // size) if size > 0 else -1
    if offsets[0] != 0 or len(offsets) != members + 1:
        return (
            f"its manifest's {len(offsets) - 1} gzip members do not hold {manifest.count} records"
        )
    lines: list[bytes] = []
    for number, (start, end) in enumerate(pairwise(offsets)):
        want = min(size, manifest.count - number * size)
        try:
            member = decode_lines(data[start:end]) if start < end else []
        except _DAMAGED:
            member = []
        if len(member) != want or not member:
            return f"gzip member {number} at its manifest's offsets is not {want} whole records"
        lines += member
    return lines


def _line_problem(
    number: int, line: bytes, keys: list[str], kinds: set[str], times: list[str]
) -> str | None:
    try:
        record = decode_record(line)
    except _DAMAGED:
        return f"line {number} is not a JSON object"
    moment = record.get("TimeGenerated")
    if not isinstance(moment, str) or not _TIME.fullmatch(moment):
        return f"line {number} has no TimeGenerated"
    times.append(moment)
    event_key = record.get("EventKey")
    if len(kinds) < len(LOOKUP_COLUMNS):
        kinds.update(posted_kinds(record))
    if not isinstance(event_key, str) or not _EVENT_KEY.fullmatch(event_key):
        return f"line {number} has no EventKey"
    keys.append(event_key)
    return None


def _span_problem(manifest: Manifest, times: list[str]) -> str | None:
    """A listing skips a blob by its manifest's span: a span moved off the records hides them."""
    if not times:
        return None
    low, high = min(times), max(times)  # canonical times: text order is time order
    try:
        span = (parse_canonical_time(low)[1], parse_canonical_time(high)[1])
    except ValueError:
        return f"a TimeGenerated that is no time ({low} to {high})"
    if span != (manifest.low_ticks, manifest.high_ticks):
        return f"its manifest's time span is not its records' ({low} to {high})"
    return None
