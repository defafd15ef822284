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
from itertools import pairwise
from typing import Any

import orjson

from shared.core.decode_parts import (
    ENVELOPE_KEYS,
    envelope_keys,
    events_array,
    exact_of,
    json_type,
    rejection,
    text_of,
)
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
from shared.core.json_spans import ElementBytes, InnerElementBytes, array_spans
from shared.core.records import Rejection
from shared.core.repeated_names import may_repeat_names, repeated_names

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
            return text_of(self.raw_bytes)
        return text_of(self.text_bytes)

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
            refused = _readable_apart(whole) if _holds_arrays(buffer) else None
            if refused is not None:
                yield from _each_alone(refused, source, buffer[start:], error, buffer)
                return
            if one_value_across_lines(buffer, first.start(), error):
                yield rejection(error, source, buffer[start:].strip(_JSON_SPACE), buffer)
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
    error: orjson.JSONDecodeError | str,
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
        keys = envelope_keys(value)
        lists = [(f"{source}#{key}", ElementBytes(raw, key), len(value[key])) for key in keys]
    if not lists:  # one event: the input is its text
        yield rejection(error, source, whole, exact)
        return
    for prefix, spans, count in lists:
        for index in range(count):
            found = spans.get(index)
            if found is None:  # not where a scan finds it: the whole input stands for it
                yield rejection(error, f"{prefix}[{index}]", whole, exact)
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
            if not isinstance(value, dict) and not events_array(value):
                waiting.extend(_expand(value, line_source, line, arrays=False, whole=whole))
                continue
            seen_object = True
            yield from waiting
        if (
            type(value) is dict
            and ("time" in value or "eventTimestamp" in value)
            and not may_repeat_names(line, value)
        ):
            yield RawEvent(value, line_source, line, whole=whole)  # the usual line: one event
        else:
            yield from _expand(value, line_source, line, arrays=False, whole=whole)
    if not seen_object:
        trimmed = buffer[start:].strip(_JSON_SPACE)
        try:
            orjson.loads(trimmed)
        except orjson.JSONDecodeError as error:
            yield rejection(error, source, trimmed, buffer)


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
    refused = _readable_apart(line) if _holds_arrays(line) else None
    if refused is not None:
        return list(_each_alone(refused, source, line, error, whole))
    return [rejection(error, source, line, whole)]


def _bytes_of(data: bytes | str) -> bytes:
    if isinstance(data, str):
        # Lone surrogates (text that came from broken bytes) stay invalid, to be rejected.
        return data.encode("utf-8", "surrogatepass")
    return data if isinstance(data, bytes) else bytes(data)


def _expand(  # noqa: PLR0913 - the value and where it is from, then how to read it, by name
    value: Any,
    source: str,
    raw: bytes | memoryview,
    *,
    arrays: bool = True,
    whole: bytes | None = None,
    checked: bool = False,
) -> Iterator[Decoded]:
    """The events in one parsed value: itself, its envelope's records, or an array's items.
    `whole`: the input's own bytes, when the value is all of it (kept by a rejection);
    `checked`: `raw` is known to repeat no name."""
    if not checked and isinstance(value, dict | list) and may_repeat_names(raw, value):
        yield from _repeating(value, source, raw, arrays=arrays, whole=whole)
        return
    if isinstance(value, dict):
        keys = envelope_keys(value)
        if not keys:
            yield RawEvent(value, source, raw, whole=whole)
        for key in keys:
            yield from _elements(value[key], f"{source}#{key}", ElementBytes(raw, key))
    elif isinstance(value, list) and (arrays or events_array(value)):
        spans = ElementBytes(raw, None)
        for index, element in enumerate(value):
            element_source = f"{source}#[{index}]"
            keys = envelope_keys(element) if isinstance(element, dict) else []
            if not keys:
                yield _element(element, element_source, (spans, index))
            for key in keys:  # a list of Event Hub bodies: each envelope expands in place
                inner = InnerElementBytes(spans, index, key)
                yield from _elements(element[key], f"{element_source}#{key}", inner)
    else:
        text = text_of(raw)
        exact = whole if whole is not None and whole != text.encode() else exact_of(raw)
        yield Rejection(f"not an object: got {json_type(value)}", source, text, exact)


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
    return Rejection(reason, source, text_of(exact), exact_of(exact))


def _repeating(
    value: dict[str, Any] | list[Any],
    source: str,
    raw: bytes | memoryview,
    *,
    arrays: bool,
    whole: bytes | None,
) -> Iterator[Decoded]:
    """A value whose input may repeat a name in an object (shared.core.repeated_names): as
    any other when none does; else one rejection when the repeat is the input's own (one
    event, or its envelope), or each element read on its own, so that only those holding a
    repeat are rejected."""
    data = bytes(raw)
    top, anywhere = repeated_names(data, top_is_object=isinstance(value, dict))
    if anywhere is None:  # the count's false alarm
        yield from _expand(value, source, raw, arrays=arrays, whole=whole, checked=True)
        return
    named = top if top is not None else anywhere
    reason = (
        f"an object repeats the name {named!r}: JSON names must be unique (RFC 8259), and a "
        "reader keeps one of its values only"
    )
    lists = isinstance(value, list) and (arrays or events_array(value))
    if top is None and (lists or (isinstance(value, dict) and envelope_keys(value))):
        yield from _each_alone(value, source, data.strip(_JSON_SPACE), reason, whole)
    else:
        yield rejection(reason, source, data.strip(_JSON_SPACE), whole)


def _readable_apart(raw: bytes | memoryview) -> dict[str, Any] | list[Any] | None:
    """An input the reader refuses as a whole, as `_each_alone` reads it element by element:
    its value when JSON's grammar takes it (a lone surrogate escape, nesting past 1,024
    levels); else, when it is an envelope or array whose only fault is inside its elements
    (NaN, a raw control character, bytes that are not UTF-8, nesting past any parser's
    depth), a stand-in of its shape (a list of as many elements); None when neither."""
    refused = json_grammar_loads(raw)
    if isinstance(refused, dict | list):
        return refused
    data = bytes(raw).strip(_JSON_SPACE)
    for key in (*ENVELOPE_KEYS, None):
        spans = array_spans(data, key)
        if not spans:
            continue
        between = (data[end:start].strip(_JSON_SPACE) for (_, end), (start, _) in pairwise(spans))
        if any(separator != b"," for separator in between):
            continue  # `},,{`: broken between its elements, not in one
        shell = data[: spans[0][0]] + data[spans[-1][1] :]  # the input, its list emptied
        shape = json_grammar_loads(shell)
        named_once = repeated_names(shell, top_is_object=key is not None)[1] is None
        if not named_once:
            continue
        if key is None and shape == []:
            return [None] * len(spans)
        if key is not None and isinstance(shape, dict) and envelope_keys(shape) == [key]:
            return {key: [None] * len(spans)}
    return None
