"""Compacted postings: a closed day's posting rows merged into runs sorted by value hash. Pure.

A write's posting rows (shared.core.archive_keys) are *fresh*: cheap to write, but a value's
lookup reads its bucket's rows of every blob. Once a day is closed, compaction (shared.
services.compaction) merges them, one *unit* at a time: a day, a kind and a hash prefix (the
first hex digit of the value hash, sixteen units a kind a day, so a unit of a 100-million-
event day is a few tens of MB). A unit's run holds its values in hash order, so a value's
lookup is one range read a day that returns the row (or the few rows) holding it, whatever
else the day holds. This is how LSM stores and search engines merge segments.

* state row, one a day: PartitionKey `z`, RowKey `{DD}`; `R` the units' committed runs, `W`
  runs being written (invisible to lookups), `O` runs replaced and not yet deleted: each 80
  slots of 8 bytes (kind by kind, prefix by prefix; 0 is none). Every change is conditional
  on the row's ETag, so two merges of one day never both commit, and a merge paused past any
  timeout fails its commit.
* run rows: PartitionKey `y{kind}{DD}`, RowKey `{run}{last hash}{part}`: `{run}` the run id
  (13 base32 characters), `{last hash}` the hex hash of the row's last value, `{part}` two hex
  digits numbering rows that end on one value (a value with more places than a row holds
  spans rows). A run's last row is `{run}~`, so every hash has a row at or after it. `E`
  holds, for each value of the row, its hash and, per blob, its places.

A lookup of hash h reads rows from `{run}{h}` on, until a row that ends past h.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date

from shared.core.archive_keys import (
    CODE_CLASSES,
    VALUE_HASH_BYTES,
    BlobRef,
    id_text,
    unpack_entries,
)
from shared.core.keys import LOOKUP_COLUMNS

STATE_PARTITION = "z"
RUN = "R"
WRITING = "W"
REPLACED = "O"
RUN_ROW = "y"
LAST_ROW = "~"
PREFIXES = 16  # units a kind a day: the first hex digit of the value hash
ROW_BYTES = 2_048  # a run row's `E` aims at this: a lookup reads about one row a day
# A run's rows from a hash on (or a whole run), the run's last row `{run}~` included.
FILTER_RUN = "PartitionKey eq @pk and RowKey ge @low and RowKey le @high"
_HEAD = struct.Struct(">6sH")  # value hash, number of blob pieces
_BLOB = struct.Struct(">cQH")  # class code, blob id, number of places
_ENTRY_BYTES = 4
_ID_CHARS = 13
_PLACES_A_PIECE = (ROW_BYTES - _HEAD.size - _BLOB.size) // _ENTRY_BYTES
_KINDS = tuple(LOOKUP_COLUMNS)
_SLOT = struct.Struct(">Q")

Places = list[tuple[int, int]]  # (second of day, ordinal in the blob)
# value hash -> blob -> its places, packed (4 bytes each, as posting rows hold them)
Postings = dict[bytes, dict[BlobRef, bytes]]
Unit = tuple[str, int]  # (kind, hash prefix)


def prefix_of(digest: bytes) -> int:
    return digest[0] >> 4


def units() -> list[Unit]:
    return [(kind, prefix) for kind in _KINDS for prefix in range(PREFIXES)]


def state_row(day: date) -> str:
    return f"{day.day:02d}"


def run_partition(kind: str, day: date) -> str:
    return f"{RUN_ROW}{kind}{day.day:02d}"


def run_prefix(run: int) -> str:
    return id_text(run)


def run_bounds(run: int) -> tuple[str, str]:
    """RowKey range [low, high] of every row of a run."""
    prefix = run_prefix(run)
    return prefix, prefix + LAST_ROW


def lookup_low(run: int, digest: bytes) -> str:
    """The first RowKey that can hold a hash: rows end on their last value's hash."""
    return run_prefix(run) + digest.hex()


def ends_past(row_key: str, digest: bytes) -> bool:
    """Whether a run row ends after a hash (then no later row holds it)."""
    return row_key[_ID_CHARS : _ID_CHARS + 2 * VALUE_HASH_BYTES] != digest.hex()


# --- the state row's slots -------------------------------------------------------------------


