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
* a frequent value (more places than a row holds: a subscription's, a status's) has its
  places newest first across blobs (pieces of consecutive places of one blob), and each row
  that ends on it has RowKey `{run}{hash}t{99999 - second}{part}` (five digits, then four hex):
  the second of the row's last place, so its rows sort newest first, every row after one
  holds only places of that second or older, and a page that starts at second S skips to
  `{run}{hash}t{99999 - S}` (shared.services.postings_read).

A lookup of hash h reads rows from `{run}{h}` on, until a row that ends past h.
"""

from __future__ import annotations

import heapq
import struct
import sys
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date

from shared.core.archive_keys import (
    CODE_CLASSES,
    VALUE_HASH_BYTES,
    BlobRef,
    entry_second,
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
NEWEST_FIRST = "t"  # after the hash in the RowKey of a row ending on a frequent value
_LAST_SECOND = 99_999  # seconds in the RowKey count down from here: newest sorts first
_SECOND_DIGITS = 5
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
        blobs = postings[digest]
        # More places than a piece (a row) holds: a frequent value, its rows newest first.
        frequent = sum(len(entries) for entries in blobs.values()) > _PLACES_A_PIECE * _ENTRY_BYTES
        groups = _newest_first(digest, blobs) if frequent else _by_blob(digest, blobs)
        for group, last_second in groups:
            if current and len(current) + len(group) > ROW_BYTES:
                rows.append(_row(prefix, last, parts, current))
                current = bytearray()
            current += group
            last = digest.hex()
            if last_second is not None:
                last += f"{NEWEST_FIRST}{_LAST_SECOND - last_second:05d}"
    rows.append(RunRow(prefix + LAST_ROW, bytes(current)))
    return rows


def _row(prefix: str, last: str, parts: dict[str, int], packed: bytearray) -> RunRow:
    part = parts.get(last, 0)
    parts[last] = part + 1
    width = 4 if NEWEST_FIRST in last else 2  # a second of a frequent value may span rows
    return RunRow(f"{prefix}{last}{part:0{width}x}", bytes(packed))


def row_second(row_key: str, digest: bytes) -> int | None:
    """The second of a frequent value's row's last place (every later row of the value holds
    that second or older ones); None for any other row."""
    stem = _ID_CHARS + 2 * VALUE_HASH_BYTES
    if row_key[_ID_CHARS:stem] != digest.hex() or row_key[stem : stem + 1] != NEWEST_FIRST:
        return None
    digits = row_key[stem + 1 : stem + 1 + _SECOND_DIGITS]
    if len(digits) != _SECOND_DIGITS or not digits.isdigit():
        return None
    return _LAST_SECOND - int(digits)


def seek_low(run: int, digest: bytes, second: int) -> str:
    """The first RowKey that can hold a frequent value's places of `second` or older."""
    return f"{lookup_low(run, digest)}{NEWEST_FIRST}{_LAST_SECOND - second:05d}"


def _by_blob(digest: bytes, blobs: Mapping[BlobRef, bytes]) -> Iterator[tuple[bytes, None]]:
    """A value that fits a row: its places blob by blob, as one group (or a few)."""
    step = _PLACES_A_PIECE * _ENTRY_BYTES
    pieces = (
        (ref, blobs[ref][start : start + step])
        for ref in sorted(blobs)
        for start in range(0, len(blobs[ref]), step)
    )
    for group, _ in _grouped(digest, ((ref, chunk, 0) for ref, chunk in pieces)):
        yield group, None


def _newest_first(digest: bytes, blobs: Mapping[BlobRef, bytes]) -> Iterator[tuple[bytes, int]]:
    """A frequent value's places newest first across its blobs (merged lazily from each
    blob's, sorted: memory stays at four bytes a place), as groups of pieces of consecutive
    places of one blob; with each group's last second."""
    refs = sorted(blobs)
    ordered = [_tagged(_newest_entries(blobs[ref]), index) for index, ref in enumerate(refs)]
    yield from _grouped(digest, _pieces(refs, heapq.merge(*ordered, reverse=True)))


def _newest_entries(packed: bytes) -> array[int]:
    """Packed entries as numbers, largest (newest second) first; four bytes each, not an
    object each: a frequent value's day holds many."""
    values = array("I")
    values.frombytes(packed)
    if sys.byteorder == "little":
        values.byteswap()  # entries are big-endian
    return array("I", sorted(values, reverse=True))


def _tagged(values: array[int], index: int) -> Iterator[tuple[int, int]]:
    return ((value, index) for value in values)


def _packed_entries(values: array[int]) -> bytes:
    packed = array("I", values)
    if sys.byteorder == "little":
        packed.byteswap()
    return packed.tobytes()


def _pieces(
    refs: list[BlobRef], merged: Iterator[tuple[int, int]]
) -> Iterator[tuple[BlobRef, bytes, int]]:
    """Runs of consecutive entries of one blob, at most _PLACES_A_PIECE each."""
    run: array[int] = array("I")
    current = -1
    for value, index in merged:
        if run and (index != current or len(run) == _PLACES_A_PIECE):
            yield refs[current], _packed_entries(run), entry_second(run[-1])
            run = array("I")
        current = index
        run.append(value)
    if run:
        yield refs[current], _packed_entries(run), entry_second(run[-1])


def _grouped(
    digest: bytes, pieces: Iterator[tuple[BlobRef, bytes, int]]
) -> Iterator[tuple[bytes, int]]:
    """Pieces (blob, places packed, second of the last place) as groups of ~ROW_BYTES, each
    with the second of its last place."""
    group = bytearray()
    count = last_second = 0
    for ref, chunk, second in pieces:
        piece = _BLOB.pack(ref.code.encode(), ref.blob_id, len(chunk) // _ENTRY_BYTES)
        if count and len(group) + len(piece) + len(chunk) > ROW_BYTES:
            yield _HEAD.pack(digest, count) + bytes(group), last_second
            group, count = bytearray(), 0
        group += piece + chunk
        count += 1
        last_second = second
    if count:
        yield _HEAD.pack(digest, count) + bytes(group), last_second


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
