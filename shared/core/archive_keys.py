"""Where each record lives: its archive blob's name and the index's keys. Pure: no I/O.

The archive (the system of record) is gzip JSON Lines in block blobs named
`class={class}/y=YYYY/m=MM/d=DD/{blob id}.jsonl.gz`: a category class and a day of
TimeGenerated are a prefix, so retention deletes a class's day as a whole.

The index is one table a month, `{prefix}idx{YYYYMM}`, holding few rows, each listing many
events (a row per event would cost more to keep than Log Analytics, and Table storage is
billed and throttled by the entity):

* claim rows, in the hour (slot) of the events' TimeGenerated: PartitionKey `k{DD}{HH}`,
  RowKey `c{lane}{sequence:07d}`: `B` the blob id, `C` its class code, `K` the 12-byte ids
  of the events it claims. A lane is one writer process's own log in the slot (8 random
  base32 characters; rows of versions before lanes, `c{sequence:07d}`, are lane ""), and
  its registry row, RowKey `l{lane}`, `N` its last sequence number, is written in the same
  transaction as its claims: a writer inserts its claims first, then reads the registry and
  what is new in each lane, then decides (shared.services.claims).
* forward-mark rows in the same slots, RowKey `f{random}`, `K` the ids Log Analytics took.
* manifest row, one per blob: PartitionKey `m{DD}`, RowKey `{class code}{blob id}`. A write
  creates it first as a *pending* row (`S` = `p`, `P` the plan id) before it claims anything;
  the commit replaces it, conditional on the ETag the write holds, with the manifest (count,
  SHA-256, member offsets, time span; no `S`). Anyone who takes the blob's events over first
  *fences* the row (`S` = `f`, conditional on its ETag), so a writer that lost its claims
  while paused fails its commit: the ETag, not a clock, decides (shared.services.instances).
* posting rows, one per blob, kind and value bucket: PartitionKey `{kind}`, RowKey
  `{bucket}{31 - DD}{class code}{blob id}{part}`, `E` listing, for each distinct value of
  that bucket in the blob, its 6-byte hash and where its records are (second of day,
  ordinal). A blob with few distinct values of a kind has one row for all (bucket `-`).
  A write's postings are one transaction a kind. These rows are *fresh*: once a day is
  closed, compaction merges them into the day's run, sorted by value hash, and deletes them
  (shared.core.runs), so a lookup reads two RowKey ranges a month for what is still fresh
  (the single rows, and the value's bucket) and about one run row a day.

Hashes are short: a value hash that collides costs a record fetched and dropped by the exact
filter, never a wrong answer; an event id is 96 bits of the EventKey.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import secrets
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from shared.core.records import CATEGORIES

OTHER_CLASS = "other"
# One letter a class, for row keys: the first character of every key row and manifest row.
CLASS_CODES: dict[str, str] = {
    "administrative": "a",
    "alert": "l",
    "autoscale": "u",
    "policy": "p",
    "recommendation": "c",
    "resourcehealth": "r",
    "security": "s",
    "servicehealth": "h",
    OTHER_CLASS: "o",
}
CODE_CLASSES: dict[str, str] = {code: name for name, code in CLASS_CODES.items()}
_CATEGORY_CLASSES = {category.lower(): category.lower() for category in CATEGORIES}
CLASS_CATEGORIES: dict[str, str] = {category.lower(): category for category in CATEGORIES}

BUCKETS = 16
# A blob with at most this many distinct values of a kind lists them all in one posting row
# (bucket SINGLE_ROW): small writes then cost a row a kind, not one a bucket.
SINGLE_ROW_VALUES = 64
# ... and at most this many records: larger blobs post by hash prefix only, so a merge unit
# (a day, a kind, a prefix: shared.core.runs) reads only its own rows, bar small blobs'.
SINGLE_ROW_RECORDS = 100
SINGLE_ROW = "-"
PREFIX_LEAD = "g"  # posting rows by hash prefix lead with g..v (the first hex digit's bucket)
CLAIM = "c"
LANE = "l"  # a claim lane's registry row: `l{lane}`
MARK = "f"
EVENT_ID_BYTES = 12
VALUE_HASH_BYTES = 6
MAX_PACKED_BYTES = 60_000  # a binary property holds 64 KiB
MAX_BLOB_RECORDS = 16_000  # a posting lists at most this many: 4 bytes each in a 64 KiB property
# Records per gzip member: what one ranged read of a lookup downloads and decompresses. 64
# keeps 6% more bytes than 256 (measured: 328 against 310 bytes an event) and reads a quarter
# as much for each record a lookup fetches. A manifest records its blob's (`M`); blobs
# written before it was recorded have LEGACY_MEMBER_RECORDS.
MEMBER_RECORDS = 64
LEGACY_MEMBER_RECORDS = 256
BLOB_SUFFIX = ".jsonl.gz"
KEY_ROW = "k"
MANIFEST_ROW = "m"
STATE = "S"  # property of a manifest row not committed (yet): PENDING, FENCED or REPAIRING
PENDING = "p"
FENCED = "f"
# Fenced by a repair that re-archives the blob's records: until it has, its bytes are their
# only copy, so retention's sweep leaves it, and `verify` names it for the repair to finish.
REPAIRING = "r"
PLAN = "P"
MEMBERS = "M"  # manifest property: records per gzip member
_ENTRY = struct.Struct(">I")
_GROUP = struct.Struct(">6sH")  # value hash, number of entries
_ORDINAL_BITS = 15
_ID_CHARS = 13  # 63 bits in lowercase base32: safe in any file system, case-folding or not
_LAST_DAY = 31


def category_class(category: str) -> str:
    """The archive class of a category: the category in lower case, or `other`."""
    return _CATEGORY_CLASSES.get(category.lower(), OTHER_CLASS)


def index_table(prefix: str, month: str) -> str:
    return f"{prefix}{month}"


def month_of(day: date) -> str:
    return f"{day.year:04d}{day.month:02d}"


def day_of(time_generated: str) -> date:
    """The day of a canonical `YYYY-MM-DDTHH:MM:SS.fffffffZ` time."""
    return date(int(time_generated[0:4]), int(time_generated[5:7]), int(time_generated[8:10]))


def second_of_day(time_generated: str) -> int:
    return (
        int(time_generated[11:13]) * 3600
        + int(time_generated[14:16]) * 60
        + int(time_generated[17:19])
    )


def moment_of(day: date, second: int) -> datetime:
    """The start of a second of a day, in UTC."""
    return datetime(
        day.year, day.month, day.day, second // 3600, second // 60 % 60, second % 60, tzinfo=UTC
    )


def id_text(blob_id: int) -> str:
    return base64.b32encode(blob_id.to_bytes(8, "big")).decode("ascii").lower().rstrip("=")


def id_of_text(text: str) -> int:
    """A blob id from its one spelling: base32 decoding ignores case and the last character's
    low bit, so another spelling (a copy under a name that decodes alike) is no blob id."""
    if len(text) != _ID_CHARS:
        raise ValueError(f"not a blob id: {text!r}")
    blob_id = int.from_bytes(base64.b32decode(text.upper() + "==="), "big")
    if id_text(blob_id) != text:
        raise ValueError(f"not a blob id's spelling: {text!r}")
    return blob_id


def plan_id_for(archive_class: str, day: date, event_keys: Iterable[str]) -> int:
    """A plan's id: a hash of the events a write planned for one blob, so that a retry of the
    same input knows an earlier attempt's blob as its own (and may take it over at once)."""
    digest = hashlib.sha256(f"{archive_class}|{day.isoformat()}|".encode())
    for key in sorted(event_keys):
        digest.update(key.encode("ascii"))
    return int.from_bytes(digest.digest()[:8], "big") >> 1


