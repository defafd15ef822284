"""One page of a query: what it admits, what it has collected, where the next one starts,
and the bound on the work it may do (ScanBudget).

A page stops filling when it is full, when the range is done, or when a bound stops it: the
days or months one page may walk, the records it may read, the seconds it may take. Then it
returns what it found with a continuation and the time it reached (`QueryPage.reached`):
every record from then to the query's `until` has been looked at. A bound is checked only
after some work was done, and a page stops only where going on moves past where it began
(Page.moves_on), so every page moves on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import date, timedelta
from typing import Any

from shared.core.archive_keys import BlobRef, category_class, day_of, second_of_day
from shared.core.continuation import Continuation, encode_continuation
from shared.core.keys import canonical_of_ticks, parse_canonical_time
from shared.core.query_spec import (
    ActivityQuery,
    matches,
)
from shared.core.records import NormalizedRecord
from shared.services.archive_read import Manifest, UnreadableRecord

# Records one page may read, and the seconds it may take (the HTTP function's limit is 230 s;
# a page answers well within it, and the caller follows the continuation).
MAX_SCAN_RECORDS = 200_000
MAX_SCAN_SECONDS = 20.0
_DAY_TICKS = 86_400 * 10_000_000
_LOWEST_KEY = "0" * 32  # sorts before every EventKey: (time, it) resumes before that time

Entry = tuple[date, int, BlobRef, int]  # (day, second of day, blob, ordinal)


@dataclass(frozen=True)
class ScanBudget:
    """What one page may do: records read (matching or not), and seconds."""

    records: int = dataclass_field(default_factory=lambda: MAX_SCAN_RECORDS)
    seconds: float = dataclass_field(default_factory=lambda: MAX_SCAN_SECONDS)
    clock: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class QueryPage:
    records: list[NormalizedRecord]
    continuation: str | None  # None when nothing more matches
    # Archive blobs holding matching records that cannot be read (damaged): named, skipped.
    unreadable: list[str] = dataclass_field(default_factory=list)
    # When a bound stopped the page before it filled: the time its search reached (records
    # from then to the query's `until` were all looked at). None: full, or the range done.
    reached: str | None = None


def order(record: NormalizedRecord) -> tuple[str, str]:
    return str(record.get("TimeGenerated", "")), str(record.get("EventKey", ""))


def ticks(time_generated: str) -> int:
    return parse_canonical_time(time_generated)[1]


def day_ticks(day: date) -> int:
    """Ticks of a day's first instant (.NET ticks count from 0001-01-01, ordinal 1)."""
    return (day.toordinal() - 1) * _DAY_TICKS


class Page:
    """The records a page returns: within [since, until), past the token's position, and
    matching the query exactly; collected newest first up to the query's limit."""

    def __init__(
        self,
        query: ActivityQuery,
        after: tuple[str, str] | None,
        budget: ScanBudget,
        start_day: date | None = None,
    ) -> None:
        self.query = query
        self.since = query.since_text
        self.until = query.until_text
        self.after = after  # only records sorting after it (older) are returned
        # Where the page began: its token's position (a day's start, when it holds no record).
        began = (self.until, _LOWEST_KEY)
        if after is not None:
            began = after
        elif start_day is not None:
            began = min(began, _bound(Continuation(start_day, None)))
        self.began = began
        # A blob's span [Lo, Hi] in ticks meets the page's if Hi >= low and Lo < high.
        self.low = ticks(self.since)
        self.high = min(ticks(self.until), ticks(after[0]) + 1 if after else ticks(self.until))
        self.token_second = (day_of(after[0]), second_of_day(after[0])) if after else None
        self.records: list[NormalizedRecord] = []
        self.unreadable: list[str] = []
        self.held: set[str] | None = None  # months with a table, if listed
        self.wanted = category_class(query.category) if query.category else None  # its class
        self.budget = budget
        self.read = 0  # records read from the archive (matching or not)
        self._deadline = budget.clock() + budget.seconds

    def has_table(self, month: str) -> bool:
        return self.held is None or month in self.held

    def lacking(self) -> int:
        return self.query.limit - len(self.records)

    def spent(self) -> bool:
        """Whether the page has done the work it may (then it stops where it is)."""
        return self.read >= self.budget.records or self.budget.clock() >= self._deadline

    def admits(self, record: NormalizedRecord) -> bool:
        time_generated, _ = key = order(record)
        if not self.since <= time_generated < self.until:
            return False
        return (self.after is None or key < self.after) and matches(record, self.query)

    def second_may_hold(self, day: date, second: int) -> bool:
        """Whether a second of a day can hold a record for the page (checked exactly later)."""
        start = f"{day.isoformat()}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
        if start < self.since[:19] or start + ".0000000Z" >= self.until:
            return False
        return self.after is None or start <= self.after[0][:19]

    def at_token(self, entry: Entry) -> bool:  # of the second of the token's last record
        return self.after is not None and entry[:2] == self.token_second

    def spans(self, manifest: Manifest) -> bool:
        return manifest.high_ticks >= self.low and manifest.low_ticks < self.high

    def keep(self, got: Iterable[NormalizedRecord | UnreadableRecord | None]) -> list[Any]:
        """What a read brought that the page admits; unreadable records are named."""
        kept: list[NormalizedRecord] = []
        for item in got:
            if isinstance(item, UnreadableRecord):
                if item.name not in self.unreadable:
                    self.unreadable.append(item.name)
            elif item is not None and self.admits(item):  # None: not committed, or deleted
                kept.append(item)
        return kept

    def emit(self, newest_first: Sequence[NormalizedRecord]) -> None:
        self.records.extend(newest_first[: self.lacking()])

    def before(self, day: date, end_ticks: int) -> Continuation:
        """Where to go on when everything of `day` from `end_ticks` on has been looked at (and
        nothing older): never past the page's own starting point."""
        if end_ticks >= day_ticks(day + timedelta(days=1)):
            position = Continuation(day, None)
        else:
            position = Continuation(day, (canonical_of_ticks(end_ticks), _LOWEST_KEY))
        if self.after is not None and _bound(position) > self.after:
            return Continuation(day_of(self.after[0]), self.after)
        return position

    def moves_on(self, position: Continuation) -> bool:
        """Whether going on from `position` is past where this page began: a page that stops
        where it began would be asked for again, and stop there again, forever."""
        return _bound(position) < self.began

    def answer(self, continuation: Continuation | None) -> QueryPage:
        """The page as it is: with a continuation, a bound stopped it (or it is full)."""
        if continuation is None:
            return QueryPage(self.records, None, self.unreadable)
        token = encode_continuation(self.query, continuation)
        reached = min(_bound(continuation)[0], self.until)
        return QueryPage(self.records, token, self.unreadable, reached)

    def full(self) -> QueryPage:
        """The page filled up: it goes on after its last record (even if nothing follows)."""
        last = order(self.records[-1])
        token = encode_continuation(self.query, Continuation(day_of(last[0]), last))
        return QueryPage(self.records, token, self.unreadable)


def _bound(position: Continuation) -> tuple[str, str]:
    """A position as the (time, key) every record still to come sorts before."""
    if position.after is not None:
        return position.after
    return canonical_of_ticks(day_ticks(position.day + timedelta(days=1))), _LOWEST_KEY
