"""What retention keeps: days per category, and the cutoffs they give on a given day.

Pure: no I/O. A record goes when it is strictly older than its category's limit (by
TimeGenerated, to the tick); what may hold any category (an archived PT1H.json blob, a dead
letter) goes only past the longest limit. A limit of 0 keeps forever, and a cutoff before
0001-01-01 simply takes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from shared.core.keys import day_partition, month_bucket, record_row_key, time_of_row_key

# The time a RowKey gives (records table or lookup table).
RowTime = Callable[[str], datetime]


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

    def longest_cutoff(self, as_of: datetime) -> datetime | None:
        """For what may hold any category (archive blobs, dead letters): past every limit."""
        limits = (self.default_days, *self.category_days.values())
        return None if 0 in limits else days_before(as_of, max(limits))

    def blob_cutoff(self, as_of: datetime) -> datetime | None:
        """Blobs mix categories: they go only past the longest limit (never, if one is 0)."""
        return self.longest_cutoff(as_of)

    def expired(self, category: str, moment: datetime, as_of: datetime) -> bool:
        cutoff = self.cutoff(category, as_of)
        return cutoff is not None and moment < cutoff

    def category_groups(self, as_of: datetime) -> list[CategoryGroup]:
        """Categories grouped by their cutoff: each override, then every other category."""
        overridden = tuple(self.category_days)
        groups = []
        for category, days in self.category_days.items():
            cutoff = days_before(as_of, days) if days else None
            if cutoff is not None:
                groups.append(CategoryGroup(cutoff, (category,), ()))
        default = days_before(as_of, self.default_days) if self.default_days else None
        if default is not None:
            groups.append(CategoryGroup(default, (), overridden))
        return groups


@dataclass(frozen=True, slots=True)
class CategoryGroup:
    """Rows whose category is one of `only` (or, when empty, none of `besides`) and their cutoff."""

    cutoff: datetime
    only: tuple[str, ...]
    besides: tuple[str, ...]

    def filter(self) -> tuple[str, dict[str, str]]:
        """The category condition (to follow another) and its bound parameters."""
        names = self.only or self.besides
        parameters = {f"category{number}": name for number, name in enumerate(names)}
        if self.only:
            either = " or ".join(f"CategoryValue eq @{name}" for name in parameters)
            # The SDK finds each @name between spaces: the parentheses stand apart.
            return f" and ( {either} )", parameters
        return "".join(f" and CategoryValue ne @{name}" for name in parameters), parameters


def policy_from(default_days: int, category_days: Mapping[str, int]) -> RetentionPolicy:
    return RetentionPolicy(default_days=default_days, category_days=dict(category_days))


def lookup_time(row_key: str) -> datetime:
    """The time of a lookup row: its record's RowKey's."""
    return time_of_row_key(record_row_key(row_key))


def time_or_none(row_time: RowTime, row_key: str) -> datetime | None:
    """The time a RowKey gives; None for one that gives none (written by something else)."""
    try:
        return row_time(row_key)
    except (ValueError, OverflowError):
        return None


def day_after(moment: datetime) -> str:
    """The day partition after the moment's day: an exclusive upper bound, to 9999-12-31."""
    day = moment.date()
    return "99991232" if day == date.max else day_partition(day + timedelta(days=1))


_DECEMBER = 12


def month_after(moment: datetime) -> str:
    """The month bucket after the moment's month: an exclusive upper bound, to 9999-12."""
    if moment.month < _DECEMBER:
        return month_bucket(date(moment.year, moment.month + 1, 1))
    return "999913" if moment.year == date.max.year else month_bucket(date(moment.year + 1, 1, 1))


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
