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

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta

from shared.adapters.deadletters import DeadLetterStore
from shared.adapters.index_tables import IndexTables
from shared.core.archive_keys import MANIFEST_ROW, BlobRef, month_of
from shared.core.keys import parse_canonical_time
from shared.core.query_spec import FILTER_PARTITION, canonical
from shared.core.records import NormalizedRecord
from shared.core.written import WriteResult
from shared.services.archive_read import ArchiveReader, Manifest, UnreadableRecord, is_manifest
from shared.services.forwarding import Forwarding, ForwardRun
from shared.services.report import DeliveryReport

BATCH_RECORDS = 5_000  # records handed to forwarding at once (its calls split them by size)
PATH = "forward"


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
    unreadable_blobs: int = 0  # damaged or gone since listed: `verify` names them

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def forward_range(  # noqa: PLR0913 - the stores and forwarding, then the range, by name
    tables: IndexTables,
    reader: ArchiveReader,
    forwarding: Forwarding,
    deadletters: DeadLetterStore,
    *,
    since: datetime,
    until: datetime,
) -> ForwardRangeReport:
    """Send the range's records that Log Analytics has not accepted; report what was done."""
    report = ForwardRangeReport(since.isoformat(), until.isoformat())
    low, high = canonical(since), canonical(until)
    low_ticks, high_ticks = parse_canonical_time(low)[1], parse_canonical_time(high)[1]
    batch: list[NormalizedRecord] = []
    months = set(tables.months())  # a range of centuries walks only the index's months
    for day in _days(since, until):
        if month_of(day) not in months:
            continue
        report.days += 1
        for manifest in _committed(tables, day):
            if manifest.high_ticks < low_ticks or manifest.low_ticks >= high_ticks:
                continue
            records = reader.blob_records(manifest.ref)
            if records is None or isinstance(records, UnreadableRecord):
                report.unreadable_blobs += 1
                continue
            report.blobs += 1
            batch.extend(r for r in records if low <= r["TimeGenerated"] < high)
            if len(batch) >= BATCH_RECORDS:
                _send(batch, forwarding, deadletters, report)
                batch = []
    if batch:
        _send(batch, forwarding, deadletters, report)
    return report


def _send(
    batch: list[NormalizedRecord],
    forwarding: Forwarding,
    deadletters: DeadLetterStore,
    report: ForwardRangeReport,
) -> None:
    counts = DeliveryReport()
    # Indexed before and maybe never marked: what a redelivery of them would do.
    run = ForwardRun(forwarding, deadletters, PATH, final_attempt=False, report=counts)
    run.settle(WriteResult(existing=batch))
    report.records += len(batch)
    report.forwarded += counts.forwarded
    report.not_forwarded += counts.not_forwarded
    report.already_sent += len(batch) - counts.forwarded - counts.not_forwarded


def _days(since: datetime, until: datetime) -> Iterator[date]:
    """The days of [since, until), in UTC (a month table's days)."""
    first = since.astimezone(UTC).date()
    last = (until.astimezone(UTC) - timedelta(microseconds=1)).date()
    for ordinal in range(first.toordinal(), last.toordinal() + 1):
        yield date.fromordinal(ordinal)


def _committed(tables: IndexTables, day: date) -> Iterator[Manifest]:
    """The day's committed blobs (a manifest row each; rows in flight or fenced are not)."""
    month, partition = month_of(day), f"{MANIFEST_ROW}{day.day:02d}"
    for row in tables.query(month, FILTER_PARTITION, {"pk": partition}):
        if not is_manifest(row):
            continue
        try:
            ref = BlobRef.of_manifest(month, partition, str(row["RowKey"]))
            yield Manifest.of_row(ref, row)
        except (KeyError, ValueError, TypeError, IndexError):
            continue  # a damaged row: `verify` names it
