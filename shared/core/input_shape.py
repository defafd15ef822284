"""What an input's lines say of its form: JSON Lines, or one value over many lines. Pure.

Used by the decoder (shared.core.decode) to tell a file of JSON Lines whose first line is bad
from a pretty-printed document cut short or broken inside, which is one bad input.
"""

from __future__ import annotations

import re

import orjson

BOM = b"\xef\xbb\xbf"
_LINE_SPACE = b" \t\r"  # JSON's own white space, less the newline that ends a line
_JSON_SPACE = b" \t\r\n"
_NON_SPACE = re.compile(rb"[^ \t\r\n]")


def one_value_across_lines(buffer: bytes, first: int, error: orjson.JSONDecodeError) -> bool:
    """Whether the input is one value spread over lines and broken (a pretty-printed document
    cut short, or with an error inside): one bad input, not JSON Lines. So when its parse went
    on past the start of the second line (the first line opened a value the next continued)
    and either ran into the input's end (cut short), or no line after the first is a whole
    object (JSON Lines' lines are: a first line cut so that the next one fills it, a
    `{"records":[` or a `[`, spoils only itself)."""
    newline = buffer.find(b"\n", first)
    second = _NON_SPACE.search(buffer, newline) if newline >= 0 else None
    if second is None or (error.lineno, error.colno) <= _line_and_column(buffer, second.start()):
        return False
    end = len(buffer.rstrip(_JSON_SPACE))
    return (error.lineno, error.colno) >= _line_and_column(buffer, end) or not _object_line(
        buffer, newline
    )


def _line_and_column(buffer: bytes, position: int) -> tuple[int, int]:
    """The 1-based line and column of a position, as the parser's errors give them."""
    return buffer.count(b"\n", 0, position) + 1, position - buffer.rfind(b"\n", 0, position)


def _object_line(buffer: bytes, position: int) -> bool:
    """Whether a line from `position` on holds one whole JSON object."""
    while position < len(buffer):
        line, position = line_at(buffer, position)
        if line.startswith(b"{") and line.endswith(b"}"):
            try:
                if isinstance(orjson.loads(line), dict):
                    return True
            except orjson.JSONDecodeError:
                continue
    return False


def starts_json_lines(buffer: bytes, first: int) -> bool:
    """True when the first line is a whole JSON value and more follows: JSON Lines for sure.

    Such an input cannot parse whole, and finding that out costs orjson a pass over all of it
    (a third of the time of a large blob), so it is skipped.
    """
    newline = buffer.find(b"\n", first)
    if newline < 0 or _NON_SPACE.search(buffer, newline) is None:
        return False
    try:
        orjson.loads(buffer[first:newline])
    except orjson.JSONDecodeError:
        return False
    return True


def line_at(buffer: bytes, position: int) -> tuple[bytes, int]:
    """The line from `position`, trimmed, and where the next begins. A BOM that starts a line
    (files joined end to end) is passed over, as the blob path's reader passes it."""
    newline = buffer.find(b"\n", position)
    if newline < 0:
        newline = len(buffer)
    line = buffer[position:newline].strip(_LINE_SPACE)
    if line.startswith(BOM):
        line = line[len(BOM) :].strip(_LINE_SPACE)
    return line, newline + 1
