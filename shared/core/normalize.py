"""Turn Activity Log input into the normalized records of the spec, and rejections. Pure.

No I/O; nothing here raises. Every way in runs the one batch loop (decoded items: each event
normalized, each rejection passed on, in input order):

- `normalize_input`: one whole input (file, blob, Event Hub body) as a `Batch` of lists;
- `iter_normalized`: the same one result at a time, for inputs too big to hold;
- `normalize_line`: one JSON Lines line (the blob indexer, line by line);
- `normalize`: one decoded event.

`split` gathers any stream of results into a `Batch`. The rules themselves are in
shared.core.columns (where the spec is silent is noted there), the time forms in
shared.core.timeparse, the EventKey in shared.core.eventkey.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from shared.core.columns import build_record
from shared.core.decode import Decoded, RawEvent, decode, decode_line, json_type
from shared.core.records import NormalizedRecord, Rejection

__all__ = [
    "Batch",
    "iter_normalized",
    "normalize",
    "normalize_input",
    "normalize_line",
    "split",
]

Result = NormalizedRecord | Rejection


class Batch(NamedTuple):
    """The results of an input, records and rejections apart, each in input order.

    A tuple: `records, rejections = normalize_input(...)` reads it as before.
    """

    records: list[NormalizedRecord]
    rejections: list[Rejection]


def normalize_input(data: bytes | str, source: str, fallback_subscription: str = "") -> Batch:
    """Decode one input (file, blob, Event Hub body) and normalize each of its events."""
    return split(iter_normalized(data, source, fallback_subscription))


def iter_normalized(
    data: bytes | str, source: str, fallback_subscription: str = ""
) -> Iterator[Result]:
    """`normalize_input` one result at a time, in input order: for inputs too big to hold."""
    return _results(decode(data, source), fallback_subscription)


def normalize_line(line: bytes, source: str, fallback_subscription: str = "") -> Iterator[Result]:
    """The results of one JSON Lines line: none for a blank line, one rejection for a bad one,
    a record for each event (an object, or a `records` envelope on one line).

    `source` is used as given (the caller names the blob and the line number).
    """
    return _results(decode_line(line, source), fallback_subscription)


def split(results: Iterable[Result]) -> Batch:
    """Records and rejections apart, each in order."""
    records: list[NormalizedRecord] = []
    rejections: list[Rejection] = []
    add_record, add_rejection = records.append, rejections.append
    with _collector_paused():
        for result in results:
            if isinstance(result, Rejection):
                add_rejection(result)
            else:
                add_record(result)
    return Batch(records, rejections)


def _results(items: Iterable[Decoded], fallback_subscription: str) -> Iterator[Result]:
    """The one batch loop: each decoded event normalized, each rejection passed on, in order."""
    for item in items:
        if isinstance(item, Rejection):
            yield item
        else:
            yield normalize(
                item.event,
                source=item.source,
                raw=item,
                fallback_subscription=fallback_subscription,
            )


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause CPython's cycle collector while a list of records grows.

    Records are trees of JSON values, never cycles, so reference counting frees them all; but
    every few hundred allocations the collector would walk the whole growing heap again
    (about a fifth of the time of a 30,000-record input, measured).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def normalize(
    event: dict[str, Any],
    *,
    source: str,
    raw: str | RawEvent,
    fallback_subscription: str = "",
) -> Result:
    """The normalized record of one event, or its rejection (no parseable time).

    `raw` is the event's text, or the RawEvent it was decoded as: its text is then made only
    if the event is rejected.
    """
    if not isinstance(event, dict):
        reason = f"not an object: got {json_type(event)}"
    else:
        try:
            result = build_record(event, fallback_subscription)
        except Exception as error:
            # A defect here must not lose a batch: the event is dead-lettered with the cause.
            result = f"normalizer error: {type(error).__name__}: {error}"
        if not isinstance(result, str):
            return result
        reason = result
    if isinstance(raw, str):
        return Rejection(reason, source, raw)
    text = raw.raw
    exact = raw.raw_bytes
    return Rejection(reason, source, text, b"" if exact == text.encode() else exact)
