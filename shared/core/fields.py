"""Reading one input field for a column: the helpers every column rule shares. Pure.

Each reader takes the event, the record's `warnings` and `extra` (its AdditionalFields): a value
of the wrong JSON type for its column is kept in `extra` whole, with a warning, never dropped.
"""

from __future__ import annotations

from typing import Any

import orjson

from shared.core.decode import json_type, loads

JSON_SPACE = " \t\r\n"
_REST_KEYS = frozenset({"value", "localizedValue"})


def string_field(
    event: dict[str, Any], key: str, warnings: list[str], extra: dict[str, Any]
) -> str:
    """A string column's input: text as received ('' when absent); a JSON scalar as its text."""
    value = event.get(key)
    if type(value) is str:
        return value
    if value is None:
        return ""
    text = scalar_text(value)
    if text is None:
        extra[key] = value
        kind = json_type(value)
        warnings.append(f"{key} is a JSON {kind}, not a string; kept in AdditionalFields")
        return ""
    return text


def rest_field(
    event: dict[str, Any], key: str, warnings: list[str], extra: dict[str, Any]
) -> tuple[str, str]:
    """(value, localizedValue) of a REST `{value, localizedValue}` field, or (text, '')."""
    field = event.get(key)
    if not isinstance(field, dict):
        return string_field(event, key, warnings, extra), ""
    value = scalar_text(field.get("value"))
    localized = scalar_text(field.get("localizedValue"))
    if value is None or localized is None or not _REST_KEYS.issuperset(field):
        extra[key] = field  # more than the columns can hold: kept whole
    return value or "", localized or ""


def localized_differs(localized: str, value: str) -> bool:
    return bool(localized) and localized != value


def object_field(
    event: dict[str, Any], key: str, warnings: list[str], extra: dict[str, Any]
) -> dict[str, Any] | None:
    value = event.get(key)
    if value is None:
        return None
    parsed = object_of(value)
    if parsed is None:
        extra[key] = value
        warnings.append(f"{key} is a JSON {json_type(value)}, not an object")
    return parsed


def object_of(value: object) -> dict[str, Any] | None:
    """The object itself, or the object a string holds as JSON; None for anything else."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.lstrip(JSON_SPACE).startswith("{"):
        try:
            parsed = loads(value)
        except orjson.JSONDecodeError:
            return None
        if isinstance(parsed, dict):
            return parsed
    return None


def as_text(value: object) -> str:
    text = scalar_text(value)
    return text if text is not None else ""


def scalar_text(value: object) -> str | None:
    """A JSON scalar as text ('' for null); None for an object or array."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def short(value: object, limit: int = 80) -> str:
    """A value as a warning or a reason shows it: its repr, cut at `limit` characters."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
