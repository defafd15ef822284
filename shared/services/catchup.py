"""Which archive blobs to index, and indexing many: the catch-up timer's hours, a backfill.

The catch-up lists the recent hours of every subscription and indexes what is new in each
unsealed blob; with it alone nothing is missed. A watermark in the cursor table remembers the
hour before which a run with no failure covered everything, so after an outage longer than
the lookback the next runs also list the hours since then (a week at most per run, oldest
first), and a blob that keeps failing holds the watermark at its hour.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from azure.core.exceptions import AzureError
from azure.storage.blob import ContainerClient

from shared.adapters.blobs import ArchiveBlob, ByteSource
from shared.adapters.cursors import CursorStore, Watermark
from shared.core.pt1h import SUBSCRIPTIONS_PREFIX, BlobPath, hour_prefix, hours_back
from shared.services.blob_indexing import BlobIndexer
from shared.services.report import BlobReport

log = logging.getLogger(__name__)

MAX_CATCHUP_HOURS = 7 * 24


def index_each(
    indexer: BlobIndexer,
    sources: Iterable[ByteSource],
    *,
    parallelism: int = 1,
    on_done: Callable[[BlobReport], object] | None = None,
    on_error: Callable[[str, Exception], object] | None = None,
) -> BlobReport:
    """Index every source; one that fails is reported and logged (or handed to `on_error`
    with its name), never stalls the others."""
    total = BlobReport()

    def one(source: ByteSource) -> BlobReport:
        try:
            return indexer.index(source)
        except Exception as error:
            if on_error is not None:
                on_error(source.name, error)
            else:
                log.exception(
                    "indexing a blob failed; the next run retries it", extra={"blob": source.name}
                )
            return BlobReport(blobs=1, failed=[source.name])

    if parallelism <= 1:
        results: Iterator[BlobReport] = map(one, sources)
    else:
        pool = ThreadPoolExecutor(max_workers=parallelism)
        results = pool.map(one, sources)
    for result in results:
        total.add(result)
        if on_done is not None:
            on_done(result)
    if parallelism > 1:
        pool.shutdown()
    return total


def catch_up(
    indexer: BlobIndexer,
    container: ContainerClient,
    *,
    now: datetime,
    hours: int,
    max_hours: int = MAX_CATCHUP_HOURS,
) -> BlobReport:
    """Index the new bytes of every unsealed blob of the recent hours, and of hours missed.

    The recent hours are `hours_back(now, hours)`; older blobs no longer grow. A watermark in
    the cursor table marks the hour before which every blob was indexed whole by a run with
    no failure. When it is older than the recent hours (an outage), this run also covers the
    `max_hours` hours from it, oldest first, then moves it to where that coverage ends (at
    most the start of the recent hours), never past the hour of a blob that failed. So each
    hour is either behind the watermark and done, or at or after it and listed again.
    """
    if max_hours < 1:
        raise ValueError("max_hours must be at least 1, or a backlog never shrinks")
    recent = hours_back(now, hours)
    cursors = indexer.cursors
    mark = cursors.watermark()
    covered_to, backlog = _backlog(mark, recent[-1], max_hours)
    # The recent hours first, as ever: a backlog does not delay what is being written now.
    hour_of = _unsealed_blobs(container, cursors, recent + backlog)
    report = index_each(indexer, [ArchiveBlob(container, name) for name in hour_of])
    if mark.hour is not None:
        covered_to = max(covered_to, mark.hour)  # no failure: no reason to look again
    if report.failed:
        # The next runs must list the failed blob's hour until it is indexed. This moves the
        # watermark back if it was ahead of these recent hours (set by a later clock): safe.
        covered_to = min(covered_to, *(hour_of[name] for name in report.failed))
    if covered_to != mark.hour:
        try:
            # A lost race is fine: the other run started from the same watermark as ours.
            cursors.move_watermark(mark, covered_to)
        except AzureError:
            # The hours it would have freed are listed again next run: wasteful, not wrong.
            log.warning("could not move the catch-up watermark", exc_info=True)
    return report


def _backlog(mark: Watermark, start: datetime, max_hours: int) -> tuple[datetime, list[datetime]]:
    """The watermark this run earns if no blob fails, and the missed hours before `start`.

    `start` is the oldest recent hour; a watermark older than it (an outage) adds the
    `max_hours` hours from it at most, oldest first.
    """
    if mark.hour is None or mark.hour >= start:
        return start, []
    covered_to = min(start, mark.hour + timedelta(hours=max_hours))
    backlog = [
        mark.hour + timedelta(hours=back)
        for back in range((covered_to - mark.hour) // timedelta(hours=1))
    ]
    return covered_to, backlog


def _unsealed_blobs(
    container: ContainerClient, cursors: CursorStore, listed: list[datetime]
) -> dict[str, datetime]:
    """Every PT1H.json of every subscription in the listed hours whose cursor is not sealed,
    with its hour, in the order of `listed`."""
    sealed = {cursor.blob for cursor in cursors.in_hours(listed) if cursor.sealed}
    subscriptions = [
        prefix.name
        for prefix in container.walk_blobs(name_starts_with=SUBSCRIPTIONS_PREFIX, delimiter="/")
        if prefix.name.endswith("/")
    ]
    return {
        blob.name: hour
        for subscription in subscriptions
        for hour in listed
        for blob in container.list_blobs(name_starts_with=hour_prefix(subscription, hour))
        if blob.name.endswith("PT1H.json") and blob.name not in sealed
    }


def in_scope(
    name: str, since: datetime | None, until: datetime | None, subscription: str | None
) -> bool:
    """Whether a backfill that asked for this time range and subscription takes this blob."""
    path = BlobPath.parse(name)
    if subscription and path.subscription != subscription.lower():
        return False
    if path.hour is None:
        # No hour to place it by: only an unbounded run takes it (and reports it).
        return since is None and until is None
    if since and path.hour + timedelta(hours=1) <= since:
        return False
    return not (until and path.hour >= until)


def container_sources(
    container: ContainerClient,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    subscription: str | None = None,
) -> list[ByteSource]:
    return [
        ArchiveBlob(container, blob.name)
        for blob in container.list_blobs()
        if in_scope(blob.name, since, until, subscription)
    ]
