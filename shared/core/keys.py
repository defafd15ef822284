"""Key parts shared by the index and the cursors: pure encoding, no I/O.

What each index row's keys are is shared.core.archive_keys's; this module keeps what is
older than it: the lookup kinds, the escaping of a value for a key, and canonical times.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

# Lookup kinds: the query filter each one answers, and the record column it keys on. New
# kinds go last: a compaction state row's slots are kind by kind, in this order (shared.core.
# runs), so the rows of fewer kinds stay readable as a prefix.
LOOKUP_COLUMNS: dict[str, str] = {
    "s": "SubscriptionId",
    "r": "ResourceId",
    "c": "Caller",
    "x": "CorrelationId",
    "o": "OperationNameValue",
    "g": "ResourceGroup",
    "t": "ActivityStatusValue",  # few values: for status counts (histograms) and `Failed`
}
# The kinds every index has had. Blobs written before a later kind existed have no postings
# of it: a month table says which kinds all of its blobs have (shared.services.index_kinds).
LEGACY_KINDS = frozenset({"s", "r", "c", "x", "o"})

MAX_KEY_VALUE = 300
_EPOCH_TICKS = 621_355_968_000_000_000  # .NET ticks at 1970-01-01, as Azure counts time
_SAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._@:=+-]")


def _escape_key_char(match: re.Match[str]) -> str:
    return "".join(f"~{byte:02x}" for byte in match.group().encode("utf-8"))


def encode_key_value(value: str) -> str:
    """A value as a key part: forbidden and odd characters escaped, length bounded.

    `/ \\ # ?`, controls, quotes, `%` and `|` never reach a key. A long value keeps a readable
    prefix and is made unique by a hash of the whole.
    """
    encoded = _SAFE_KEY_CHARS.sub(_escape_key_char, value)
    if len(encoded) <= MAX_KEY_VALUE:
        return encoded
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]
    return f"{encoded[: MAX_KEY_VALUE - 34]}~~{digest}"


def parse_canonical_time(value: str) -> tuple[datetime, int]:
    """`YYYY-MM-DDTHH:MM:SS.fffffffZ` → (datetime to the second, .NET ticks since 0001-01-01)."""
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


def canonical_of_ticks(ticks: int) -> str:
    """.NET ticks since 0001-01-01 → `YYYY-MM-DDTHH:MM:SS.fffffffZ` (parse_canonical_time's
    inverse, to the tick)."""
    seconds, fraction = divmod(ticks - _EPOCH_TICKS, 10_000_000)
    m = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
        f".{fraction:07d}Z"
    )
