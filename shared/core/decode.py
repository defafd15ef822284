"""Turn input bytes in any of the spec's six forms into events, each with its source and raw text.

Pure: no I/O. Nothing raises for any input; what cannot become an event is a `Rejection`.

Sources name where an event came from: `file.json` (the whole input was one object),
`file.json:7` (JSON Lines, line 7, 1-based), `file.json#records[3]` (element 3, 0-based, of a
`records` envelope), `file.json#value[3]` (of a REST `{"value": [...]}` page), `file.json#[3]`
(of a bare array), combined as `file.json:7#records[3]` for an envelope on line 7.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from shared.core.exact_json import (
    ExactNumber,
    bare_number,
    json_bytes,
    json_grammar_loads,
    loads,
)
from shared.core.input_shape import (
    BOM as _BOM,
)
from shared.core.input_shape import (
    line_at,
    one_value_across_lines,
    starts_json_lines,
)
from shared.core.json_spans import ElementBytes, InnerElementBytes
from shared.core.records import Rejection

__all__ = [
    "Decoded",
    "ExactNumber",
    "RawEvent",
    "bare_number",
    "decode",
    "decode_line",
    "json_bytes",
    "json_type",
    "loads",
]

_JSON_SPACE = b" \t\r\n"
_NON_SPACE = re.compile(rb"[^ \t\r\n]")
# Keys of a wrapper whose list holds the events: Event Hub bodies and old PT1H blobs use
# `records`; a REST / `az rest` page of the Activity Log uses `value` (spec-silent, accepted).
_ENVELOPE_KEYS = ("records", "value")
# What else an envelope or a REST page holds beside its list (Azure's REST paging).
_ENVELOPE_FIELDS = frozenset({*_ENVELOPE_KEYS, "nextLink", "@odata.nextLink", "@odata.context"})
_JSON_TYPES: dict[type, str] = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One decoded event: the JSON object, where it came from, and its own text.

    The text is made only when asked for (a rejection needs it, a good event never does):
    from the bytes it was read as, or, for an element of an envelope or array, by
    serializing the element.
    """

    event: dict[str, Any]
    source: str
    text_bytes: bytes | memoryview | None = None  # None: an element, found on demand
    element: tuple[ElementBytes, int] | None = None  # where to find an element's bytes
    whole: bytes | None = None  # the input's own bytes, when the event is the whole input

    @property
    def raw(self) -> str:
        if self.text_bytes is None:
            return _text(self.raw_bytes)
        return _text(self.text_bytes)

    @property
    def raw_bytes(self) -> bytes:
        """The event's bytes exactly as read (an element: as its input holds it, or, where
        they cannot be told, its JSON; the whole input: all of it, BOM and line ends too)."""
        if self.whole is not None:
            return self.whole
        if self.text_bytes is None:
            return _element_bytes(self.event, self.element)
        return bytes(self.text_bytes).strip(_JSON_SPACE)


def _element_bytes(value: Any, element: tuple[ElementBytes, int] | None) -> bytes:
    """An element's own bytes in its input, when they parse to it; else its JSON."""
    found = element[0].get(element[1]) if element is not None else None
    if found is not None:
        try:
            if loads(found) == value:
                return found
        except ValueError:
            pass
    return json_bytes(value)


Decoded = RawEvent | Rejection


def decode(data: bytes | str, source: str) -> Iterator[Decoded]:
    """Every event of one input (file, blob or Event Hub body), in order, or its rejection.

    An input that is one JSON value (an envelope, one object, pretty-printed or not, an array)
    is parsed whole; one that fails to, past its first line (a pretty-printed value cut short
    or broken inside), is one rejection. Otherwise it is read as JSON Lines, provided at least
    one line is a JSON object; then each bad line is one rejection and the others still
    decode. Otherwise the whole input is one rejection with the parser's reason.
    """
    buffer = _bytes_of(data)
    start = len(_BOM) if buffer.startswith(_BOM) else 0
    first = _NON_SPACE.search(buffer, start)
    if first is None:
        return  # an empty blob or body holds no events
    if not starts_json_lines(buffer, first.start()):
        try:
            value = loads(memoryview(buffer)[start:] if start else buffer)
        except orjson.JSONDecodeError as error:
            whole = memoryview(buffer)[start:]
            refused = json_grammar_loads(whole) if _holds_arrays(buffer) else None
            if isinstance(refused, dict | list):
                yield from _each_alone(refused, source, buffer[start:], error, buffer)
                return
            if one_value_across_lines(buffer, first.start(), error):
                yield _rejection(error, source, buffer[start:].strip(_JSON_SPACE), buffer)
                return
        else:
            yield from _expand(value, source, memoryview(buffer)[start:], whole=buffer)
            return
    yield from _decode_lines(buffer, start, source)


