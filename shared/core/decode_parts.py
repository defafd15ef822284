"""Small parts of decoding (shared.core.decode): what wraps events, JSON's type names, and
the text and bytes a rejection keeps. Pure: no I/O."""

from __future__ import annotations

from typing import Any

import orjson

from shared.core.records import Rejection

_JSON_SPACE = b" \t\r\n"

# Keys of a wrapper whose list holds the events: Event Hub bodies and old PT1H blobs use
# `records`; a REST / `az rest` page of the Activity Log uses `value` (spec-silent, accepted).
ENVELOPE_KEYS = ("records", "value")
# What else an envelope or a REST page holds beside its list (Azure's REST paging).
ENVELOPE_FIELDS = frozenset({*ENVELOPE_KEYS, "nextLink", "@odata.nextLink", "@odata.context"})
_JSON_TYPES: dict[type, str] = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def json_type(value: Any) -> str:
    """JSON's name for a parsed value's type: object, array, string, number, boolean, null."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def envelope_keys(value: dict[str, Any]) -> list[str]:
    """`records`, `value` or both when the object wraps lists of events rather than being one
    (both: each list's events, none left out). A list beside fields that are neither an
    envelope's nor a REST page's makes an event (without a time: rejected, whole), not an
    envelope: those fields would vanish, neither record nor dead letter (found from outside)."""
    if "time" in value or "eventTimestamp" in value or value.keys() - ENVELOPE_FIELDS:
        return []  # fields no envelope has: an event (its list kept in it), never dropped
    return [key for key in ENVELOPE_KEYS if isinstance(value.get(key), list)]


def events_array(value: Any) -> bool:
    """An array of objects: events (a line of JSON Lines may hold one, as a whole input may)."""
    return type(value) is list and bool(value) and all(type(item) is dict for item in value)


def text_of(data: bytes | memoryview) -> str:
    """Raw text for an event or a rejection; bytes that are not UTF-8 shown as \\x escapes."""
    return bytes(data).strip(_JSON_SPACE).decode("utf-8", "backslashreplace")


def exact_of(data: bytes | memoryview) -> bytes:
    """The bytes a rejection keeps when its text cannot show them exactly (not UTF-8)."""
    raw = bytes(data).strip(_JSON_SPACE)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    return b""


def rejection(
    error: orjson.JSONDecodeError | str, source: str, raw: bytes, exact: bytes | None = None
) -> Rejection:
    """`raw` trimmed, for people; `exact`: the input's own bytes where they differ (a whole
    input's BOM and line ends), which its dead letter keeps. `error`: the parser's, or the
    reason itself."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        reason = f"not UTF-8: {bad.reason} at byte {bad.start} (shown as \\x escapes)"
        return Rejection(reason, source, text_of(raw), exact or exact_of(raw))
    reason = error if isinstance(error, str) else f"not JSON: {error}"
    return Rejection(reason, source, text, b"" if exact == raw else exact or b"")
