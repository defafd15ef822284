"""Key parts shared by the index and the cursors: pure encoding, no I/O.

What each index row's keys are is shared.core.archive_keys's; this module keeps what is
older than it: the lookup kinds, the escaping of a value for a key, and canonical times.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

# Lookup kinds: the query filter each one answers, and the record column it keys on.
LOOKUP_COLUMNS: dict[str, str] = {
    "s": "SubscriptionId",
    "r": "ResourceId",
    "c": "Caller",
    "x": "CorrelationId",
    "o": "OperationNameValue",
}

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
