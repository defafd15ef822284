"""The spec's closed vocabularies: CategoryValue, ActivityStatusValue and Level, each matched
without regard to case, with what the input said otherwise kept and noted. Pure."""

from __future__ import annotations

from typing import Any

from shared.core.fields import as_text, localized_differs, rest_field, short
from shared.core.records import CATEGORIES

_ADMINISTRATIVE = "Administrative"
_CATEGORY_BY_NAME: dict[str, str] = {category.lower(): category for category in CATEGORIES}
# The legacy export's categories were the kind of write; all of them are administrative.
_CATEGORY_BY_NAME.update(write=_ADMINISTRATIVE, delete=_ADMINISTRATIVE, action=_ADMINISTRATIVE)

_STATUS_BY_NAME = {
    "success": "Succeeded",
    "succeeded": "Succeeded",
    "start": "Started",
    "started": "Started",
    "accept": "Accepted",
    "accepted": "Accepted",
    "failure": "Failed",
    "failed": "Failed",
}

_LEVEL_BY_NAME = {
    "critical": "Critical",
    "error": "Error",
    "warning": "Warning",
    "information": "Informational",
    "informational": "Informational",
    "verbose": "Verbose",
}
_LEVEL_BY_NUMBER = {1: "Critical", 2: "Error", 3: "Warning", 4: "Informational", 5: "Verbose"}
_LEVEL_BY_DIGIT = {str(number): name for number, name in _LEVEL_BY_NUMBER.items()}
LEVELS = tuple(_LEVEL_BY_NUMBER.values())


def level_name(text: str) -> str | None:
    """A level as the normalizer names it (`information`, `3`), or None for no level."""
    stripped = text.strip()
    return _LEVEL_BY_NAME.get(stripped.lower()) or _LEVEL_BY_DIGIT.get(stripped)


def category_column(
    event: dict[str, Any], event_category: object, warnings: list[str], extra: dict[str, Any]
) -> str:
    """CategoryValue: `properties.eventCategory` when it names one, else `category`."""
    named = (
        _CATEGORY_BY_NAME.get(event_category.strip().lower())
        if isinstance(event_category, str)
        else None
    )
    if "category" not in event:
        received = localized = ""
    elif type(event["category"]) is str:
        received, localized = event["category"], ""
    else:
        received, localized = rest_field(event, "category", warnings, extra)
    mapped = _CATEGORY_BY_NAME.get(received.strip().lower())
    category = named or mapped
    if category is None:
        category = received or as_text(event_category)
        warnings.append(f"unknown category {category!r}" if category else "no category")
    elif received and mapped != category:
        extra["category"] = event["category"]  # it named another category than eventCategory
    if localized_differs(localized, received):
        extra["category"] = event["category"]
    return category


def status_value(value: str) -> str:
    """ActivityStatusValue's name for a status (a trailing `.` ignored), else it trimmed."""
    trimmed = value.strip()
    name = trimmed.lower()
    if name.endswith("."):
        name = name[:-1]
    return _STATUS_BY_NAME.get(name, trimmed)


def level_column(event: dict[str, Any], warnings: list[str], extra: dict[str, Any]) -> str:
    """Level: a `level` or `Level` name wins over a number; a disagreement is noted."""
    lower, upper = event.get("level"), event.get("Level")
    if upper is None and type(lower) is str:  # the usual case, one level name
        name = _LEVEL_BY_NAME.get(lower.strip().lower())
        if name is not None:
            return name
    given = [
        (key, value) for key, value in (("level", lower), ("Level", upper)) if value is not None
    ]
    chosen_key, chosen = "", ""
    for key, value in given:  # a level name wins over a number
        if isinstance(value, str) and value.strip().lower() in _LEVEL_BY_NAME:
            chosen_key, chosen = key, _LEVEL_BY_NAME[value.strip().lower()]
            break
    else:
        for key, value in given:
            number = _level_number(value)
            if number:
                chosen_key, chosen = key, number
                break
    for key, value in given:
        if key == chosen_key:
            continue
        other = _level_number(value) or (
            _LEVEL_BY_NAME.get(value.strip().lower(), "") if isinstance(value, str) else ""
        )
        if other and other == chosen:
            continue
        extra[key] = value
        if chosen and other:
            warnings.append(
                f"levels disagree: {chosen_key}={short(event[chosen_key])} is {chosen}, "
                f"{key}={short(value)} is {other}; {chosen} kept"
            )
        else:
            warnings.append(f"unknown level {key}={short(value)}")
    return chosen


def _level_number(value: object) -> str:
    if isinstance(value, bool):
        return ""
    if isinstance(value, int):
        return _LEVEL_BY_NUMBER.get(value, "")
    if isinstance(value, float):
        return _LEVEL_BY_NUMBER.get(int(value), "") if value.is_integer() else ""
    if isinstance(value, str):
        return _LEVEL_BY_DIGIT.get(value.strip(), "")
    return ""
