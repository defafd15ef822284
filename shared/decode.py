"""Turn input bytes in any of the spec's six forms into events, each with its source and raw text.

Pure: no I/O. Nothing raises for any input; what cannot become an event is a `Rejection`.

Sources name where an event came from: `file.json` (the whole input was one object),
`file.json:7` (JSON Lines, line 7, 1-based), `file.json#records[3]` (element 3, 0-based, of a
`records` envelope), `file.json#value[3]` (of a REST `{"value": [...]}` page), `file.json#[3]`
(of a bare array), combined as `file.json:7#records[3]` for an envelope on line 7.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from shared.records import Rejection

# JSON's own white space (str.strip() would also eat U+2028 and friends, which JSON does not),
# plus the byte order mark, which the spec says to ignore.
_JSON_SPACE = " \t\r\n\ufeff"
_LINE_SPACE = " \t\r\ufeff"
# Keys of a wrapper whose list holds the events: Event Hub bodies and old PT1H blobs use
# `records`; a REST / `az rest` page of the Activity Log uses `value` (spec-silent, accepted).
_ENVELOPE_KEYS = ("records", "value")
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
    """One decoded event: the JSON object, where it came from, and its own text."""

    event: dict[str, Any]
    source: str
    raw: str


Decoded = RawEvent | Rejection


def decode(data: bytes | str, source: str) -> Iterator[Decoded]:
    """Every event of one input (file, blob or Event Hub body), in order, or its rejection.

    The whole input is parsed first (an envelope, one object, pretty-printed or not, an array).
    When that fails it is read as JSON Lines, provided at least one line is a JSON object; then
    each bad line is one rejection and the others still decode. Otherwise the whole input is one
    rejection with the parser's reason.
    """
    text = _text_of(data)
    body = text.strip(_JSON_SPACE)
    if not body:
        return  # an empty blob or body holds no events
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        whole_error = error
    else:
        yield from _expand(value, source, body, arrays=True)
        return
    if "\n" not in body:
        yield _rejection(_reason(whole_error, body), source, body)
        return
    # Lines before the first object line wait: if no line is an object, the input is not
    # JSON Lines at all (plain text, a truncated pretty-printed object) and is one rejection.
    waiting: list[Decoded] = []
    seen_object = False
    for line_number, text_line in enumerate(text.split("\n"), 1):
        line = text_line.strip(_LINE_SPACE)
        if not line:
            continue
        line_source = f"{source}:{line_number}"
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            rejected = _rejection(_reason(error, line), line_source, line)
            if seen_object:
                yield rejected
            else:
                waiting.append(rejected)
            continue
        if not seen_object:
            if not isinstance(value, dict):
                waiting.extend(_expand(value, line_source, line, arrays=False))
                continue
            seen_object = True
            yield from waiting
        yield from _expand(value, line_source, line, arrays=False)
    if not seen_object:
        yield _rejection(_reason(whole_error, body), source, body)


def decode_line(line: bytes, source: str) -> Iterator[Decoded]:
    """The events of one JSON Lines line (an object, or a `records` envelope on one line).

    `source` is used as given (the caller names the blob and line number). A blank line yields
    nothing; a bad line yields one rejection; an array on a line is not an event.
    """
    text = _text_of(line).strip(_JSON_SPACE)
    if not text:
        return
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        yield _rejection(_reason(error, text), source, text)
        return
    yield from _expand(value, source, text, arrays=False)


def _text_of(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    # Invalid UTF-8 bytes survive as lone surrogates: orjson then refuses the line they are on,
    # which becomes a "not UTF-8" rejection whose raw text shows the bytes as \x escapes.
    # Replacing them (errors="replace") would alter the event silently instead.
    return bytes(data).decode("utf-8", "surrogateescape")


def _expand(value: Any, source: str, raw: str, *, arrays: bool) -> Iterator[Decoded]:
    if isinstance(value, dict):
        key = _envelope_key(value)
        if key is None:
            yield RawEvent(value, source, raw)
        else:
            yield from _elements(value[key], f"{source}#{key}")
    elif arrays and isinstance(value, list):
        for index, element in enumerate(value):
            element_source = f"{source}#[{index}]"
            key = _envelope_key(element) if isinstance(element, dict) else None
            if key is None:
                yield _element(element, element_source)
            else:  # a list of Event Hub bodies: each envelope expands in place
                yield from _elements(element[key], f"{element_source}#{key}")
    else:
        yield _rejection(f"not an object: got {_json_type(value)}", source, raw)


def _elements(elements: list[Any], prefix: str) -> Iterator[Decoded]:
    for index, element in enumerate(elements):
        yield _element(element, f"{prefix}[{index}]")


def _element(element: Any, source: str) -> Decoded:
    raw = orjson.dumps(element).decode()
    if isinstance(element, dict):
        return RawEvent(element, source, raw)
    return Rejection(f"not an object: got {_json_type(element)}", source, raw)


def _envelope_key(value: dict[str, Any]) -> str | None:
    """`records` or `value` when the object wraps a list of events rather than being one."""
    if "time" in value or "eventTimestamp" in value:
        return None
    for key in _ENVELOPE_KEYS:
        if isinstance(value.get(key), list):
            return key
    return None


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _reason(error: orjson.JSONDecodeError, text: str) -> str:
    if not _is_utf8(text):
        return "not UTF-8: the input holds bytes that are not UTF-8 (shown as \\x escapes)"
    return f"not JSON: {error}"


def _rejection(reason: str, source: str, raw: str) -> Rejection:
    if not _is_utf8(raw):
        raw = raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return Rejection(reason, source, raw)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
