"""Records nested deeper than JSON writers take, made writable. Pure.

orjson reads 1,024 levels but writes only 254, and every writer of a record here is orjson's
(its EventKey, its archive line, a Logs Ingestion post). An event nested deeper (its own JSON,
or a request body held as a JSON string and parsed, which a caller controls) still becomes a
record: each part deeper than MAX_NESTING levels is kept as its JSON text, a string, and the
record's NormalizationWarnings name where. Never a rejection: the spec rejects only what is
not JSON, not an object, or has no time.
"""

from __future__ import annotations

from typing import Any

from shared.core.exact_json import json_bytes

MAX_NESTING = 128  # levels from the record itself: room to spare for any wrapper around it
_SHOWN_PATHS = 3
_PATH_CHARS = 120


Place = tuple[str | int, ...]  # a part's column, then its keys and list positions


def flatten_deep(record: dict[str, Any], warnings: list[str]) -> None:
    """Each of the record's parts nested past MAX_NESTING levels replaced by its JSON text."""
    places: list[Place] = []
    record.update(held_to_depth(record, places))
    if places:
        paths = [_shown(place) for place in places]
        more = f" and {len(paths) - _SHOWN_PATHS} more" if len(paths) > _SHOWN_PATHS else ""
        shown = ", ".join(paths[:_SHOWN_PATHS])
        warnings.append(
            f"nested deeper than {MAX_NESTING} levels, kept as JSON text: {shown}{more}"
        )


def held_to_depth(
    record: dict[str, Any], places: list[Place], *, sort_keys: bool = False
) -> dict[str, Any]:
    """The record with each part past MAX_NESTING levels as its JSON text (with `sort_keys`,
    each object in it written in the order of its keys), and in `places`, where those were."""
    return {
        column: _held(value, 2, (column,), places, sort_keys)
        if isinstance(value, dict | list)
        else value
        for column, value in record.items()
    }


def _held(value: Any, depth: int, place: Place, places: list[Place], sort_keys: bool) -> Any:
    if depth > MAX_NESTING:
        places.append(place)
        return json_bytes(value, sort_keys=sort_keys).decode()
    if type(value) is dict:
        return {
            key: _held(inner, depth + 1, (*place, key), places, sort_keys)
            if isinstance(inner, dict | list)
            else inner
            for key, inner in value.items()
        }
    return [
        _held(inner, depth + 1, (*place, number), places, sort_keys)
        if isinstance(inner, dict | list)
        else inner
        for number, inner in enumerate(value)
    ]


def _shown(place: Place) -> str:
    column, *steps = place
    path = str(column) + "".join(f"[{step}]" if type(step) is int else f".{step}" for step in steps)
    return path if len(path) <= _PATH_CHARS else path[:_PATH_CHARS] + "..."