def read_slots(packed: object) -> dict[Unit, int]:
    """Units -> run ids of a state property (absent or damaged: none). A row written when
    there were fewer kinds holds their slots only: the first ones, kinds being appended."""
    kind_bytes = _SLOT.size * PREFIXES
    if (
        not isinstance(packed, bytes | bytearray)
        or len(packed) % kind_bytes
        or not 0 < len(packed) <= kind_bytes * len(_KINDS)
    ):
        return {}
    found = {}
    for index, unit in enumerate(units()[: len(packed) // _SLOT.size]):
        (run,) = _SLOT.unpack_from(packed, index * _SLOT.size)
        if run:
            found[unit] = run
    return found


def write_slots(runs: Mapping[Unit, int]) -> bytes:
    return b"".join(_SLOT.pack(runs.get(unit, 0)) for unit in units())


# --- run rows --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunRow:
    row_key: str
    packed: bytes


def pack_run(run: int, postings: Postings) -> list[RunRow]:
    """A run's rows: values in hash order, about ROW_BYTES each, the last one `{run}~`."""
    prefix = run_prefix(run)
    rows: list[RunRow] = []
    current = bytearray()
    parts: dict[str, int] = {}
    last = ""
    for digest in sorted(postings):
        for group in _groups(digest, postings[digest]):
            if current and len(current) + len(group) > ROW_BYTES:
                rows.append(_row(prefix, last, parts, current))
                current = bytearray()
            current += group
            last = digest.hex()
    rows.append(RunRow(prefix + LAST_ROW, bytes(current)))
    return rows


def _row(prefix: str, last: str, parts: dict[str, int], packed: bytearray) -> RunRow:
    part = parts.get(last, 0)
    parts[last] = part + 1
    return RunRow(f"{prefix}{last}{part:02x}", bytes(packed))


def _groups(digest: bytes, blobs: Mapping[BlobRef, bytes]) -> Iterator[bytes]:
    """A value's places as groups of at most ~ROW_BYTES: a frequent value spans rows."""
    group = bytearray()
    count = 0
    step = _PLACES_A_PIECE * _ENTRY_BYTES
    for ref in sorted(blobs):
        packed = blobs[ref]
        for start in range(0, len(packed), step):
            chunk = packed[start : start + step]
            piece = _BLOB.pack(ref.code.encode(), ref.blob_id, len(chunk) // _ENTRY_BYTES)
            if count and len(group) + len(piece) + len(chunk) > ROW_BYTES:
                yield _HEAD.pack(digest, count) + bytes(group)
                group, count = bytearray(), 0
            group += piece + chunk
            count += 1
    if count:
        yield _HEAD.pack(digest, count) + bytes(group)


def unpack_run(packed: bytes, day: date) -> Iterator[tuple[bytes, BlobRef, bytes]]:
    """(value hash, blob, its places packed) of a run row's `E`."""
    offset = 0
    while offset < len(packed):
        digest, blobs = _HEAD.unpack_from(packed, offset)
        offset += _HEAD.size
        for _ in range(blobs):
            code, blob_id, count = _BLOB.unpack_from(packed, offset)
            offset += _BLOB.size
            end = offset + _ENTRY_BYTES * count
            yield digest, BlobRef(day, CODE_CLASSES[code.decode()], blob_id), packed[offset:end]
            offset = end


def places_in_run(packed: bytes, day: date, digest: bytes) -> Iterator[tuple[BlobRef, Places]]:
    for found, ref, entries in unpack_run(packed, day):
        if found == digest:
            yield ref, unpack_entries(entries)


def add_postings(into: Postings, digest: bytes, ref: BlobRef, entries: bytes) -> None:
    """Places of a value in a blob, read from one source (fresh rows, or one run), where a
    blob's places may come in several pieces."""
    held = into.setdefault(digest, {})
    held[ref] = held.get(ref, b"") + entries


def merge_sources(newer: Postings, older: Postings) -> Postings:
    """Two sources' postings, each (value, blob) once: a blob's places are the same wherever
    they are read from whole (its fresh rows, or a run that merged them), so where both
    hold a pair (a merge stopped between its commit and its deletes) one copy is kept."""
    merged: Postings = {digest: dict(blobs) for digest, blobs in older.items()}
    for digest, blobs in newer.items():
        held = merged.setdefault(digest, {})
        for ref, entries in blobs.items():
            if len(entries) >= len(held.get(ref, b"")):
                held[ref] = entries
    return merged


def combine(first: Postings, second: Postings) -> Postings:
    """Postings of different blobs together (a unit's own fresh rows and its share of the
    small blobs' rows)."""
    merged: Postings = {digest: dict(blobs) for digest, blobs in first.items()}
    for digest, blobs in second.items():
        merged.setdefault(digest, {}).update(blobs)
    return merged


def keep_blobs(postings: Postings, committed: set[BlobRef]) -> Postings:
    kept: Postings = {}
    for digest, blobs in postings.items():
        held = {ref: entries for ref, entries in blobs.items() if ref in committed}
        if held:
            kept[digest] = held
    return kept
