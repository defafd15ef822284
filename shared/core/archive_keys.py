"""Where each record lives: its archive blob's name and the index's keys. Pure: no I/O.

The archive (the system of record) is gzip JSON Lines in block blobs named
`class={class}/y=YYYY/m=MM/d=DD/{blob id}.jsonl.gz`: a category class and a day of
TimeGenerated are a prefix, so retention deletes a class's day as a whole.

The index is one table a month, `{prefix}idx{YYYYMM}`, holding three kinds of row:

* key row, one per event: PartitionKey `k{DD}{bucket}`, RowKey `{class code}{event id}`,
  property `B` (the id of the blob holding the event). Created with an insert, so one event
  is claimed by one blob, whichever path brings it; the forward mark `F` is merged onto it.
* manifest row, one per blob: PartitionKey `m{DD}`, RowKey `{class code}{blob id}`. Its
  creation commits the blob: it records the count, SHA-256, size, member offsets and time span.
* posting row, one per distinct key value per blob: PartitionKey `{kind}{bucket}`, RowKey
  `{value hash}{31 - DD}{class code}{blob id}`, property `E` listing the value's records in
  the blob (see `pack_entries`), so a value's rows read newest day first.

Buckets (16) spread one busy hour, or one busy value, over partitions. Hashes are short: a
value hash that collides costs a record fetched and dropped by the exact filter, never a
wrong answer; an event id is 96 bits of the EventKey.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterable
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
MAX_BLOB_RECORDS = 16_000  # a posting lists at most this many: 4 bytes each in a 64 KiB property
MEMBER_RECORDS = 256  # records per gzip member: what one ranged read decompresses
BLOB_SUFFIX = ".jsonl.gz"
KEY_ROW = "k"
MANIFEST_ROW = "m"
_ENTRY = struct.Struct(">I")
_ORDINAL_BITS = 15
_ID_CHARS = 13  # 63 bits in lowercase base32: safe in any file system, case-folding or not
_HASH_CHARS = 8
_EVENT_ID_BYTES = 12
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
    if len(text) != _ID_CHARS:
        raise ValueError(f"not a blob id: {text!r}")
    return int.from_bytes(base64.b32decode(text.upper() + "==="), "big")


def blob_id_for(archive_class: str, day: date, event_keys: Iterable[str]) -> int:
    """A blob's id: a hash of what it was planned to hold, so a retry writes the same blob."""
    digest = hashlib.sha256(f"{archive_class}|{day.isoformat()}|".encode())
    for key in sorted(event_keys):
        digest.update(key.encode("ascii"))
    return int.from_bytes(digest.digest()[:8], "big") >> 1


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


def class_prefix(archive_class: str) -> str:
    return f"class={archive_class}/"


def day_prefix(archive_class: str, day: date) -> str:
    return f"class={archive_class}/y={day.year:04d}/m={day.month:02d}/d={day.day:02d}/"


# --- key rows --------------------------------------------------------------------------


def key_row(event_key: str, archive_class: str, day: date) -> tuple[str, str]:
    """(PartitionKey, RowKey) of an event's key row in its month's table."""
    event_id = base64.urlsafe_b64encode(bytes.fromhex(event_key)[:_EVENT_ID_BYTES]).decode()
    return f"{KEY_ROW}{day.day:02d}{event_key[0]}", CLASS_CODES[archive_class] + event_id


def key_partitions(day: date) -> list[str]:
    """Every key-row partition of a day."""
    return [f"{KEY_ROW}{day.day:02d}{bucket:x}" for bucket in range(BUCKETS)]


# --- posting rows ----------------------------------------------------------------------


def fold(value: str) -> str:
    return value.strip().lower()


def value_hash(value: str) -> tuple[str, str]:
    """(bucket, hash) of a key value, folded (trimmed, lower case) as queries match it."""
    digest = hashlib.sha256(fold(value).encode("utf-8", "surrogatepass")).digest()
    return f"{digest[6] % BUCKETS:x}", base64.urlsafe_b64encode(digest[:6]).decode()


def posting_partition(kind: str, value: str) -> str:
    return kind + value_hash(value)[0]


def posting_row(value: str, ref: BlobRef) -> str:
    inverted = _LAST_DAY - ref.day.day
    return f"{value_hash(value)[1]}{inverted:02d}{ref.code}{id_text(ref.blob_id)}"


def posting_range(value: str, newest_day: int, oldest_day: int) -> tuple[str, str]:
    """RowKeys [low, high) of a value's rows from `newest_day` back to `oldest_day` of a
    month (days of the month): newest day first."""
    digest = value_hash(value)[1]
    low = f"{digest}{_LAST_DAY - newest_day:02d}"
    high = f"{digest}{_LAST_DAY - oldest_day:02d}~"  # "~" sorts after every id character
    return low, high


def posting_ref(month: str, row: str) -> BlobRef:
    """The blob a posting row's RowKey names."""
    rest = row[_HASH_CHARS:]
    day = date(int(month[:4]), int(month[4:6]), _LAST_DAY - int(rest[:2]))
    return BlobRef(day, CODE_CLASSES[rest[2]], id_of_text(rest[3:]))


def pack_entries(entries: Iterable[tuple[int, int]]) -> bytes:
    """(second of day, ordinal in the blob) pairs, four bytes each."""
    return b"".join(_ENTRY.pack(second << _ORDINAL_BITS | ordinal) for second, ordinal in entries)


def unpack_entries(data: bytes) -> list[tuple[int, int]]:
    mask = (1 << _ORDINAL_BITS) - 1
    return [(value >> _ORDINAL_BITS, value & mask) for (value,) in _ENTRY.iter_unpack(data)]
