"""`forward`: send to Log Analytics what the archive holds over a range and Log Analytics has
not accepted, once per record, whoever sent the rest.

Records indexed where forwarding was not configured (a shell without the Logs Ingestion
settings running `backfill`, `ingest` or a replay of undelivered bodies; an app whose
forwarding settings were bad for a while) are archived and indexed, never sent, and have no
letter. This reads each day's committed blobs in [since, until), keeps the records of the
range, and hands them to forwarding as a redelivery would (shared.services.forwarding: a
record is sent when no mark says Log Analytics accepted it, and under a claim on its
not-forwarded letter when it has one, so a replay and this never both send it). What Log
Analytics refuses for itself becomes a not-forwarded letter; a transient failure raises
RetryableDeliveryError: run it again, what was sent is marked.

Cost: one manifest query a day and one read a committed blob of the range, and the marks'
reads (one query per claim slot of each batch). Memory: one batch of records at a time.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta

from shared.adapters.deadletters import DeadLetterStore
from shared.adapters.forwarding_declaration import ForwardLock
from shared.adapters.index_tables import IndexTables
from shared.core.archive_keys import MANIFEST_ROW, month_of
from shared.core.keys import parse_canonical_time
from shared.core.query_spec import FILTER_PARTITION
from shared.core.records import NormalizedRecord
from shared.core.written import WriteResult
from shared.services.archive_read import (
    ArchiveReader,
    Manifest,
    UnreadableRecord,
    listed_manifest,
)
from shared.services.forwarding import Forwarding, ForwardRun
from shared.services.report import DeliveryReport

BATCH_RECORDS = 5_000  # records handed to forwarding at once (its calls split them by size)
PATH = "forward"
MAX_NAMED = 20  # unreadable blobs named in the report; all are counted


@dataclass(slots=True)
class ForwardRangeReport:
    since: str
    until: str
    days: int = 0
    blobs: int = 0  # committed blobs read
    records: int = 0  # records of the range in them
    forwarded: int = 0  # accepted by Log Analytics now
    not_forwarded: int = 0  # refused for themselves: a not-forwarded letter each
    already_sent: int = 0  # marked accepted before, or left to a replay holding its letter
    unreadable_blobs: int = 0  # damaged (bytes or manifest row): `verify` says how
    unreadable: list[str] = field(default_factory=list)  # their names, the first few

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def cannot_read(self, name: str) -> None:
        self.unreadable_blobs += 1
        if len(self.unreadable) < MAX_NAMED:
            self.unreadable.append(name)


def forward_range(  # noqa: PLR0913 - the stores and forwarding, then the range, by name
    tables: IndexTables,
    reader: ArchiveReader,
    forwarding: Forwarding,
    deadletters: DeadLetterStore,
    *,
    since: str,
    until: str,
    lock: ForwardLock,
) -> ForwardRangeReport:
    """Send the records of [since, until) (canonical TimeGenerated texts, to the 100 ns, as
    a query's bounds) that Log Analytics has not accepted; report what was done. Holds the
    store's forward `lock` throughout (ForwardHeld: another run holds it, or took it over)."""
    lock.acquire()
    try:
        sender = _Sender(forwarding, deadletters, lock, ForwardRangeReport(since, until))
        _forward(tables, reader, sender)
        return sender.report
    finally:
        lock.release()


@dataclass(slots=True)
class _Sender:
    """Hands batches to forwarding under the lock, counting into the report."""

    forwarding: Forwarding
    deadletters: DeadLetterStore
    lock: ForwardLock
    report: ForwardRangeReport

    def send(self, batch: list[NormalizedRecord]) -> None:
        self.lock.keep()  # a run paused past its lock was taken over: it stops here, unsent
        counts = DeliveryReport()
        # Indexed before and maybe never marked: what a redelivery of them would do.
        run = ForwardRun(
            self.forwarding,
            self.deadletters,
            PATH,
            final_attempt=False,
            report=counts,
            before_call=self.lock.keep,  # a batch's calls can outlast a lock renewed once
        )
        run.settle(WriteResult(existing=batch))
        report = self.report
        report.records += len(batch)
        report.forwarded += counts.forwarded
        report.not_forwarded += counts.not_forwarded
        report.already_sent += len(batch) - counts.forwarded - counts.not_forwarded


def _forward(tables: IndexTables, reader: ArchiveReader, sender: _Sender) -> None:
    report = sender.report
    since, until = report.since, report.until
    low_ticks, high_ticks = parse_canonical_time(since)[1], parse_canonical_time(until)[1]
    batch: list[NormalizedRecord] = []
    # A range of centuries walks only the index's months.
    for day in _days(since, until, tables.months()):
        report.days += 1
        for manifest in _committed(tables, day, report):
            if manifest.high_ticks < low_ticks or manifest.low_ticks >= high_ticks:
                continue
            sender.lock.keep()
            records = reader.blob_records(manifest.ref)
            if records is None:
                continue  # deleted since listed (retention): nothing left to send
            if isinstance(records, UnreadableRecord):
                report.cannot_read(manifest.ref.name)
                continue
            report.blobs += 1
            batch.extend(r for r in records if since <= r["TimeGenerated"] < until)
            if len(batch) >= BATCH_RECORDS:
                sender.send(batch)
                batch = []
    if batch:
        sender.send(batch)


def _days(since: str, until: str, months: Iterable[str]) -> Iterator[date]:
    """The days of [since, until) (canonical texts: UTC, years 0001-9999) in these months."""
    first = date.fromisoformat(since[:10])
    last = date.fromisoformat(until[:10])
    if until[10:] == "T00:00:00.0000000Z" and last > first:
        last -= timedelta(days=1)  # `until` is the start of its day: that day is out
    for month in sorted(set(months)):
        year, number = int(month[:4]), int(month[4:])
        start = max(first, date(year, number, 1))
        end = min(last, date(year, number, calendar.monthrange(year, number)[1]))
        for ordinal in range(start.toordinal(), end.toordinal() + 1):
            yield date.fromordinal(ordinal)


def _committed(tables: IndexTables, day: date, report: ForwardRangeReport) -> Iterator[Manifest]:
    """The day's committed blobs; a damaged manifest row is counted unreadable."""
    month, partition = month_of(day), f"{MANIFEST_ROW}{day.day:02d}"
    for row in tables.query(month, FILTER_PARTITION, {"pk": partition}):
        listed = listed_manifest(month, partition, row)
        manifest = listed[1] if listed is not None else None
        if isinstance(manifest, UnreadableRecord):
            report.cannot_read(manifest.name)
        elif manifest is not None:
            yield manifest
