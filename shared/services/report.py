"""What a run did, counted one way on every path.

events = indexed + duplicates + deadlettered, always. Each path's report adds its own figures
and names the order in which its summary is printed (a contract of the command line).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar

from shared.core.written import WriteResult, lag_seconds, larger_lag


@dataclass(slots=True)
class Report:
    """The counts every path keeps."""

    events: int = 0
    indexed: int = 0
    duplicates: int = 0
    deadlettered: int = 0
    # Now minus the oldest TimeGenerated among the records indexed (not the duplicates), taken
    # when each write returned, the largest over the run; None when nothing was indexed.
    lag_seconds: float | None = None

    SUMMARY: ClassVar[tuple[str, ...]] = (
        "events",
        "indexed",
        "duplicates",
        "deadlettered",
        "lag_seconds",
    )

    def count_written(self, written: WriteResult) -> None:
        """What one index write took: new records and duplicates."""
        self.indexed += len(written.indexed)
        self.duplicates += len(written.duplicates)
        self.lag_seconds = larger_lag(
            self.lag_seconds, lag_seconds(written.indexed, datetime.now(UTC))
        )

    def add(self, other: Report) -> None:
        """Fold another report of the same kind into this one."""
        for item in fields(self):
            mine, theirs = getattr(self, item.name), getattr(other, item.name)
            if item.name == "lag_seconds":
                setattr(self, item.name, larger_lag(mine, theirs))
            elif isinstance(mine, list):
                mine.extend(theirs)
            elif isinstance(mine, dict):
                for key, count in theirs.items():
                    mine[key] = mine.get(key, 0) + count
            else:
                setattr(self, item.name, mine + theirs)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.SUMMARY}


@dataclass(slots=True)
class DeliveryReport(Report):
    """An Event Hub delivery (or files of bodies through its code path)."""

    bodies: int = 0
    forwarded: int = 0
    not_forwarded: int = 0
    rejection_reasons: dict[str, int] = field(default_factory=dict)

    SUMMARY: ClassVar[tuple[str, ...]] = (
        "bodies",
        "events",
        "indexed",
        "duplicates",
        "deadlettered",
        "forwarded",
        "not_forwarded",
        "rejection_reasons",
        "lag_seconds",
    )


@dataclass(slots=True)
class BlobReport(Report):
    """Blobs indexed from their cursors (trigger, catch-up or backfill)."""

    blobs: int = 0
    bytes_read: int = 0
    failed: list[str] = field(default_factory=list)
    # Blobs whose name is not a PT1H.json hour (indexed from their content all the same).
    outside_layout: list[str] = field(default_factory=list)
    # Blobs that had bytes past their cursor when this run looked (before indexing them).
    behind: int = 0
    # Records Log Analytics accepted; records it refused for themselves (dead-lettered).
    forwarded: int = 0
    not_forwarded: int = 0

    SUMMARY: ClassVar[tuple[str, ...]] = (
        "blobs",
        "events",
        "indexed",
        "duplicates",
        "deadlettered",
        "bytes_read",
        "failed",
        "outside_layout",
        "behind",
        "lag_seconds",
        "forwarded",
        "not_forwarded",
    )