def new_blob_id() -> int:
    """A blob's id: 63 random bits, one blob per write attempt, so no two writers ever write
    one blob name (a late writer's bytes can never replace another's)."""
    return secrets.randbits(63)


@dataclass(frozen=True, slots=True, order=True)
class BlobRef:
    """One archive blob: its day, class and id; everything else about it follows."""

    day: date
    archive_class: str
    blob_id: int

    @property
    def name(self) -> str:
        day = self.day
        return (
            f"class={self.archive_class}/y={day.year:04d}/m={day.month:02d}/d={day.day:02d}/"
            f"{id_text(self.blob_id)}{BLOB_SUFFIX}"
        )

    @property
    def month(self) -> str:
        return month_of(self.day)

    @property
    def code(self) -> str:
        return CLASS_CODES[self.archive_class]

    @property
    def manifest_keys(self) -> tuple[str, str]:
        return f"{MANIFEST_ROW}{self.day.day:02d}", self.code + id_text(self.blob_id)

    @classmethod
    def of_name(cls, name: str) -> BlobRef | None:
        """The blob a name is, or None for a name outside the layout."""
        parts = name.split("/")
        if len(parts) != 5 or not parts[4].endswith(BLOB_SUFFIX):  # noqa: PLR2004
            return None
        try:
            fields = [part.split("=", 1) for part in parts[:4]]
            values = dict(fields)
            if [key for key, _ in fields] != ["class", "y", "m", "d"]:
                return None
            if values["class"] not in CLASS_CODES:
                return None
            day = date(int(values["y"]), int(values["m"]), int(values["d"]))
            return cls(day, values["class"], id_of_text(parts[4][: -len(BLOB_SUFFIX)]))
        except ValueError:
            return None

    @classmethod
    def of_manifest(cls, month: str, partition: str, row: str) -> BlobRef:
        day = date(int(month[:4]), int(month[4:6]), int(partition[1:3]))
        return cls(day, CODE_CLASSES[row[0]], id_of_text(row[1:]))


