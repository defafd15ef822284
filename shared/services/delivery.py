"""Delivering Event Hub bodies: normalize, index once, forward once, dead-letter the rest.

The host checkpoints a batch when the invocation returns, raised or not. So an invocation
either (a) delivers every record of the batch, (b) raises while retries remain, so the retry
policy holds the checkpoint and re-drives the same batch, or (c) on the last attempt, puts
what it could not deliver into dead letters before returning. Redelivery is harmless: index
rows are keyed by EventKey and Log Analytics deliveries are marked on the record row. A record
sent again on redelivery whose not-forwarded letter exists is sent only under a claim on that
letter (see shared.adapters.deadletters), so a replay of the letter and the redelivery never
both send it.
Dead letters keep the input's exact bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.adapters.deadletters import (
    NOT_FORWARDED,
    REJECTED,
    UNDELIVERED,
    Claim,
    DeadLetter,
    DeadLetterStore,
    LetterHeld,
    text_and_data,
)
from shared.adapters.index_store import IndexWriter, WriteResult, lag_seconds, larger_lag
from shared.adapters.log_analytics import LogAnalyticsForwarder, TransientForwardError
from shared.core.normalize import normalize_input
from shared.core.records import NormalizedRecord

log = logging.getLogger(__name__)

# Letters claimed at once when a redelivery forwards records that may have one.
_CLAIM_PARALLELISM = 16


@dataclass(frozen=True, slots=True)
class EventBody:
    """One Event Hub message body and where it sits in the hub."""

    body: bytes
    partition: str = ""
    sequence_number: int | None = None
    offset: str | None = None
    enqueued_time: str | None = None
    origin: str = ""  # set instead of hub coordinates when the body came from a file

    @property
    def source(self) -> str:
        if self.origin:
            return self.origin
        return f"eventhub:partition={self.partition}:sequence={self.sequence_number}"

    @property
    def coordinates(self) -> dict[str, Any]:
        if self.origin:
            return {"origin": self.origin}
        return {
            "partition": self.partition,
            "sequence_number": self.sequence_number,
            "offset": self.offset,
            "enqueued_time": self.enqueued_time,
        }


@dataclass(slots=True)
class DeliveryReport:
    """Counts for one delivery. events = indexed + duplicates + deadlettered, always."""

    bodies: int = 0
    events: int = 0
    indexed: int = 0
    duplicates: int = 0
    deadlettered: int = 0
    forwarded: int = 0
    not_forwarded: int = 0
    rejection_reasons: dict[str, int] = field(default_factory=dict)
    # Now minus the oldest TimeGenerated among the records this delivery indexed (not the
    # duplicates), taken when the index write returned; None when it indexed nothing.
    lag_seconds: float | None = None

    def add(self, other: DeliveryReport) -> None:
        for name in ("bodies", "events", "indexed", "duplicates", "deadlettered", "forwarded"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.not_forwarded += other.not_forwarded
        for reason, count in other.rejection_reasons.items():
            self.rejection_reasons[reason] = self.rejection_reasons.get(reason, 0) + count
        self.lag_seconds = larger_lag(self.lag_seconds, other.lag_seconds)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RetryableDeliveryError(Exception):
    """A sink failed transiently; raise it out of the function so the retry policy re-drives."""


def _reason_class(reason: str) -> str:
    return reason.split(":", 1)[0]


def deliver(
    bodies: Sequence[EventBody],
    *,
    writer: IndexWriter,
    deadletters: DeadLetterStore,
    forwarder: LogAnalyticsForwarder | None = None,
    final_attempt: bool = True,
    path: str = "eventhub",
) -> DeliveryReport:
    report = DeliveryReport(bodies=len(bodies))
    records: list[NormalizedRecord] = []
    records_per_body: list[int] = []
    for body in bodies:
        good, rejected = normalize_input(body.body, body.source)
        records.extend(good)
        records_per_body.append(len(good))
        for rejection in rejected:
            # Rejections can never succeed: dead-letter now, retrying would not help.
            deadletters.put(
                DeadLetter(
                    kind=REJECTED,
                    reason=rejection.reason,
                    source=rejection.source,
                    raw=rejection.raw,
                    coordinates=body.coordinates,
                    path=path,
                    data=rejection.data,  # the exact bytes, when the text cannot show them
                )
            )
            reason = _reason_class(rejection.reason)
            report.rejection_reasons[reason] = report.rejection_reasons.get(reason, 0) + 1
        report.events += len(good) + len(rejected)
        report.deadlettered += len(rejected)

    try:
        written = writer.write(records)
    except Exception as error:  # not only AzureError: a cut-off answer raises requests' errors
        if not final_attempt:
            raise RetryableDeliveryError(f"index unavailable: {type(error).__name__}") from error
        # Out of retries: keep each body whole, so a replay re-drives exactly it.
        for body, count in zip(bodies, records_per_body, strict=True):
            if count:
                raw, data = text_and_data(body.body)  # byte for byte, whatever the body holds
                deadletters.put(
                    DeadLetter(
                        kind=UNDELIVERED,
                        reason=f"index unavailable after retries: {type(error).__name__}: {error}"[
                            :2000
                        ],
                        source=body.source,
                        raw=raw,
                        coordinates=body.coordinates,
                        path=path,
                        data=data,
                    )
                )
        report.deadlettered += len(records)
        log.error(
            "index unavailable on the last attempt; %d records dead-lettered",
            len(records),
            extra={"records": len(records), "path": path},
        )
        return report

    _settle(written, report, writer, deadletters, forwarder, final_attempt, path)
    return report


def index_and_forward(
    records: Sequence[NormalizedRecord],
    *,
    writer: IndexWriter,
    deadletters: DeadLetterStore,
    forwarder: LogAnalyticsForwarder | None = None,
    path: str = "eventhub",
) -> DeliveryReport:
    """Index normalized records and forward them as `deliver` does (a replay's way in).

    Raises the index's own error, or RetryableDeliveryError when Log Analytics failed for now.
    """
    report = DeliveryReport(events=len(records))
    written = writer.write(records)
    _settle(written, report, writer, deadletters, forwarder, False, path)
    return report


def _settle(
    written: WriteResult,
    report: DeliveryReport,
    writer: IndexWriter,
    deadletters: DeadLetterStore,
    forwarder: LogAnalyticsForwarder | None,
    final_attempt: bool,
    path: str,
) -> None:
    """Count what the index took, then forward what Log Analytics does not have yet."""
    report.lag_seconds = lag_seconds(written.indexed, datetime.now(UTC))
    report.indexed = len(written.indexed)
    report.duplicates = len(written.duplicates)
    if forwarder is None:
        return
    to_forward = written.indexed + [
        record
        for record in written.duplicates
        if record["EventKey"] in written.unforwarded_duplicates
    ]
    retried = written.unforwarded_duplicates
    _forward(to_forward, retried, writer, deadletters, forwarder, final_attempt, path, report)


def _forward(
    records: list[NormalizedRecord],
    retried: set[str],
    writer: IndexWriter,
    deadletters: DeadLetterStore,
    forwarder: LogAnalyticsForwarder,
    final_attempt: bool,
    path: str,
    report: DeliveryReport,
) -> None:
    # One copy of each record: a record repeated in the batch is one record.
    by_key = {record["EventKey"]: record for record in records}
    # A retried record may have a not-forwarded letter that a replay is sending: claim the
    # letter first, then look at the record's mark again (the index was read before the claim).
    claims, leave = _claim_letters(
        [by_key[key] for key in retried if key in by_key], writer, deadletters, path
    )
    for key in leave:
        del by_key[key]
    if leave:
        log.info("%d records left to (or already sent by) a replay of their letters", len(leave))
    if not by_key:
        return
    with deadletters.holding(list(claims.values())):
        _forward_claimed(
            by_key, claims, writer, deadletters, forwarder, final_attempt, path, report
        )


def _forward_claimed(
    by_key: dict[str, NormalizedRecord],
    claims: dict[str, Claim],
    writer: IndexWriter,
    deadletters: DeadLetterStore,
    forwarder: LogAnalyticsForwarder,
    final_attempt: bool,
    path: str,
    report: DeliveryReport,
) -> None:
    try:
        result = forwarder.forward(list(by_key.values()))
    except TransientForwardError as error:
        _forwarded(error.forwarded_so_far, by_key, claims, writer)
        report.forwarded += len(error.forwarded_so_far)
        # Records refused for themselves will be refused again: dead-letter them now.
        _dead_letter_unforwarded(error.rejected_so_far, deadletters, path, report, claims)
        if not final_attempt:
            raise RetryableDeliveryError(f"Log Analytics unavailable: {error}") from error
        done = set(error.forwarded_so_far) | {r["EventKey"] for r, _ in error.rejected_so_far}
        unsent = [record for key, record in by_key.items() if key not in done]
        _dead_letter_unforwarded(
            ((r, str(error)) for r in unsent), deadletters, path, report, claims
        )
        return
    _forwarded(result.forwarded, by_key, claims, writer)
    report.forwarded += len(result.forwarded)
    _dead_letter_unforwarded(result.rejected, deadletters, path, report, claims)


def _claim_letters(
    records: list[NormalizedRecord], writer: IndexWriter, deadletters: DeadLetterStore, path: str
) -> tuple[dict[str, Claim], set[str]]:
    """Claims on the records' not-forwarded letters (where one exists), by EventKey, and the
    EventKeys to leave alone: their letter is held elsewhere, or a replay has sent them since
    the index was read. On a storage error nothing stays claimed."""

    def attempt(record: NormalizedRecord) -> tuple[Claim | None, bool] | Exception:
        try:
            return _claim_one(record, writer, deadletters, path)
        except Exception as error:  # LetterHeld, or storage: every claim ends before raising
            return error

    if len(records) > 1:
        with ThreadPoolExecutor(max_workers=min(_CLAIM_PARALLELISM, len(records))) as pool:
            outcomes = list(pool.map(attempt, records))
    else:
        outcomes = [attempt(record) for record in records]
    claims: dict[str, Claim] = {}
    leave: set[str] = set()
    failure: Exception | None = None
    for record, outcome in zip(records, outcomes, strict=True):
        key = record["EventKey"]
        if isinstance(outcome, LetterHeld):
            leave.add(key)
        elif isinstance(outcome, Exception):
            failure = outcome
        elif outcome[1]:
            leave.add(key)
        elif outcome[0] is not None:
            claims[key] = outcome[0]
    if failure is not None:
        for claim in claims.values():
            claim.release()
        raise failure
    return claims, leave


def _claim_one(
    record: NormalizedRecord, writer: IndexWriter, deadletters: DeadLetterStore, path: str
) -> tuple[Claim | None, bool]:
    """The claim on the record's letter (None: it has none), and whether it was sent already.

    Raises LetterHeld when another process holds the letter.
    """
    claim = deadletters.claim(_not_forwarded_letter(record, "", path).blob_name())
    try:
        sent = writer.is_forwarded(record)
    except Exception:
        if claim is not None:
            claim.release()
        raise
    if sent and claim is not None:
        claim.remove()  # a replay sent it and stopped before removing its letter: void now
        claim = None
    return claim, sent


def _forwarded(
    keys: list[str],
    by_key: dict[str, NormalizedRecord],
    claims: dict[str, Claim],
    writer: IndexWriter,
) -> None:
    """Mark what Log Analytics accepted; a retried record's earlier dead letter is void now."""
    writer.mark_forwarded(by_key[key] for key in keys)
    for key in keys:
        if key in claims:
            claims[key].remove()


def _not_forwarded_letter(record: NormalizedRecord, reason: str, path: str) -> DeadLetter:
    # Named by kind, source and raw only (not the reason): the same record, the same letter.
    return DeadLetter(
        kind=NOT_FORWARDED,
        reason=reason[:2000],
        source=f"index:{record['EventKey']}",
        raw=orjson.dumps(record).decode(),
        coordinates={"EventKey": record["EventKey"], "TimeGenerated": record["TimeGenerated"]},
        path=path,
    )


def _dead_letter_unforwarded(
    rejected: Iterable[tuple[NormalizedRecord, str]],
    deadletters: DeadLetterStore,
    path: str,
    report: DeliveryReport,
    claims: dict[str, Claim],
) -> None:
    # The record is indexed; only its copy to Log Analytics is missing. Keep it for replay.
    for record, reason in rejected:
        deadletters.put(_not_forwarded_letter(record, reason, path), claims.get(record["EventKey"]))
        report.not_forwarded += 1
