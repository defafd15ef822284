"""Re-driving dead letters once their cause is fixed, without duplicating anything."""

from __future__ import annotations

from typing import Any

import orjson
from azure.core.exceptions import ResourceNotFoundError

from shared.deadletter import NOT_FORWARDED, REJECTED, UNDELIVERED, DeadLetter
from shared.delivery import EventBody, RetryableDeliveryError, deliver
from shared.forward import TransientForwardError
from shared.index import RecordKey
from shared.normalize import normalize_input
from shared.records import NormalizedRecord
from shared.runtime import Runtime


def _replay_one(app: Runtime, letter: DeadLetter) -> bool:
    """True when the letter's content is now where it belongs (and the letter can go)."""
    if letter.kind == UNDELIVERED:
        coordinates = letter.coordinates
        body = EventBody(
            body=letter.raw.encode("utf-8"),
            partition=str(coordinates.get("partition", "")),
            sequence_number=coordinates.get("sequence_number"),
            offset=coordinates.get("offset"),
            enqueued_time=coordinates.get("enqueued_time"),
            origin=str(coordinates.get("origin", "")),
        )
        try:
            deliver(
                [body],
                writer=app.writer,
                deadletters=app.deadletters,
                forwarder=app.forwarder,
                final_attempt=False,
                path=letter.path,
            )
        except RetryableDeliveryError:
            return False
        return True
    if letter.kind == REJECTED:
        # Rejected input only succeeds after a fix to the normalizer; otherwise it stays.
        records, rejections = normalize_input(letter.raw, letter.source)
        if rejections or not records:
            return False
        app.writer.write(records)
        return True
    if letter.kind == NOT_FORWARDED:
        if app.forwarder is None:
            return False
        record = orjson.loads(letter.raw)
        if _already_forwarded(app, record):
            return True  # a later delivery sent it: sending again would double it
        try:
            result = app.forwarder.forward([record])
        except TransientForwardError:
            return False
        if result.forwarded:
            app.writer.mark_forwarded([record])
        return bool(result.forwarded)
    return False


def _already_forwarded(app: Runtime, record: NormalizedRecord) -> bool:
    key = RecordKey.of(record)
    try:
        row = app.stores.records.get_entity(key.partition_key, key.row_key, select=["Forwarded"])
    except ResourceNotFoundError:
        return False
    return bool(row.get("Forwarded", False))


def replay(app: Runtime, *, kind: str | None = None) -> dict[str, Any]:
    replayed = still_failing = 0
    for letter in list(app.deadletters.list(kind)):
        if _replay_one(app, letter):
            app.deadletters.remove(letter.name)
            replayed += 1
        else:
            still_failing += 1
    return {"replayed": replayed, "still_failing": still_failing}
