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


def flatten_deep(record: dict[str, Any], warnings: list[str]) -> None:
    """Each of the record's parts nested past MAX_NESTING levels replaced by its JSON text."""
    paths: list[str] = []
    for column, value in record.items():
        if isinstance(value, dict | list):
            record[column] = _flattened(value, 2, column, paths)
    if paths:
        more = f" and {len(paths) - _SHOWN_PATHS} more" if len(paths) > _SHOWN_PATHS else ""
        shown = ", ".join(paths[:_SHOWN_PATHS])
        warnings.append(
            f"nested deeper than {MAX_NESTING} levels, kept as JSON text: {shown}{more}"
        )


def _flattened(value: Any, depth: int, path: str, paths: list[str]) -> Any:
    if depth > MAX_NESTING:
        paths.append(path if len(path) <= _PATH_CHARS else path[:_PATH_CHARS] + "...")
        return json_bytes(value).decode()
    if type(value) is dict:
        return {
            key: _flattened(inner, depth + 1, f"{path}.{key}", paths)
            if isinstance(inner, dict | list)
            else inner
            for key, inner in value.items()
        }
    return [
        _flattened(inner, depth + 1, f"{path}[{number}]", paths)
        if isinstance(inner, dict | list)
        else inner
        for number, inner in enumerate(value)
    ]
