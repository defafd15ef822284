"""The event time: `parse_time` turns every time form real exports carry into the one canonical
UTC text of the spec's `TimeGenerated`, or None. Pure."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

_ISO_TIME = re.compile(
    r"\s*([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2})"
    r"(?::([0-9]{2})(?:[.,]([0-9]+))?)?"
    r"\s*(?:[Zz]|([+-])([0-9]{2})(?::?([0-9]{2}))?)?\s*"
)
_US_TIME = re.compile(
    r"\s*([0-9]{1,2})/([0-9]{1,2})/([0-9]{4})[ T]+([0-9]{1,2}):([0-9]{2})"
    r"(?::([0-9]{2})(?:\.([0-9]+))?)?"
    r"\s*(?:([AaPp])[Mm])?"
    r"\s*(?:[Zz]|([+-])([0-9]{2})(?::?([0-9]{2}))?)?\s*"
)
_HALF_DAY, _MONTHS, _LAST_HOUR, _LAST_MINUTE, _LAST_SECOND = 12, 12, 23, 59, 59
_FEBRUARY, _LEAP_FEBRUARY = 2, 29
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_LAST_DAY = {f"{month:02d}": str(_DAYS_IN_MONTH[month]) for month in range(1, 13)} | {"02": "29"}


def parse_time(value: object) -> str | None:
    """`YYYY-MM-DDTHH:MM:SS.fffffffZ` in UTC, or None when the value is not a time we accept.

    Accepted: ISO-8601 with any number of fractional digits (beyond seven truncated, never
    rounded), `Z`, an offset (`+05:30`, `-0800`, `+05`) or no zone (UTC); and the US form
    `M/d/yyyy h:mm:ss` with optional fraction, `AM`/`PM` and offset. Impossible dates are None;
    `24:00:00` is the next day's midnight, and a leap second (`23:59:60`) the last tick of the
    second before it.
    """
    if not isinstance(value, str):
        return None
    match = _ISO_TIME.fullmatch(value)
    if match is None:
        return _parse_us_time(value)
    year, month, day, hour, minute, second, fraction, sign, offset_hours, offset_minutes = (
        match.groups()
    )
    second = second or "00"
    # ISO 8601's 24:00:00, the end of a day: validated as its last hour, then the next midnight.
    end_of_day = hour == "24" and minute == second == "00" and not (fraction or "").strip("0")
    if end_of_day:
        hour = "23"
    elif second == "60" and minute == "59":
        # A leap second (UTC inserts 23:59:60; local times keep the minute): no clock here
        # has it, so it is the last tick of the second before, in order among that minute's.
        second, fraction = "59", "9999999"
    # Validated on the digits as text: zero-padded two-digit fields compare like numbers.
    if (
        year == "0000"
        or not "01" <= month <= "12"
        or not "01" <= day <= _LAST_DAY[month]
        or (month == "02" and day == "29" and not _is_leap(int(year)))
        or hour > "23"
        or minute > "59"
        or second > "59"
    ):
        return None
    digits = (fraction + "000000")[:7] if fraction else "0000000"
    if end_of_day:
        return _next_midnight(int(year), int(month), int(day), (sign, offset_hours, offset_minutes))
    if sign is None or (offset_hours == "00" and offset_minutes in (None, "00")):
        return f"{year}-{month}-{day}T{hour}:{minute}:{second}.{digits}Z"
    moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    return _shifted(moment, digits, (sign, offset_hours, offset_minutes))


def _next_midnight(
    year: int, month: int, day: int, offset: tuple[str | None, str | None, str | None]
) -> str | None:
    try:
        moment = datetime(year, month, day) + timedelta(days=1)
    except OverflowError:
        return None  # 9999-12-31T24:00 has no day after it
    return _shifted(moment, "0000000", offset)


def _parse_us_time(value: str) -> str | None:
    match = _US_TIME.fullmatch(value)
    if match is None:
        return None
    month, day, year, hour, minute = (int(part) for part in match.group(1, 2, 3, 4, 5))
    second_text, fraction, meridiem = match.group(6, 7, 8)
    second = int(second_text) if second_text else 0
    if meridiem is not None:
        if not 1 <= hour <= _HALF_DAY:
            return None
        hour = hour % _HALF_DAY + (_HALF_DAY if meridiem in "Pp" else 0)
    if not (
        year >= 1
        and 1 <= month <= _MONTHS
        and 1 <= day <= _days_in_month(year, month)
        and hour <= _LAST_HOUR
        and minute <= _LAST_MINUTE
        and second <= _LAST_SECOND
    ):
        return None
    digits = (fraction + "000000")[:7] if fraction else "0000000"
    moment = datetime(year, month, day, hour, minute, second)
    sign, offset_hours, offset_minutes = match.group(9, 10, 11)
    return _shifted(moment, digits, (sign, offset_hours, offset_minutes))


def _shifted(
    moment: datetime, digits: str, offset: tuple[str | None, str | None, str | None]
) -> str | None:
    """The canonical text of a valid local time (naive), moved to UTC by its offset, if any:
    (sign, hours, minutes) as written."""
    sign, offset_hours, offset_minutes = offset
    if sign is not None and offset_hours is not None:
        hours = int(offset_hours)
        minutes = int(offset_minutes) if offset_minutes else 0
        if hours > _LAST_HOUR or minutes > _LAST_MINUTE:
            return None
        shift = timedelta(hours=hours, minutes=minutes)
        try:
            moment = moment - shift if sign == "+" else moment + shift
        except OverflowError:
            return None
    # The year by hand: strftime does not pad years before 1000.
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}.{digits}Z"


def _days_in_month(year: int, month: int) -> int:
    if month == _FEBRUARY and _is_leap(year):
        return _LEAP_FEBRUARY
    return _DAYS_IN_MONTH[month]


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
