"""Re-driving dead letters once their cause is fixed, without duplicating anything.

Each letter is claimed (leased) before anything is done with it, and its exact bytes are what is
re-driven. Two replays at once therefore never act on the same letter: the one that cannot
claim it (another holds it, or already removed it) skips it and counts it `claimed_elsewhere`.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from shared.adapters.deadletters import (
    NOT_FORWARDED,
    REJECTED,
    UNDELIVERED,
    DeadLetter,
    LetterHeld,
    UnreadableLetter,
)
from shared.adapters.log_analytics import TransientForwardError
from shared.bootstrap import Runtime
from shared.core.normalize import normalize_input
from shared.core.pt1h import BlobPath
from shared.services.delivery import EventBody, RetryableDeliveryError, deliver, index_and_forward

REPLAYED, STILL_FAILING, CLAIMED_ELSEWHERE = "replayed", "still_failing", "claimed_elsewhere"

log = logging.getLogger(__name__)


def _replay_one(app: Runtime, letter: DeadLetter) -> bool:
    """True when the letter's content is now where it belongs (and the letter can go)."""
    if letter.kind == UNDELIVERED:
        return _replay_body(app, letter)
    if letter.kind == REJECTED:
        return _replay_rejected(app, letter)
    if letter.kind == NOT_FORWARDED:
        return _replay_unforwarded(app, letter)
    return False


def _replay_body(app: Runtime, letter: DeadLetter) -> bool:
    coordinates = letter.coordinates
    body = EventBody(
        body=letter.raw_bytes,  # byte for byte as the hub delivered it
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
            forwarding=app.forwarding,
            final_attempt=False,
            path=letter.path,
        )
    except RetryableDeliveryError as error:
        if isinstance(error.__cause__, TransientForwardError):
            return False  # indexed; Log Analytics takes it on the next replay
        # The index could not be written (storage, or another writer holds the events): the
        # letter stays, released, and the replay ends with why, as for a rejected letter.
        raise
    return True


def _replay_rejected(app: Runtime, letter: DeadLetter) -> bool:
    """Rejected input only succeeds after a fix to the normalizer; otherwise it stays."""
    from_blob = letter.path == "blob"
    # As its path normalized it: a blob's line takes its subscription from the blob's name.
    fallback = BlobPath.parse(str(letter.coordinates.get("blob", ""))).subscription
    records, rejections = normalize_input(
        letter.raw_bytes, letter.source, fallback if from_blob else ""
    )
    if rejections or not records:
        return False
    try:
        index_and_forward(
            records,
            writer=app.writer,
            deadletters=app.deadletters,
            # Both paths forward what they index (once per record: the marks decide).
            forwarding=app.forwarding,
            path=letter.path,
        )
    except RetryableDeliveryError:
        return False  # indexed; the next replay forwards it (an unforwarded duplicate)
    return True


def _replay_unforwarded(app: Runtime, letter: DeadLetter) -> bool:
    if app.forwarder is None:
        return False
    record = orjson.loads(letter.raw_bytes)
    if app.marks.is_forwarded(record):
        return True  # a later delivery sent it: sending again would double it
    try:
        result = app.forwarder.forward([record])
    except TransientForwardError:
        return False
    if result.forwarded:
        app.marks.mark([record])
    return bool(result.forwarded)


def _replay_claimed(app: Runtime, name: str) -> str:
    """Claim the letter, re-drive it, and remove it if that worked; the outcome's summary key."""
    try:
        claim = app.deadletters.claim(name)
    except LetterHeld:
        return CLAIMED_ELSEWHERE  # another replay is at work on it
    if claim is None:
        return CLAIMED_ELSEWHERE  # another replay finished it since the listing
    with app.deadletters.holding([claim]):  # renewed while it runs, released if it stays
        try:
            letter = claim.letter()  # read under the lease: the letter as it is now
        except UnreadableLetter as error:
            log.warning("%s; it stays", error, extra={"letter": name})
            return STILL_FAILING  # not a letter: nothing to re-drive, and nothing to lose
        if letter is None:
            return CLAIMED_ELSEWHERE
        if not _replay_one(app, letter):
            return STILL_FAILING
        # Another replay that took the letter over when this one's lease ran out counts it.
        return REPLAYED if claim.remove() else CLAIMED_ELSEWHERE


def replay(app: Runtime, *, kind: str | None = None) -> dict[str, Any]:
    """`replayed` and `still_failing` counts, and `claimed_elsewhere` when another replay at
    the same time took some of the letters (each letter is counted by one replay only)."""
    summary = {REPLAYED: 0, STILL_FAILING: 0, CLAIMED_ELSEWHERE: 0}
    for name in list(app.deadletters.names(kind)):
        summary[_replay_claimed(app, name)] += 1
    if not summary[CLAIMED_ELSEWHERE]:
        del summary[CLAIMED_ELSEWHERE]
    return summary
