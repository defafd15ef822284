"""The EventKey: an event's identity, from its own content only. Pure.

The first 32 hex digits of SHA-256 over the canonical JSON (sorted keys, no white space) of the
record's content columns, less `NormalizationWarnings` (and the key itself). A number no machine
type holds exactly (an `ExactNumber`, see shared.core.decode) is hashed as the bare number it
is: never rounded into a neighbour, never equal to the same digits sent as a string.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

from shared.core import exact_json
from shared.core.exact_json import bare_number
from shared.core.records import COLUMNS, NormalizedRecord

UNKEYED_COLUMNS = ("NormalizationWarnings", "EventKey")
KEYED_COLUMNS = tuple(column for column in COLUMNS if column not in UNKEYED_COLUMNS)

# Subclasses go to `bare_number`: an ExactNumber is hashed as the number it is.
_KEY_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", re.ASCII)


def event_key(record: NormalizedRecord) -> str:
    """First 32 hex digits of SHA-256 over the canonical JSON of the record's keyed columns."""
    return digest({column: record.get(column) for column in KEYED_COLUMNS})


def digest(keyed: dict[str, Any]) -> str:
    """The key of a record that holds the keyed columns only (the normalizer's own, unfinished
    record: no NormalizationWarnings nor EventKey yet)."""
    canonical = orjson.dumps(keyed, option=_KEY_OPTIONS, default=bare_number)
    return hashlib.sha256(canonical).hexdigest()[:32]


def _numbers_restored(value: Any) -> Any:
    """A record read back from the archive with its exact numbers made numbers again: the
    archive writes an ExactNumber as a JSON string, so a string that the exact parser reads
    as an ExactNumber may have been one (the normalizer's record nests at most 128 levels)."""
    if isinstance(value, dict):
        return {name: _numbers_restored(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_numbers_restored(item) for item in value]
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        number = exact_json.loads(f"[{value}]")[0]  # in brackets: a token with a neighbour
        return number if isinstance(number, exact_json.ExactNumber) else value
    return value


def holds_its_key(record: NormalizedRecord) -> bool:
    """Whether an archived record's content hashes to its EventKey (read with exact numbers,
    shared.core.exact_json): the content as written, or with its exact numbers restored."""
    key = record.get("EventKey")
    if event_key(record) == key:
        return True
    restored: NormalizedRecord = _numbers_restored(record)
    return event_key(restored) == key  # (an ExactNumber equals its text: no cheaper test)
