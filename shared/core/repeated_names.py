"""Names an object of JSON repeats. Pure: no I/O.

JSON objects should not repeat a name (RFC 8259, 4), and parsers keep one value of those that
do (orjson and Python's the last): the others would be lost without a trace, and two
different events could read as one. Azure does not send such objects, so one that does is
refused with its bytes: the element that holds it, or the whole input when its envelope
repeats a name (`{"records": [...], "records": [...]}`).

Checking every object of every input in Python would cost more than the parse; a count of
colons, exact in one direction, runs at C speed and clears every input that repeats nothing.
"""

from __future__ import annotations

import json
from typing import Any

from shared.core.exact_json import json_bytes, raise_recursion_floor

_ESCAPED_COLONS = (b"\\u003a", b"\\u003A")


def may_repeat_names(raw: bytes | memoryview, value: Any) -> bool:
    """False when no object of `raw` (which parsed to `value`) repeats a name.

    Each `:` of the input separates a name from its value or sits in a string (escaped, it is
    `\\u003a`); written back, the parsed value has one a name and each of its strings' own
    (orjson escapes none). A repeated name and its value are gone from the parsed value, so it
    has fewer: equal counts mean nothing was repeated. (More in the input than written back
    without a repeat: a string holding the text `\\u003a` itself; the exact check says.)
    """
    data = raw if isinstance(raw, bytes) else bytes(raw)
    written = data.count(b":") + sum(data.count(escaped) for escaped in _ESCAPED_COLONS)
    return written != json_bytes(value).count(b":")


def repeated_names(
    raw: bytes | memoryview, *, top_is_object: bool
) -> tuple[str | None, str | None]:
    """(a name the input's top-level object repeats, a name any object repeats): None where
    none does, or where the standard parser cannot read the input."""
    repeats: list[str | None] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        repeated = None
        for name, _ in items:
            if name in seen:
                repeated = name
                break
            seen.add(name)
        repeats.append(repeated)
        return {}  # the values are not needed: only the names

    raise_recursion_floor()
    try:
        json.loads(
            raw if isinstance(raw, bytes) else bytes(raw),
            object_pairs_hook=pairs,
            parse_int=len,  # numbers are not needed either (and no digit limit applies)
            parse_float=len,
            parse_constant=len,
        )
    except (ValueError, RecursionError):
        return None, None
    anywhere = next((name for name in repeats if name is not None), None)
    top = repeats[-1] if top_is_object and repeats else None  # the outermost object is last
    return top, anywhere