def _holds_arrays(buffer: bytes) -> bool:
    return b"[" in buffer  # elements to read apart: an envelope's records, or an array


def _each_alone(
    value: dict[str, Any] | list[Any],
    source: str,
    raw: bytes,
    error: orjson.JSONDecodeError,
    exact: bytes | None = None,
) -> Iterator[Decoded]:
    """An input that JSON's grammar allows and the reader refuses as a whole (an element with a
    lone UTF-16 surrogate escape, or nested past 1,024 levels): each element read on its own,
    from its own bytes, as a line of a PT1H blob is; so only those that hold what is refused
    are rejected, each with its bytes, and the others are events."""
    whole = raw.strip(_JSON_SPACE)  # `exact`: the input's own bytes, when it is all of it
    if isinstance(value, list):
        lists = [(source + "#", ElementBytes(raw, None), len(value))]
    else:
        keys = _envelope_keys(value)
        lists = [(f"{source}#{key}", ElementBytes(raw, key), len(value[key])) for key in keys]
    if not lists:  # one event: the input is its text
        yield _rejection(error, source, whole, exact)
        return
    for prefix, spans, count in lists:
        for index in range(count):
            found = spans.get(index)
            if found is None:  # not where a scan finds it: the whole input stands for it
                yield _rejection(error, f"{prefix}[{index}]", whole, exact)
            else:
                yield from decode_line(found, f"{prefix}[{index}]")


def _decode_lines(buffer: bytes, start: int, source: str) -> Iterator[Decoded]:
    # Lines before the first object line wait: if no line is an object, the input is not
    # JSON Lines at all (plain text, a truncated pretty-printed object) and is one rejection.
    waiting: list[Decoded] = []
    seen_object = False
    # One line in all: its event's bytes are the input's, BOM and line end too.
    whole = buffer if b"\n" not in buffer[start:].strip(_JSON_SPACE) else None
    size = len(buffer)
    position = start
    line_number = 0
    while position < size:
        line, position = line_at(buffer, position)
        line_number += 1
        if not line:
            continue
        line_source = f"{source}:{line_number}"
        try:
            value = loads(line)
        except orjson.JSONDecodeError as error:
            found = _bad_line(line, line_source, error, whole)
            if not seen_object and any(isinstance(item, RawEvent) for item in found):
                seen_object = True  # a line of objects, one refused: JSON Lines
                yield from waiting
            if seen_object:
                yield from found
            else:
                waiting.extend(found)
            continue
        if not seen_object:
            if not isinstance(value, dict) and not _events_array(value):
                waiting.extend(_expand(value, line_source, line, arrays=False, whole=whole))
                continue
            seen_object = True
            yield from waiting
        if type(value) is dict and ("time" in value or "eventTimestamp" in value):
            yield RawEvent(value, line_source, line, whole=whole)  # the usual line: one event
        else:
            yield from _expand(value, line_source, line, arrays=False, whole=whole)
    if not seen_object:
        trimmed = buffer[start:].strip(_JSON_SPACE)
        try:
            orjson.loads(trimmed)
        except orjson.JSONDecodeError as error:
            yield _rejection(error, source, trimmed, buffer)


def decode_line(line: bytes, source: str) -> Iterator[Decoded]:
    """The events of one JSON Lines line (an object, or a `records` envelope on one line).

    `source` is used as given (the caller names the blob and line number). A blank line yields
    nothing; a bad line yields one rejection; an array on a line is its objects, each an event
    (an array holding anything else is one rejection).
    """
    line = _bytes_of(line)
    if line.startswith(_BOM):
        line = line[len(_BOM) :]
    line = line.strip(_JSON_SPACE)
    if not line:
        return
    try:
        value = loads(line)
    except orjson.JSONDecodeError as error:
        yield from _bad_line(line, source, error)
        return
    yield from _expand(value, source, line, arrays=False)


