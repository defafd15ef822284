"""The EventKey: an event's identity, from its own content only. Pure.

The first 32 hex digits of SHA-256 over the canonical JSON (sorted keys, no white space) of the
record's content columns, less `NormalizationWarnings` (and the key itself). A number no machine
type holds exactly (an `ExactNumber`, see shared.core.decode) is hashed as the bare number it
is: never rounded into a neighbour, never equal to the same digits sent as a string.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from shared.core.exact_json import bare_number
from shared.core.nesting import Place, held_to_depth
from shared.core.records import COLUMNS, NormalizedRecord

UNKEYED_COLUMNS = ("NormalizationWarnings", "EventKey")
KEYED_COLUMNS = tuple(column for column in COLUMNS if column not in UNKEYED_COLUMNS)

# Subclasses go to `bare_number`: an ExactNumber is hashed as the number it is.
_KEY_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS


def event_key(record: NormalizedRecord) -> str:
    """First 32 hex digits of SHA-256 over the canonical JSON of the record's keyed columns."""
    return digest({column: record.get(column) for column in KEYED_COLUMNS})


def digest(keyed: dict[str, Any]) -> str:
    """The key of a record that holds the keyed columns only (the normalizer's own, unfinished
    record: no NormalizationWarnings nor EventKey yet)."""
    return key_of(canonical_json(keyed))


# Before a deep record's key material: canonical JSON starts with `{`, so no other key's does.
_DEEP = b"\x00deep\x00"


def deep_key(keyed: dict[str, Any]) -> str:
    """The key of a record nested past the 254 levels JSON writers take (its canonical JSON
    cannot be written): of the record with each part past MAX_NESTING levels as its text,
    keys sorted at every level as the canonical JSON sorts them, and of where those parts
    were, so that an event holding the same text as a string there has a key of its own."""
    places: list[Place] = []
    held = held_to_depth(keyed, places, sort_keys=True)
    return key_of(_DEEP + canonical_json({"places": places, "record": held}))


def canonical_json(keyed: dict[str, Any]) -> bytes:
    """What a key hashes: sorted keys, no white space, exact numbers bare."""
    return orjson.dumps(keyed, option=_KEY_OPTIONS, default=bare_number)


def key_of(canonical: bytes) -> str:
    return hashlib.sha256(canonical).hexdigest()[:32]
