"""The plain value readers of shared/settings.py, and the error that names a bad setting.

Split from shared/settings.py (which re-exports SettingsError, its public home) to keep that
module within its size; nothing here knows a setting's name.
"""

from __future__ import annotations

from collections.abc import Mapping


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
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {text[:40]!r}", name) from None
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
