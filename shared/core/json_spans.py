"""Where each element of an input's array sits in its bytes: so that a rejected element of an
envelope is dead-lettered as it was sent, byte for byte, not as its parsed value written back
(which loses a duplicate key's earlier value, the number's own spelling, the spacing). Pure.

Found only when a rejection asks (a scan of the input in Python), and checked by the caller:
bytes that do not parse to the element are not used.
"""

from __future__ import annotations

import re

_TOKENS = re.compile(rb'["\[\]{},:]')  # all that moves a scan: strings, nesting, separators
_SPACE = b" \t\r\n"


def array_spans(data: bytes, key: str | None) -> list[tuple[int, int]] | None:
    """[start, end) of each element of the input's top-level array (`key` None) or of the array
    under `key` in its top-level object (the last such key, as parsers keep); None if none."""
    wanted = None if key is None else key.encode("utf-8")
    depth, position = 0, 0
    inner = 1 if wanted is None else 2  # the depth of the array's elements' separators
    last_key: bytes | None = None
    after_key = False
    spans: list[tuple[int, int]] | None = None
    current: list[tuple[int, int]] | None = None
    start = 0
    while (found := _TOKENS.search(data, position)) is not None:
        at, char = found.start(), data[found.start()]
        position = at + 1
        if char == ord('"'):
            position = _string_end(data, at + 1)
            if depth == 1 and not after_key:
                last_key = data[at + 1 : position - 1]
            after_key = False
        elif char in b"[{":
            depth += 1
            opens = char == ord("[") and (after_key if wanted is not None else depth == 1)
            if opens and depth == inner:
                current, start = [], at + 1
            after_key = False
        elif char in b"]}":
            if current is not None and depth == inner:
                _add(data, current, start, at)
                spans, current = current, None
            depth -= 1
        elif char == ord(","):
            if current is not None and depth == inner:
                _add(data, current, start, at)
                start = at + 1
            after_key = False
        else:  # ":" after a key: is it the key whose array is wanted?
            after_key = depth == 1 and wanted is not None and last_key == wanted
            last_key = None
    return spans


def _string_end(data: bytes, position: int) -> int:
    """The index after the quote that ends a string whose text starts at `position`."""
    while True:
        quote = data.find(b'"', position)
        if quote < 0:
            return len(data)
        slashes = 0
        while data[quote - 1 - slashes] == ord("\\"):
            slashes += 1
        if slashes % 2 == 0:
            return quote + 1
        position = quote + 1


def _add(data: bytes, spans: list[tuple[int, int]], start: int, end: int) -> None:
    while start < end and data[start] in _SPACE:
        start += 1
    while end > start and data[end - 1] in _SPACE:
        end -= 1
    if end > start:
        spans.append((start, end))


class ElementBytes:
    """The bytes of the elements of one array of an input, scanned for on the first ask."""

    __slots__ = ("_data", "_key", "_spans")

    def __init__(self, data: bytes | memoryview, key: str | None) -> None:
        self._data = data
        self._key = key
        self._spans: list[tuple[int, int]] | None = None

    def get(self, index: int) -> bytes | None:
        if self._spans is None:
            self._spans = array_spans(bytes(self._data), self._key) or []
        if index >= len(self._spans):
            return None
        start, end = self._spans[index]
        return bytes(self._data[start:end])


class InnerElementBytes(ElementBytes):
    """The elements of an array inside an element of the input's array (the records of one of
    a list of Event Hub bodies): that element's bytes found first, on the first ask."""

    __slots__ = ("_index", "_outer")

    def __init__(self, outer: ElementBytes, index: int, key: str) -> None:
        super().__init__(b"", key)
        self._outer: ElementBytes | None = outer
        self._index = index

    def get(self, index: int) -> bytes | None:
        if self._outer is not None:
            self._data = self._outer.get(self._index) or b""
            self._outer = None
        return super().get(index)