# --- claim and mark rows -----------------------------------------------------------------


def event_id(event_key: str) -> bytes:
    return bytes.fromhex(event_key)[:EVENT_ID_BYTES]


def slot_partition(time_generated: str) -> str:
    """The claim slot (an hour) of a canonical time: `k{DD}{HH}`."""
    return f"{KEY_ROW}{time_generated[8:10]}{time_generated[11:13]}"


def slot_partitions(day: date) -> list[str]:
    """Every claim slot of a day."""
    return [f"{KEY_ROW}{day.day:02d}{hour:02d}" for hour in range(24)]


LANE_CHARS = 8  # 40 random bits in lowercase base32
_SEQUENCE_DIGITS = 7


def new_lane() -> str:
    """A claim lane: 8 random lowercase base32 characters."""
    return base64.b32encode(secrets.token_bytes(LANE_CHARS * 5 // 8)).decode("ascii").lower()


def claim_row(sequence: int, lane: str = "") -> str:
    """A claim row's RowKey: `c{lane}{sequence:07d}` (lane "": the layout before lanes)."""
    return f"{CLAIM}{lane}{sequence:0{_SEQUENCE_DIGITS}d}"


def claim_key(row: str) -> tuple[str, int]:
    """(lane, sequence) of a claim row's RowKey; ValueError when it is none."""
    body = row[1:]
    if row[:1] == CLAIM and body.isascii():
        if len(body) == LANE_CHARS + _SEQUENCE_DIGITS and body[LANE_CHARS:].isdigit():
            return body[:LANE_CHARS], int(body[LANE_CHARS:])
        if body.isdigit():
            return "", int(body)
    raise ValueError(f"not a claim row: {row!r}")


def lane_row(lane: str) -> str:
    return f"{LANE}{lane}"


def pack_ids(ids: Iterable[bytes]) -> bytes:
    return b"".join(ids)


def unpack_ids(data: bytes) -> list[bytes]:
    return [data[i : i + EVENT_ID_BYTES] for i in range(0, len(data), EVENT_ID_BYTES)]


def id_chunks(ids: list[bytes]) -> Iterator[list[bytes]]:
    """Ids in groups that fit one binary property."""
    size = MAX_PACKED_BYTES // EVENT_ID_BYTES
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


# --- posting rows ----------------------------------------------------------------------


def fold(value: str) -> str:
    return value.strip().lower()


@functools.lru_cache(maxsize=65_536)  # a write repeats its subscriptions, callers, operations
def value_hash(value: str) -> tuple[str, bytes]:
    """(bucket, 6-byte hash) of a key value, folded (trimmed, lower case) as queries match."""
    digest = hashlib.sha256(fold(value).encode("utf-8", "surrogatepass")).digest()
    return f"{digest[VALUE_HASH_BYTES] % BUCKETS:x}", digest[:VALUE_HASH_BYTES]


def prefix_lead(digest: bytes) -> str:
    """The posting bucket of a value hash: its first hex digit, as `g`..`v`."""
    return chr(ord(PREFIX_LEAD) + (digest[0] >> 4))


# The buckets of versions before compaction (`value_hash`'s): lookups still read them and
# merges take them. Every lead a posting RowKey can have: single rows, those, and g..v.
LEGACY_LEADS = tuple(f"{bucket:x}" for bucket in range(BUCKETS))
PREFIX_LEADS = tuple(chr(ord(PREFIX_LEAD) + bucket) for bucket in range(BUCKETS))
POSTING_LEADS = (SINGLE_ROW, *LEGACY_LEADS, *PREFIX_LEADS)


def posting_row(bucket: str, ref: BlobRef, part: int) -> str:
    return f"{bucket}{_LAST_DAY - ref.day.day:02d}{ref.code}{id_text(ref.blob_id)}{part:x}"


def posting_ranges(value: str, newest_day: int, oldest_day: int) -> list[tuple[str, str]]:
    """RowKey ranges [low, high) of the posting rows that can hold a value, from `newest_day`
    back to `oldest_day` of a month (days of the month), each newest day first: the small
    blobs' single rows, and the value's bucket of the larger blobs' (by hash prefix, and by
    the bucket versions before compaction wrote). The PartitionKey is the kind."""
    newest, oldest = f"{_LAST_DAY - newest_day:02d}", f"{_LAST_DAY - oldest_day:02d}~"
    legacy, digest = value_hash(value)
    return [(lead + newest, lead + oldest) for lead in (SINGLE_ROW, prefix_lead(digest), legacy)]


def posting_ref(month: str, row: str) -> BlobRef:
    """The blob a posting row's RowKey names."""
    day = date(int(month[:4]), int(month[4:6]), _LAST_DAY - int(row[1:3]))
    return BlobRef(day, CODE_CLASSES[row[3]], id_of_text(row[4 : 4 + _ID_CHARS]))


def pack_postings(groups: Mapping[bytes, list[tuple[int, int]]]) -> list[bytes]:
    """Values' places as `E` properties, each under MAX_PACKED_BYTES (as many as needed)."""
    parts: list[bytes] = []
    current = bytearray()
    for digest, places in sorted(groups.items()):
        for start in range(0, len(places), 10_000):
            chunk = places[start : start + 10_000]
            group = _GROUP.pack(digest, len(chunk)) + pack_entries(chunk)
            if current and len(current) + len(group) > MAX_PACKED_BYTES:
                parts.append(bytes(current))
                current = bytearray()
            current += group
    if current:
        parts.append(bytes(current))
    return parts


def groups_of(packed: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(value hash, its places packed) of every value in one posting row's `E`."""
    offset = 0
    while offset < len(packed):
        digest, count = _GROUP.unpack_from(packed, offset)
        offset += _GROUP.size
        end = offset + count * _ENTRY.size
        yield digest, packed[offset:end]
        offset = end


def day_range(day: int) -> tuple[str, str]:
    """The day part [low, high) of posting RowKeys of one day of the month, after the lead."""
    code = f"{_LAST_DAY - day:02d}"
    return code, code + "~"


def places_of(packed: bytes, value: str) -> list[tuple[int, int]]:
    """(second of day, ordinal) of a value's records in one posting row's `E`."""
    wanted = value_hash(value)[1]
    places: list[tuple[int, int]] = []
    offset = 0
    while offset < len(packed):
        digest, count = _GROUP.unpack_from(packed, offset)
        offset += _GROUP.size
        end = offset + count * _ENTRY.size
        if digest == wanted:
            places.extend(unpack_entries(packed[offset:end]))
        offset = end
    return places


def pack_entries(entries: Iterable[tuple[int, int]]) -> bytes:
    """(second of day, ordinal in the blob) pairs, four bytes each."""
    values = [second << _ORDINAL_BITS | ordinal for second, ordinal in entries]
    return struct.pack(f">{len(values)}I", *values)


def entry_second(value: int) -> int:
    return value >> _ORDINAL_BITS


def unpack_entries(data: bytes) -> list[tuple[int, int]]:
    mask = (1 << _ORDINAL_BITS) - 1
    return [(value >> _ORDINAL_BITS, value & mask) for (value,) in _ENTRY.iter_unpack(data)]
