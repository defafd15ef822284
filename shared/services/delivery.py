"""Delivering Event Hub bodies: normalize, archive once, forward once, dead-letter the rest.

The host checkpoints a batch when the invocation returns, raised or not. So an invocation
either (a) delivers every record of the batch, (b) raises while retries remain, so the retry
policy holds the checkpoint and re-drives the same batch, or (c) on the last attempt, puts
what it could not deliver into dead letters before returning; while storage refuses even
those (the index and the dead letters live in one account), the last attempt holds on and
delivers again (`deliver_last`), raising only when its hold runs out. Redelivery is harmless: each
event is claimed by one archive blob (shared.services.archive_write), and what Log Analytics
accepted is marked (shared.services.forwarding). Events another writer is archiving right now
(ClaimedElsewhere) are tried again within seconds, for that writer usually commits meanwhile
(they are then duplicates here), and then retried like any storage failure; on the last
attempt, what the write did commit is kept and forwarded, and only the bodies with a record it
did not commit are dead-lettered (a replay counts as duplicates what another writer archived
since). Dead letters keep the input's exact bytes.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from shared.adapters.deadletters import UNDELIVERED, DeadLetter, DeadLetterStore, text_and_data
from shared.core.normalize import normalize_input
from shared.core.records import NormalizedRecord, Rejection
from shared.core.written import WriteResult
from shared.services.archive_write import ArchiveWriter, ClaimedElsewhere
from shared.services.deadlettering import dead_letter_rejections
from shared.services.forwarding import Forwarding, ForwardRun, RetryableDeliveryError
from shared.services.gc_pause import collection_paused
from shared.services.report import DeliveryReport

log = logging.getLogger(__name__)

MAX_REASON = 2000

__all__ = [
    "DeliveryReport",
    "EventBody",
    "Hold",
    "RetryableDeliveryError",
    "deliver",
    "deliver_last",
    "index_and_forward",
]


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


def _reason_class(reason: str) -> str:
    return reason.split(":", 1)[0]


def deliver(  # noqa: PLR0913 - a batch, its three sinks and how this attempt ends, by name
    bodies: Sequence[EventBody],
    *,
    writer: ArchiveWriter,
    deadletters: DeadLetterStore,
    forwarding: Forwarding | None = None,
    final_attempt: bool = True,
    path: str = "eventhub",
) -> DeliveryReport:
    report = DeliveryReport(bodies=len(bodies))
    with collection_paused():  # the batch's records held at once: see gc_pause
        per_body = [_take_body(body, deadletters, path, report) for body in bodies]
        records = [record for taken in per_body for record in taken]
        run = _forward_run(forwarding, deadletters, path, final_attempt, report)
        try:
            # Events another writer holds: tried again within seconds (it usually commits).
            written = writer.write_when_free(records)
        except Exception as error:  # not only AzureError: a cut-off answer raises requests'
            if not final_attempt:
                # The cause's own message kept: ClaimedElsewhere's says which events and when.
                message = f"index unavailable: {type(error).__name__}: {error}"
                raise RetryableDeliveryError(message) from error
            _last_attempt_failed(
                bodies, per_body, error, deadletters=deadletters, run=run, path=path, report=report
            )
            return report
    _settle(written, report, run)
    return report


def _last_attempt_failed(  # noqa: PLR0913 - the batch and the error, then its sinks by name
    bodies: Sequence[EventBody],
    per_body: list[list[NormalizedRecord]],
    error: Exception,
    *,
    deadletters: DeadLetterStore,
    run: ForwardRun | None,
    path: str,
    report: DeliveryReport,
) -> None:
    """What a write stopped on the last attempt did commit is settled as any write's; each
    body with a record it did not commit is dead-lettered whole (a replay counts what another
    writer archived meanwhile as duplicates)."""
    done = error.written if isinstance(error, ClaimedElsewhere) else None
    if done is not None:
        _settle(done, report, run)
    kept = {record["EventKey"] for record in done.indexed + done.duplicates} if done else set()
    undelivered = [
        (body, records)
        for body, records in zip(bodies, per_body, strict=True)
        if any(record["EventKey"] not in kept for record in records)
    ]
    _dead_letter_undelivered(undelivered, error, deadletters, path)
    # Counted once each: a lettered body's records that were committed are counted indexed.
    lettered = sum(1 for _, records in undelivered for r in records if r["EventKey"] not in kept)
    report.deadlettered += lettered
    log.error(
        "index unavailable on the last attempt; %d records dead-lettered",
        lettered,
        extra={"records": lettered, "path": path},
    )


@dataclass(frozen=True)
class Hold:
    """How long the last attempt holds on while storage refuses, and how it waits: within
    host.json's functionTimeout (10 minutes), with room for the delivery itself."""

    seconds: float = 480.0
    pauses: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0, 60.0)  # then 60 s each
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


