"""Index keys, derived from the record alone: pure encoding, no I/O.

* records table: PartitionKey `YYYYMMDD` (the day of TimeGenerated), RowKey
  `{inverted ticks:019}_{EventKey}`, so a partition reads newest first.
* lookup table: PartitionKey `{kind}|{YYYYMM}|{bucket}` (the bucket a hash of the value, so
  a batch's lookups share a few partitions and go in few transactions), RowKey
  `{encoded value}|{record RowKey}` (from which the record's keys follow).

Writing the same event twice, by any path, lands on the same keys. Keys are fixed-width for
every year 0001-9999, so they compare in time order.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from shared.core.records import NormalizedRecord

# Lookup kinds: the query filter each one answers, and the record column it keys on.
LOOKUP_COLUMNS: dict[str, str] = {
    "s": "SubscriptionId",
    "r": "ResourceId",
    "c": "Caller",
    "x": "CorrelationId",
    "o": "OperationNameValue",
}

MAX_BATCH = 100  # operations per Table storage transaction (service limit)
LOOKUP_BUCKETS = 16  # per kind and month: 16 x 2,000 entities/s, few transactions per batch
MAX_KEY_VALUE = 300
# The eight categories are short; an unknown one is kept whole in the body, but the copy on
# each row is cut so that no input can make Table storage refuse the entity.
MAX_CATEGORY = 256  # encoded lookup value; keys stay well under Azurite's 512 characters
_EPOCH_TICKS = 621_355_968_000_000_000  # .NET ticks at 1970-01-01, so keys sort like Azure's
_MAX_TICKS = 10**19 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._@:=+-]")


def _escape_key_char(match: re.Match[str]) -> str:
    return "".join(f"~{byte:02x}" for byte in match.group().encode("utf-8"))


def encode_key_value(value: str) -> str:
    """A lookup value as a key part: forbidden and odd characters escaped, length bounded.

    `/ \\ # ?`, controls, quotes, `%` and `|` never reach a key. A long value keeps a readable
    prefix and is made unique by a hash of the whole.
    """
    encoded = _SAFE_KEY_CHARS.sub(_escape_key_char, value)
    if len(encoded) <= MAX_KEY_VALUE:
        return encoded
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]
    return f"{encoded[: MAX_KEY_VALUE - 34]}~~{digest}"


def parse_canonical_time(value: str) -> tuple[datetime, int]:
    """`YYYY-MM-DDTHH:MM:SS.fffffffZ` → (datetime to the second, ticks since 0001-01-01)."""
    whole = datetime(
        int(value[0:4]),
        int(value[5:7]),
        int(value[8:10]),
        int(value[11:13]),
        int(value[14:16]),
        int(value[17:19]),
        tzinfo=UTC,
    )
    ticks = _EPOCH_TICKS + int(whole.timestamp()) * 10_000_000 + int(value[20:27])
    return whole, ticks


def row_key_for(time_generated: str, event_key: str) -> str:
    _, ticks = parse_canonical_time(time_generated)
    return f"{_MAX_TICKS - ticks:019d}_{event_key}"


def row_key_bound(moment: datetime) -> str:
    """The RowKey prefix of a moment: rows at or after it sort before it (newest first)."""
    ticks = _EPOCH_TICKS + (moment - _EPOCH) // timedelta(microseconds=1) * 10
    return f"{_MAX_TICKS - ticks:019d}"


def time_of_row_key(row_key: str) -> datetime:
    # Integer arithmetic only: a float would round 23:59:59.9999999 into the next day.
    ticks = _MAX_TICKS - int(row_key[:19])
    return _EPOCH + timedelta(microseconds=(ticks - _EPOCH_TICKS) // 10)


def day_partition(moment: date) -> str:
    """`YYYYMMDD`, four-digit year for every year 0001-9999, so keys compare in time order.

    (`strftime("%Y")` does not pad years before 1000 on Linux.)
    """
    return f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"


def month_bucket(moment: date) -> str:
    """`YYYYMM`, fixed width like `day_partition`."""
    return f"{moment.year:04d}{moment.month:02d}"


def lookup_value(value: str) -> str:
    """A lookup value as its RowKey prefix: folded (trimmed, lower case) and encoded."""
    return encode_key_value(value.strip().lower()) + "|"


def lookup_partition(kind: str, month: str, value: str) -> str:
    folded = value.strip().lower().encode("utf-8", "surrogatepass")
    bucket = hashlib.sha256(folded).digest()[0] % LOOKUP_BUCKETS
    return f"{kind}|{month}|{bucket:02d}"


def record_row_key(lookup_row_key: str) -> str:
    """The record's RowKey inside a lookup RowKey (the part after the value's `|`)."""
    return lookup_row_key.rsplit("|", 1)[-1]


@dataclass(frozen=True, slots=True)
class RecordKey:
    partition_key: str
    row_key: str

    @classmethod
    def of(cls, record: NormalizedRecord) -> RecordKey:
        time_generated: str = record["TimeGenerated"]
        whole, ticks = parse_canonical_time(time_generated)
        return cls(day_partition(whole), f"{_MAX_TICKS - ticks:019d}_{record['EventKey']}")

    @classmethod
    def of_row_key(cls, row_key: str) -> RecordKey:
        return cls(day_partition(time_of_row_key(row_key)), row_key)


def days_between(since: datetime, until: datetime) -> list[str]:
    """Day partitions from `until` back to `since`, newest first."""
    days: list[str] = []
    day = until.replace(hour=0, minute=0, second=0, microsecond=0)
    while day >= since.replace(hour=0, minute=0, second=0, microsecond=0):
        days.append(day_partition(day))
        if day.date() == date.min:
            break  # 0001-01-01: there is no day before it
        day -= timedelta(days=1)
    return days


def months_between(since: datetime, until: datetime) -> list[str]:
    """Month buckets from `until` back to `since`, newest first."""
    months: list[str] = []
    year, month = until.year, until.month
    while (year, month) >= (since.year, since.month):
        months.append(f"{year:04d}{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return months