def _bad_line(
    line: bytes, source: str, error: orjson.JSONDecodeError, whole: bytes | None = None
) -> list[Decoded]:
    """A line the reader refuses: one rejection; or, when JSON's grammar takes it (an element
    with a lone surrogate escape), each element of its envelope or array read on its own."""
    refused = json_grammar_loads(line) if _holds_arrays(line) else None
    if isinstance(refused, dict | list):
        return list(_each_alone(refused, source, line, error, whole))
    return [_rejection(error, source, line, whole)]


def _bytes_of(data: bytes | str) -> bytes:
    if isinstance(data, str):
        # Lone surrogates (text that came from broken bytes) stay invalid, to be rejected.
        return data.encode("utf-8", "surrogatepass")
    return data if isinstance(data, bytes) else bytes(data)


def _text(data: bytes | memoryview) -> str:
    """Raw text for an event or a rejection; bytes that are not UTF-8 shown as \\x escapes."""
    return bytes(data).strip(_JSON_SPACE).decode("utf-8", "backslashreplace")


def _exact(data: bytes | memoryview) -> bytes:
    """The bytes a rejection keeps when its text cannot show them exactly (not UTF-8)."""
    raw = bytes(data).strip(_JSON_SPACE)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    return b""


def _expand(
    value: Any,
    source: str,
    raw: bytes | memoryview,
    *,
    arrays: bool = True,
    whole: bytes | None = None,
) -> Iterator[Decoded]:
    """The events in one parsed value: itself, its envelope's records, or an array's items.
    `whole`: the input's own bytes, when the value is all of it (kept by a rejection)."""
    if isinstance(value, dict):
        keys = _envelope_keys(value)
        if not keys:
            yield RawEvent(value, source, raw, whole=whole)
        for key in keys:
            yield from _elements(value[key], f"{source}#{key}", ElementBytes(raw, key))
    elif isinstance(value, list) and (arrays or _events_array(value)):
        spans = ElementBytes(raw, None)
        for index, element in enumerate(value):
            element_source = f"{source}#[{index}]"
            keys = _envelope_keys(element) if isinstance(element, dict) else []
            if not keys:
                yield _element(element, element_source, (spans, index))
            for key in keys:  # a list of Event Hub bodies: each envelope expands in place
                inner = InnerElementBytes(spans, index, key)
                yield from _elements(element[key], f"{element_source}#{key}", inner)
    else:
        text = _text(raw)
        exact = whole if whole is not None and whole != text.encode() else _exact(raw)
        yield Rejection(f"not an object: got {json_type(value)}", source, text, exact)


def _events_array(value: Any) -> bool:
    """An array of objects: events (a line of JSON Lines may hold one, as a whole input may)."""
    return type(value) is list and bool(value) and all(type(item) is dict for item in value)


def _elements(
    elements: list[Any], prefix: str, spans: ElementBytes | None = None
) -> Iterator[Decoded]:
    for index, element in enumerate(elements):
        yield _element(element, f"{prefix}[{index}]", (spans, index) if spans else None)


def _element(element: Any, source: str, where: tuple[ElementBytes, int] | None) -> Decoded:
    if isinstance(element, dict):
        return RawEvent(element, source, element=where)
    reason = f"not an object: got {json_type(element)}"
    exact = _element_bytes(element, where)
    return Rejection(reason, source, _text(exact), _exact(exact))


def _envelope_keys(value: dict[str, Any]) -> list[str]:
    """`records`, `value` or both when the object wraps lists of events rather than being one
    (both: each list's events, none left out). Empty lists beside fields that are neither an
    envelope's nor a REST page's make an event (without a time: rejected), not an envelope of
    none: it would vanish, neither record nor dead letter."""
    if "time" in value or "eventTimestamp" in value:
        return []
    keys = [key for key in _ENVELOPE_KEYS if isinstance(value.get(key), list)]
    if keys and not any(value[key] for key in keys) and value.keys() - _ENVELOPE_FIELDS:
        return []
    return keys


def json_type(value: Any) -> str:
    """JSON's name for a parsed value's type: object, array, string, number, boolean, null."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _rejection(
    error: orjson.JSONDecodeError, source: str, raw: bytes, exact: bytes | None = None
) -> Rejection:
    """`raw` trimmed, for people; `exact`: the input's own bytes where they differ (a whole
    input's BOM and line ends), which its dead letter keeps."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        reason = f"not UTF-8: {bad.reason} at byte {bad.start} (shown as \\x escapes)"
        return Rejection(reason, source, _text(raw), exact or _exact(raw))
    return Rejection(f"not JSON: {error}", source, text, b"" if exact == raw else exact or b"")
