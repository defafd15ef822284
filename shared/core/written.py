"""What one write to the archive did, and how far behind it runs. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from shared.core.keys import parse_canonical_time
from shared.core.records import NormalizedRecord


@dataclass(slots=True)
class WriteResult:
    """What one write did; `indexed` + `duplicates` hold every record written, once each."""

    indexed: list[NormalizedRecord] = field(default_factory=list)
    duplicates: list[NormalizedRecord] = field(default_factory=list)
    # The duplicates already archived before this write (not a repeat within this write).
    existing: list[NormalizedRecord] = field(default_factory=list)


def lag_seconds(records: Iterable[NormalizedRecord], now: datetime) -> float | None:
    """Seconds from the oldest record's TimeGenerated to `now`; None when there is no record."""
    # The canonical form is fixed-width, so the smallest string is the oldest time.
    oldest = min((record["TimeGenerated"] for record in records), default=None)
    if oldest is None:
        return None
    whole, ticks = parse_canonical_time(oldest)
    return (now - whole).total_seconds() - ticks % 10_000_000 / 10_000_000


def larger_lag(first: float | None, second: float | None) -> float | None:
    """The larger of two lags, either of which may be None (nothing indexed)."""
    if first is None or second is None:
        return second if first is None else first
    return max(first, second)
