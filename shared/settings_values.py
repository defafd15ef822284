"""The plain value readers of shared/settings.py, and the error that names a bad setting.

Split from shared/settings.py (which re-exports SettingsError, its public home) to keep that
module within its size; nothing here knows a setting's name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# ASCII only: int() also reads full-width and Arabic-Indic digits and `_` separators, values a
# person checking the setting in the portal would not read as the number the app uses.
_WHOLE = re.compile(r"[+-]?[0-9]+", re.ASCII)


def ascii_whole(text: str) -> int | None:
    """`text` as a whole number written in ASCII digits (an optional sign), else None."""
    stripped = text.strip()
    return int(stripped) if _WHOLE.fullmatch(stripped) else None


class SettingsError(ValueError):
    """A missing or bad app setting; the message names the setting, and so does `setting`."""

    def __init__(self, message: str, setting: str = "") -> None:
        super().__init__(message)
        self.setting = setting


def whole_number(
    env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int
) -> int:
    """The setting as a whole number within [minimum, maximum]; `default` when unset."""
    text = env.get(name, "").strip()
    if not text:
        return default
    value = ascii_whole(text)
    if value is None:
        raise SettingsError(f"{name} must be a whole number, got {text[:40]!r}", name)
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}", name)
    if value > maximum:
        raise SettingsError(f"{name} must be at most {maximum}, got {value}", name)
    return value


def flag(env: Mapping[str, str], name: str) -> bool:
    """The setting as true or false; false when unset."""
    text = env.get(name, "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be true or false, got {text!r}", name)
