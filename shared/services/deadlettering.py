"""Rejections to dead letters: the one way every path (Event Hub, blob) keeps what it rejected.

A rejection can never succeed (not JSON, no parseable time): it is dead-lettered at once,
whole, with its reason, its source and where it sat (partition and sequence number, or blob and
line), and its exact bytes when its text cannot show them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from shared.adapters.deadletters import REJECTED, DeadLetter, DeadLetterStore
from shared.core.records import Rejection


def dead_letter_rejections(
    deadletters: DeadLetterStore,
    rejections: Iterable[Rejection],
    *,
    coordinates_of: Callable[[Rejection], dict[str, Any]],
    path: str,
) -> int:
    """Put one REJECTED letter per rejection, in order; the number put.

    `coordinates_of` gives a rejection's coordinates (an Event Hub body's, the same for all its
    rejections; a blob's name and the rejection's line); `path` is `eventhub`, `blob` or `cli`.
    A storage error is raised as it comes: the letters before it are put, none after.
    """
    count = 0
    for rejection in rejections:
        deadletters.put(
            DeadLetter(
                kind=REJECTED,
                reason=rejection.reason,
                source=rejection.source,
                raw=rejection.raw,
                coordinates=coordinates_of(rejection),
                path=path,
                data=rejection.data,  # the exact bytes, when the text cannot show them
            )
        )
        count += 1
    return count
