"""JSON read and written exactly: numbers no machine type holds kept as their text, and any
parsed value written back, however deep. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
import sys
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

# A number a machine type may not hold makes an input parse again, exactly, whatever else it
# holds, so that a number reads the same whatever its neighbours (an event's key must not
# depend on them): a token (after `:`, `,` or `[`) whose digits before any exponent run to
# 16 characters or more (a float keeps 15 significant digits), or whose exponent has three
# characters or more (`1e-999` is 0.0 to a float, `1e400` infinity; two digits stay within
# a float's range). A regular expression over the raw input costs as much as the parse itself,
# so the input is first translated to a shape: number characters "0", an exponent's letter
# "E", the three that can precede a number "!", white space gone, anything else "x"; one
# search of that shape with a literal first character is cheap (0.03 ms for 30 KB). Digit
# runs inside strings (`/ticks/638...` in event ids, GUIDs, IPv6 addresses) follow a letter, a
# quote or a slash, never those three.
_NUMBER_SHAPE = bytearray(b"x" * 256)
for _char in b"0123456789.-+":
    _NUMBER_SHAPE[_char] = ord("0")
for _char in b"eE":
    _NUMBER_SHAPE[_char] = ord("E")
for _char in b":,[":
    _NUMBER_SHAPE[_char] = ord("!")
_NUMBER_TABLE = bytes(_NUMBER_SHAPE)
# In that shape: 16 number characters, or 1 to 15 then an exponent of three or more.
_ODD_NUMBER = re.compile(rb"!0(?:0{15}|0{0,14}E000)")
# The standard parser (the exact one) recurses once a level; orjson reads 1,024 levels.
_EXACT_DEPTH = 1024 + 200
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_UINT64_DIGITS = len(str(_UINT64_MAX))  # 20


class ExactNumber(str):
    """A JSON number that no int64/uint64 or float holds exactly, kept as its decimal text.

    It is written out as that text (a JSON string); in an EventKey it is hashed as the bare
    number, so it never collides with the neighbour a float would have rounded it to, nor with
    the same digits sent as a string.
    """

    __slots__ = ()


def _exact_int(text: str) -> int | ExactNumber:
    digits = len(text) - text.startswith("-")
    if digits > _UINT64_DIGITS:  # also keeps int() clear of Python's limit on digits
        return ExactNumber(text)
    value = int(text)
    return value if _INT64_MIN <= value <= _UINT64_MAX else ExactNumber(text)


def _exact_float(text: str) -> float | ExactNumber:
    value = float(text)
    try:
        # A float stays a float when its shortest form is the very number that was sent.
        exact = Decimal(repr(value)) == Decimal(text)
    except InvalidOperation:  # inf or nan: the text was out of a float's range
        exact = False
    return value if exact else ExactNumber(text)


def loads(data: bytes | memoryview | str) -> Any:
    """Parse JSON like orjson, but numbers a machine type would round stay exact (ExactNumber).

    Raises orjson.JSONDecodeError for input that is not JSON.
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        # `1e400` is JSON, though orjson will not read it ("number is infinity"): the exact
        # parser does; anything else orjson refuses (a lone surrogate, NaN) stays refused.
        if "infinity" not in error.msg or not _may_hold_odd_numbers(data):
            raise
        try:
            value = _exact_loads(data)
            json.dumps(value, ensure_ascii=False).encode("utf-8")  # no lone surrogate either
        except (ValueError, RecursionError):
            raise error from None  # not JSON orjson would take: its reason stands
        return value
    if not _may_hold_odd_numbers(data):
        return value
    try:
        return _exact_loads(data)
    except RecursionError:  # a thread with less stack: orjson's reading stands
        return value


def json_grammar_loads(data: bytes | memoryview | str) -> Any | None:
    """The value of JSON that orjson may refuse though the grammar allows it (a lone UTF-16
    surrogate escape, nesting past 1,024 levels, to the standard parser's depth); None when it
    is not JSON at all."""
    try:
        return _exact_loads(data)
    except (ValueError, RecursionError):
        return None


def raise_recursion_floor() -> None:
    """Let the standard parser (which recurses once a level) read as deep as orjson does."""
    if sys.getrecursionlimit() < _EXACT_DEPTH:
        sys.setrecursionlimit(_EXACT_DEPTH)  # a process-wide floor


def _exact_loads(data: bytes | memoryview | str) -> Any:
    """The standard parser with exact numbers; JSON's grammar only (no NaN or Infinity)."""
    raise_recursion_floor()
    return json.loads(
        data if isinstance(data, str | bytes) else bytes(data),
        parse_int=_exact_int,
        parse_float=_exact_float,
        parse_constant=_not_json,
    )


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _may_hold_odd_numbers(data: bytes | memoryview | str) -> bool:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    return _ODD_NUMBER.search(raw.translate(_NUMBER_TABLE, b" \t\r\n")) is not None


def json_bytes(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact JSON of a parsed value, ExactNumbers as the bare numbers they are: orjson's,
    or, nested past the 254 levels orjson writes, the same text built without recursion;
    with `sort_keys`, each object's members in the order of their keys."""
    option = _PASS_SUBCLASS | (orjson.OPT_SORT_KEYS if sort_keys else 0)
    try:
        return orjson.dumps(value, option=option, default=bare_number)
    except orjson.JSONEncodeError:
        pass
    out = bytearray()
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if type(item) is bytes:  # text already made (parsed JSON holds no bytes)
            out += item
        elif type(item) is dict:
            parts: list[Any] = [b"{"]
            members = sorted(item.items()) if sort_keys else item.items()
            for number, (key, inner) in enumerate(members):
                parts += [b"," if number else b"", orjson.dumps(key) + b":", inner]
            stack.extend(reversed([*parts, b"}"]))
        elif type(item) is list:
            parts = [b"["]
            for number, inner in enumerate(item):
                parts += [b"," if number else b"", inner]
            stack.extend(reversed([*parts, b"]"]))
        else:
            out += orjson.dumps(item, option=_PASS_SUBCLASS, default=bare_number)
    return bytes(out)


_PASS_SUBCLASS = orjson.OPT_PASSTHROUGH_SUBCLASS


def bare_number(value: object) -> orjson.Fragment:
    """orjson's `default` (with OPT_PASSTHROUGH_SUBCLASS): an ExactNumber as its own text."""
    if isinstance(value, ExactNumber):
        return orjson.Fragment(str.__str__(value))
    raise TypeError(f"not JSON: {type(value).__name__}")
