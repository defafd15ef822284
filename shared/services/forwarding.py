"""Forwarding to Log Analytics, at least once per record, whichever delivery brings it: an
Event Hub batch (shared.services.delivery) or a piece of an archive blob
(shared.services.blob_indexing). Once, but for a call accepted whose answer or mark is lost,
and for two deliveries of one event sending at the same moment (the Logs Ingestion API cannot
recognise a repeated upload: README, "Log Analytics").

What Log Analytics has accepted is forwarding's own state: mark rows beside the records'
claims (shared.adapters.forward_marks). A record is sent when it is new to the index, or already
indexed but not marked (a delivery that stopped between the index and the mark). A record that
may have a not-forwarded dead letter is sent only under a claim on that letter, so a replay of
the letter and a redelivery never both send it. What Log Analytics refuses for itself, or what
it could not take on the last attempt, becomes a not-forwarded dead letter for replay.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import orjson

from shared.adapters.deadletters import (
    INDEX_SOURCE,
    NOT_FORWARDED,
    Claim,
    DeadLetter,
    DeadLetterStore,
    LetterHeld,
)
from shared.adapters.forward_marks import ForwardMarks
from shared.adapters.forwarding_declaration import ForwardingDeclaration
from shared.adapters.log_analytics import LogAnalyticsForwarder, TransientForwardError
from shared.core.records import NormalizedRecord
from shared.core.written import WriteResult
from shared.services.report import BlobReport, DeliveryReport

log = logging.getLogger(__name__)

# Letters claimed at once when a redelivery forwards records that may have one.
CLAIM_PARALLELISM = 16
MAX_REASON = 2000


class RetryableDeliveryError(Exception):
    """A sink failed transiently; raise it out of the function so the retry policy re-drives."""


@dataclass(frozen=True, slots=True)
class Forwarding:
    """Log Analytics and what it has accepted: built only when forwarding is configured."""

    forwarder: LogAnalyticsForwarder
    marks: ForwardMarks
    declaration: ForwardingDeclaration | None = None  # that this store is forwarded


@dataclass(slots=True)
class ForwardRun:
    """Forwarding the records of one delivery; counts go to its report."""

    forwarding: Forwarding
    deadletters: DeadLetterStore
    path: str
    final_attempt: bool
    report: DeliveryReport | BlobReport  # Event Hub (or replay), or the archive path
    claims: dict[str, Claim] = field(default_factory=dict)
    before_call: Callable[[], None] | None = None  # before each Logs Ingestion call

    def settle(self, written: WriteResult) -> None:
        """Send what the write indexed, and what was indexed before but never marked."""
        retried = self.forwarding.marks.unforwarded(written.existing)
        records = written.indexed + [r for r in written.existing if r["EventKey"] in retried]
        # One copy of each record: a record repeated in the batch is one record.
        by_key = {record["EventKey"]: record for record in records}
        # A retried record may have a not-forwarded letter that a replay is sending: claim the
        # letter first, then look at the record's mark again (read before the claim).
        leave = self._claim_letters([by_key[key] for key in retried if key in by_key])
        for key in leave:
            del by_key[key]
        if leave:
            log.info(
                "%d records left to (or already sent by) a replay of their letters", len(leave)
            )
        if by_key:
            with self.deadletters.holding(list(self.claims.values())):
                self._send(by_key)

    def _send(self, by_key: dict[str, NormalizedRecord]) -> None:
        if self.forwarding.declaration is not None:
            self.forwarding.declaration.declare()
        # What each call Log Analytics took is marked as the call returns.
        accepted = functools.partial(self._accepted, by_key=by_key)
        try:
            result = self.forwarding.forwarder.forward(
                list(by_key.values()), accepted, self.before_call
            )
        except TransientForwardError as error:
            # Records refused for themselves will be refused again: dead-letter them now.
            self._dead_letter(error.rejected_so_far)
            if not self.final_attempt:
                raise RetryableDeliveryError(f"Log Analytics unavailable: {error}") from error
            done = set(error.forwarded_so_far) | {r["EventKey"] for r, _ in error.rejected_so_far}
            self._dead_letter((r, str(error)) for key, r in by_key.items() if key not in done)
            return
        self._dead_letter(result.rejected)

    def _accepted(self, keys: list[str], by_key: dict[str, NormalizedRecord]) -> None:
        """Mark what Log Analytics accepted; a retried record's earlier letter is void now."""
        self.forwarding.marks.mark(by_key[key] for key in keys)
        self.report.forwarded += len(keys)
        for key in keys:
            if key in self.claims:
                self.claims[key].remove()

    def _dead_letter(self, rejected: Iterable[tuple[NormalizedRecord, str]]) -> None:
        # The record is indexed; only its copy to Log Analytics is missing. Keep it for replay.
        for record, reason in rejected:
            letter = not_forwarded_letter(record, reason, self.path)
            self.deadletters.put(letter, self.claims.get(record["EventKey"]))
            self.report.not_forwarded += 1

    def _claim_letters(self, records: list[NormalizedRecord]) -> set[str]:
        """Claim the records' not-forwarded letters (where one exists); the EventKeys to leave
        alone: their letter is held elsewhere, or a replay has sent them since the index was
        read. On a storage error nothing stays claimed."""
        if len(records) > 1:
            workers = min(CLAIM_PARALLELISM, len(records))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                outcomes = list(pool.map(self._attempt_claim, records))
        else:
            outcomes = [self._attempt_claim(record) for record in records]
        leave: set[str] = set()
        failure: Exception | None = None
        for record, outcome in zip(records, outcomes, strict=True):
            key = record["EventKey"]
            if isinstance(outcome, LetterHeld) or outcome is True:
                leave.add(key)
            elif isinstance(outcome, Exception):
                failure = outcome
            elif isinstance(outcome, Claim):
                self.claims[key] = outcome
        if failure is not None:
            for claim in self.claims.values():
                claim.release()
            raise failure
        return leave

    def _attempt_claim(self, record: NormalizedRecord) -> Claim | bool | Exception:
        """The claim on the record's letter, True when it was sent already, False when it has
        no letter; an exception (LetterHeld, storage) is returned, never raised mid-way."""
        try:
            claim = self.deadletters.claim(not_forwarded_letter(record, "", self.path).blob_name())
        except Exception as error:  # LetterHeld, or storage: every claim ends before raising
            return error
        try:
            sent = self.forwarding.marks.is_forwarded(record)
        except Exception as error:
            if claim is not None:
                claim.release()
            return error
        if sent:
            if claim is not None:
                claim.remove()  # a replay sent it and stopped before removing its letter
            return True
        return claim if claim is not None else False


def not_forwarded_letter(record: NormalizedRecord, reason: str, path: str) -> DeadLetter:
    # Named by kind, source and raw only (not the reason): the same record, the same letter.
    return DeadLetter(
        kind=NOT_FORWARDED,
        reason=reason[:MAX_REASON],
        source=f"{INDEX_SOURCE}{record['EventKey']}",
        raw=orjson.dumps(record).decode(),
        coordinates={"EventKey": record["EventKey"], "TimeGenerated": record["TimeGenerated"]},
        path=path,
    )
