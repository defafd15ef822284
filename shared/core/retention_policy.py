"""What retention keeps: days per category, and the cutoffs they give on a given day.

Pure: no I/O. A record goes when it is strictly older than its category's limit (by
TimeGenerated): what is older than the cutoff goes, what is at it or younger stays. The
archive deletes whole units, so a unit goes once all of it is past: a class's day once the
day's end is at or before the class's cutoff, a month's table once the month's end is at or
before the longest limit's cutoff. What may hold any category (Azure's PT1H.json blobs, dead
letters) goes only past the longest limit. A limit of 0 keeps forever, and a cutoff before
0001-01-01 simply takes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from shared.core.archive_keys import CLASS_CATEGORIES

_DECEMBER = 12
_YEAR_ONE = datetime(1, 1, 1, tzinfo=UTC)


def days_before(moment: datetime, days: int) -> datetime | None:
    """`days` days before `moment`; None when that is out of range (nothing is older)."""
    try:
        return moment - timedelta(days=days)
    except OverflowError:
        return None


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Days to keep, by default and per category; 0 keeps forever."""

    default_days: int
    category_days: Mapping[str, int] = field(default_factory=dict)

    def days_for(self, category: str) -> int:
        return self.category_days.get(category, self.default_days)

    def cutoff(self, category: str, as_of: datetime) -> datetime | None:
        """What is strictly older goes; None: nothing goes (kept forever, or before year 1)."""
        days = self.days_for(category)
        return None if days == 0 else days_before(as_of, days)

    def class_cutoff(self, archive_class: str, as_of: datetime) -> datetime | None:
        """The cutoff of an archive class: its category's, and the default's for `other`."""
        category = CLASS_CATEGORIES.get(archive_class)
        days = self.days_for(category) if category is not None else self.default_days
        return None if days == 0 else days_before(as_of, days)

    def class_day_past(self, archive_class: str, day: date, as_of: datetime) -> bool:
        """Whether a class's day is wholly past its retention by `as_of` (it may go whole)."""
        return wholly_past(day_end(day), self.class_cutoff(archive_class, as_of))

    def longest_cutoff(self, as_of: datetime) -> datetime | None:
        """For what may hold any category (month tables, PT1H.json blobs, dead letters)."""
        limits = (self.default_days, *self.category_days.values())
        return None if 0 in limits else days_before(as_of, max(limits))

    def expired(self, category: str, moment: datetime, as_of: datetime) -> bool:
        cutoff = self.cutoff(category, as_of)
        return cutoff is not None and moment < cutoff


def policy_from(default_days: int, category_days: Mapping[str, int]) -> RetentionPolicy:
    return RetentionPolicy(default_days=default_days, category_days=dict(category_days))


def day_end(day: date) -> datetime | None:
    """The first moment after a day; None after 9999-12-31 (never wholly past)."""
    if day == date.max:
        return None
    following = day + timedelta(days=1)
    return datetime(following.year, following.month, following.day, tzinfo=UTC)


def month_end(month: str) -> datetime | None:
    """The first moment after a `YYYYMM` month; None after 9999-12 (never wholly past)."""
    year, number = int(month[:4]), int(month[4:])
    if number < _DECEMBER:
        return datetime(year, number + 1, 1, tzinfo=UTC)
    return None if year == date.max.year else datetime(year + 1, 1, 1, tzinfo=UTC)


def wholly_past(end: datetime | None, cutoff: datetime | None) -> bool:
    """Everything before `end` is older than `cutoff`: the unit may go whole."""
    return end is not None and cutoff is not None and end <= cutoff


def moment_of_ticks(ticks: int) -> datetime:
    """A time in .NET ticks (100 ns since 0001-01-01) as a datetime, to the microsecond."""
    return _YEAR_ONE + timedelta(microseconds=ticks // 10)


def as_utc(moment: datetime) -> datetime:
    """The moment in UTC; clamped to the first or last representable one past either end."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # an offset that takes it past 0001-01-01 or 9999-12-31 in UTC
        return (
            datetime.min.replace(tzinfo=UTC)
            if moment.year == 1
            else datetime.max.replace(tzinfo=UTC)
        )
