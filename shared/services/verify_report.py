"""`verify`'s report: the kinds of problem it names, and the range of days it checks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.core.archive_keys import month_of

# What makes the archive unproven (exit 3); `foreign` (nothing the app wrote) and `expiring`
# (what a stopped retention run left of a class-day past retention) are reported beside them.
FAILURES = (
    "missing",
    "altered",
    "duplicated",
    "unarchived",
    "unindexed",
    "dangling",
    "orphaned",
    "stray",
)
KINDS = (*FAILURES, "foreign", "expiring")
# Details the repair reads: a loss it must leave named, since nothing else would name it.
MISSING = "committed, and the blob is gone"
MISSING_UNCLAIMED = MISSING + "; no claim names its events (they are named nowhere else)"
GONE_WHOLE = "its class-day is gone whole, but younger than its retention"
MAX_LISTED = 10_000  # problems listed per kind; the counts go on past it


@dataclass(frozen=True, slots=True)
class Problem:
    name: str  # a blob's name, an EventKey, or a row's `month/PartitionKey/RowKey`
    detail: str
    blobs: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "detail": self.detail, "blobs": list(self.blobs)}


@dataclass(slots=True)
class VerifyReport:
    since: datetime | None
    until: datetime | None
    months: int = 0
    blobs: int = 0  # committed blobs read
    records: int = 0  # lines checked in them
    bytes: int = 0
    pending: int = 0  # writes in flight: young uncommitted blobs and claims
    counts: Counter[str] = field(default_factory=Counter)
    problems: dict[str, list[Problem]] = field(default_factory=lambda: {kind: [] for kind in KINDS})

    def add(self, kind: str, name: str, detail: str, blobs: tuple[str, ...] = ()) -> None:
        self.counts[kind] += 1
        if len(self.problems[kind]) < MAX_LISTED:
            self.problems[kind].append(Problem(name, detail, blobs))

    @property
    def ok(self) -> bool:
        return not any(self.counts[kind] for kind in FAILURES)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "months": self.months,
            "blobs": self.blobs,
            "records": self.records,
            "bytes": self.bytes,
            "pending": self.pending,
            "counts": {kind: self.counts[kind] for kind in KINDS},
            **{kind: [p.as_dict() for p in self.problems[kind]] for kind in KINDS},
        }


@dataclass(frozen=True, slots=True)
class DaySpan:
    """The days verified: [first, last], both inclusive (None: unbounded)."""

    first: date | None
    last: date | None

    @classmethod
    def of(cls, since: datetime | None, until: datetime | None) -> DaySpan:
        last = (until.astimezone(UTC) - timedelta(microseconds=1)).date() if until else None
        return cls(since.astimezone(UTC).date() if since else None, last)

    def holds(self, day: date) -> bool:
        return (self.first is None or day >= self.first) and (self.last is None or day <= self.last)

    def days_of(self, month: str) -> list[date]:
        first = date(int(month[:4]), int(month[4:6]), 1)
        days = (first + timedelta(days=n) for n in range(31))
        return [day for day in days if month_of(day) == month and self.holds(day)]