LAST_ATTEMPT_HOLD = Hold()


def deliver_last(
    bodies: Sequence[EventBody],
    *,
    writer: ArchiveWriter,
    deadletters: DeadLetterStore,
    forwarding: Forwarding | None = None,
    path: str = "eventhub",
) -> DeliveryReport:
    """`deliver` on the last attempt. The host moves the checkpoint when it returns, raised or
    not: what it could neither archive nor dead-letter (storage refusing both) would be kept
    nowhere. So it delivers again, as a redelivery would (each event is archived once however
    often it comes), after a pause, until it has kept every record or the hold runs out."""
    hold = LAST_ATTEMPT_HOLD
    deadline = hold.clock() + hold.seconds
    for attempt in itertools.count():
        try:
            return deliver(
                bodies,
                writer=writer,
                deadletters=deadletters,
                forwarding=forwarding,
                final_attempt=True,
                path=path,
            )
        except Exception as error:  # storage down: the dead letters could not be written either
            pause = hold.pauses[min(attempt, len(hold.pauses) - 1)]
            if hold.clock() + pause > deadline:
                raise
            log.warning(
                "last attempt: storage failed the delivery (%s: %s): its records, dead "
                "letters or Log Analytics marks; delivering the batch again in %.0f s (what "
                "Log Analytics took without a mark is sent again)",
                type(error).__name__,
                str(error)[:200],
                pause,
                extra={"path": path, "bodies": len(bodies)},
            )
            hold.sleep(pause)
    raise AssertionError("unreachable")  # itertools.count never ends


def _take_body(
    body: EventBody, deadletters: DeadLetterStore, path: str, report: DeliveryReport
) -> list[NormalizedRecord]:
    """A body's records. Its rejections can never succeed: dead-lettered now, retrying would
    not help."""
    try:
        records, rejections = normalize_input(body.body, body.source)
    except Exception as error:  # a defect must not lose the batch: this body is kept whole
        raw, data = text_and_data(body.body)
        reason = f"normalizer error: {type(error).__name__}: {error}"[:MAX_REASON]
        records, rejections = [], [Rejection(reason, body.source, raw, data)]
    report.deadlettered += dead_letter_rejections(
        deadletters, rejections, coordinates_of=lambda _rejection: body.coordinates, path=path
    )
    for rejection in rejections:
        reason = _reason_class(rejection.reason)
        report.rejection_reasons[reason] = report.rejection_reasons.get(reason, 0) + 1
    report.events += len(records) + len(rejections)
    return records


def _dead_letter_undelivered(
    undelivered: Sequence[tuple[EventBody, list[NormalizedRecord]]],
    error: Exception,
    deadletters: DeadLetterStore,
    path: str,
) -> None:
    """Out of retries: keep each body that had records whole, so a replay re-drives exactly it."""
    reason = f"index unavailable after retries: {type(error).__name__}: {error}"[:MAX_REASON]
    for body, records in undelivered:
        if records:
            raw, data = text_and_data(body.body)  # byte for byte, whatever the body holds
            deadletters.put(
                DeadLetter(
                    kind=UNDELIVERED,
                    reason=reason,
                    source=body.source,
                    raw=raw,
                    coordinates=body.coordinates,
                    path=path,
                    data=data,
                )
            )


def index_and_forward(
    records: Sequence[NormalizedRecord],
    *,
    writer: ArchiveWriter,
    deadletters: DeadLetterStore,
    forwarding: Forwarding | None = None,
    path: str = "eventhub",
) -> DeliveryReport:
    """Index normalized records and forward them as `deliver` does (a replay's way in).

    Raises the index's own error, or RetryableDeliveryError when Log Analytics failed for now.
    """
    report = DeliveryReport(events=len(records))
    written = writer.write_when_free(records)
    _settle(written, report, _forward_run(forwarding, deadletters, path, False, report))
    return report


def _forward_run(
    forwarding: Forwarding | None,
    deadletters: DeadLetterStore,
    path: str,
    final_attempt: bool,
    report: DeliveryReport,
) -> ForwardRun | None:
    if forwarding is None:
        return None
    return ForwardRun(forwarding, deadletters, path, final_attempt, report)


def _settle(written: WriteResult, report: DeliveryReport, run: ForwardRun | None) -> None:
    """Count what the index took, then forward what Log Analytics does not have yet."""
    report.count_written(written)
    if run is not None:
        run.settle(written)
