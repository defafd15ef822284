"""Retention: delete what is past its configured age, and nothing younger.

Ages are judged from the event's own time (TimeGenerated, encoded in every index RowKey) and,
for archived PT1H.json blobs, from the hour in the blob's path, never from Last-Modified.
What goes when is shared.core.retention_policy's. Index rows go oldest partition first,
lookups before the record row (the record row is the commit point, as on write), so a run
stopped by its time budget leaves nothing half-visible that the next run does not finish.

One item that cannot be judged (an archive name outside the PT1H.json layout, an unreadable
RowKey) is kept and reported; it never stops the run for the others. A cursor goes only once
its blob is gone, so a blob that stays (leased, protected, not reached) is never indexed again.
Each run keeps one audit row up to date as it goes (shared.services.retention_audit).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import TableClient
from azure.storage.blob import ContainerClient

from shared.adapters.index_store import delete_rows
from shared.adapters.storage import Stores
from shared.core.keys import LOOKUP_COLUMNS, time_of_row_key
from shared.core.pt1h import SUBSCRIPTIONS_PREFIX, BlobPath, hour_key
from shared.core.retention_policy import (
    CategoryGroup,
    RetentionPolicy,
    RowTime,
    as_utc,
    day_after,
    lookup_time,
    month_after,
    time_or_none,
)
from shared.services.retention_audit import AuditRow, RetentionReport, add_counts

log = logging.getLogger(__name__)

# Blob errors that mean "this blob may not be deleted": skip and report, never fail the run.
PROTECTED_BLOB_ERRORS = frozenset(
    {
        "BlobImmutableDueToPolicy",
        "BlobImmutableDueToLegalHold",
        "LeaseIdMissing",
        "LeaseIdMismatchWithBlobOperation",
        "BlobIsImmutable",
        "AuthorizationPermissionMismatch",
        "BlobOverwritten",
    }
)
OUTSIDE_LAYOUT = "name outside the PT1H.json layout"
STEP_ROWS = 1000  # index rows or cursors per deletion step (one audit update before each)
STEP_BLOBS = 100  # blobs per deletion step
# An oversize body whose record row is missing is an orphan once nobody can be writing it
# (the writer uploads the body, then creates the row, at once).
ORPHAN_AFTER = timedelta(hours=1)
_YEAR_FOLDER = re.compile(r"/y=(\d{4})/$")
_BODY_NAME = re.compile(r"(\d{4})/(\d{2})/(\d{2})/(\d{19}_[^/]+)\.json")
_T = TypeVar("_T")


def _chunked(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    chunk: list[_T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# As host.json's functionTimeout default on Consumption allows (10 minutes), with room.
DEFAULT_BUDGET_SECONDS = 540


class Budget:
    """The time one run may take, on a clock (time.monotonic; tests give their own)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._deadline = clock() + seconds

    def spent(self) -> bool:
        return self._clock() >= self._deadline


class RetentionJob:
    def __init__(
        self,
        stores: Stores,
        policy: RetentionPolicy,
        *,
        as_of: datetime,
        dry_run: bool,
        budget: Budget,
    ) -> None:
        self._stores = stores
        self._policy = policy
        self._as_of = as_of
        self._dry_run = dry_run
        self._budget = budget
        self._deleted_blobs: set[str] = set()  # archive blobs this run deleted (or would)
        self.report = RetentionReport(as_of=as_of.isoformat(), dry_run=dry_run)
        self._audit = AuditRow(stores.runs, self.report)

    def run(self) -> RetentionReport:
        """Every step, audited: the row first, before each deletion step, and at the end."""
        started = time.monotonic()
        self._audit.write()
        try:
            self._steps()
        except BaseException as error:
            self._audit.fail(error, time.monotonic() - started)
            raise
        self._audit.finish(time.monotonic() - started, complete=not self._budget.spent())
        return self.report

    def _steps(self) -> None:
        groups = self._policy.category_groups(self._as_of)
        self._lookups(groups)
        self._records(groups)
        if groups and not self._budget.spent():
            self._orphan_bodies(max(group.cutoff for group in groups))
        self._count_kept()
        # Archive blobs and dead letters may hold any category: past the longest limit only.
        longest = self._policy.longest_cutoff(self._as_of)
        if longest is None:
            return
        if not self._budget.spent():
            self._archive_blobs(longest)
        if not self._budget.spent():
            self._cursors(longest)
        if not self._budget.spent():
            self._deadletters(longest)

    def _delete_rows(self, table: TableClient, rows: Sequence[dict[str, Any]]) -> None:
        if not self._dry_run:
            delete_rows(table, rows)

    def _expired_rows(
        self, table: TableClient, group: CategoryGroup, low: str, high: str, row_time: RowTime
    ) -> Iterator[dict[str, Any]]:
        """Rows of the group's categories in [low, high) that are past the group's cutoff.

        The category is filtered by the service (bound parameters), so rows that a longer
        limit keeps are not even sent; the exact age is judged here, to the tick.
        """
        category_filter, parameters = group.filter()
        for row in table.query_entities(
            f"PartitionKey ge @low and PartitionKey lt @high{category_filter}",
            parameters={"low": low, "high": high, **parameters},
            select=["PartitionKey", "RowKey", "CategoryValue", "BodyBlob"],
        ):
            if self._budget.spent():
                return
            moment = time_or_none(row_time, row["RowKey"])
            if moment is not None and moment < group.cutoff:
                yield row

    def _lookups(self, groups: list[CategoryGroup]) -> None:
        for group in groups:
            upper = month_after(group.cutoff)
            for kind in LOOKUP_COLUMNS:
                rows = self._expired_rows(
                    self._stores.lookup, group, f"{kind}|", f"{kind}|{upper}", lookup_time
                )
                for step in _chunked(rows, STEP_ROWS):
                    self._delete_lookups(step, by_subscription=kind == "s")

    def _delete_lookups(self, rows: list[dict[str, Any]], *, by_subscription: bool) -> None:
        self.report.lookups_deleted += len(rows)
        if by_subscription:
            subscriptions = Counter(row["RowKey"].rsplit("|", 1)[0] for row in rows)
            add_counts(self.report.deleted_by_subscription, subscriptions)
        self._audit.before_step()
        self._delete_rows(self._stores.lookup, rows)

    def _records(self, groups: list[CategoryGroup]) -> None:
        """Delete expired record rows, oldest day partition first, group by group."""
        for group in groups:
            rows = self._expired_rows(
                self._stores.records, group, "0", day_after(group.cutoff), time_of_row_key
            )
            for step in _chunked(rows, STEP_ROWS):
                self._delete_records(step)

    def _delete_records(self, rows: list[dict[str, Any]]) -> None:
        bodies = [row["BodyBlob"] for row in rows if row.get("BodyBlob")]
        self.report.records_deleted += len(rows)
        self.report.oversize_blobs_deleted += len(bodies)
        categories = Counter(str(row.get("CategoryValue", "")) for row in rows)
        add_counts(self.report.deleted_by_category, categories)
        self._audit.before_step()
        self._delete_rows(self._stores.records, rows)
        for name in bodies:
            if not self._delete_body(name):
                self.report.oversize_blobs_deleted -= 1

    def _orphan_bodies(self, cutoff: datetime) -> None:
        """Oversize bodies older than the shortest limit whose record row is gone: a run
        stopped between the row and its body left them."""
        self._delete_blobs(self._orphans(cutoff), self._delete_body, "oversize_blobs_deleted")

    def _orphans(self, cutoff: datetime) -> Iterator[str]:
        last_day = f"{cutoff.year:04d}/{cutoff.month:02d}/{cutoff.day:02d}"
        idle_before = datetime.now(UTC) - ORPHAN_AFTER
        if not self._stores.oversize.exists():
            return
        for blob in self._stores.oversize.list_blobs():
            if self._budget.spent():
                return
            match = _BODY_NAME.fullmatch(blob.name)
            if match is None:
                continue
            if blob.name[:10] > last_day:
                return  # names sort by day: the rest are younger
            moment = time_or_none(time_of_row_key, match[4])
            if moment is None or moment >= cutoff or blob.last_modified >= idle_before:
                continue
            try:
                self._stores.records.get_entity(
                    f"{match[1]}{match[2]}{match[3]}", match[4], select=["RowKey"]
                )
            except ResourceNotFoundError:
                yield blob.name

    def _delete_body(self, name: str) -> bool:
        container = self._stores.oversize
        return self._delete_blob(container, name, f"{container.container_name}/{name}")

    def _count_kept(self) -> None:
        """Count the records that stay (one record row each) and find the oldest of them.

        A dry run deleted nothing, so age is judged again here: what a real run would keep.
        Bounded by the budget like the rest: a run that runs out reports `complete: false`.
        """
        oldest_kept: datetime | None = None
        for row in self._stores.records.query_entities(
            "PartitionKey ge @low", parameters={"low": "0"}, select=["RowKey", "CategoryValue"]
        ):
            if self._budget.spent():
                break
            moment = time_or_none(time_of_row_key, row["RowKey"])
            if moment is None:
                self.report.rows_unreadable += 1
            elif self._policy.expired(row.get("CategoryValue", ""), moment, self._as_of):
                continue
            self.report.records_kept += 1
            if moment is not None and (oldest_kept is None or moment < oldest_kept):
                oldest_kept = moment
        self.report.oldest_kept = oldest_kept.isoformat() if oldest_kept else None

    def _delete_blobs(
        self, names: Iterable[str], delete: Callable[[str], bool], counter: str
    ) -> None:
        """Delete blobs STEP_BLOBS at a time, each step audited first (AuditRow.steps)."""
        self._audit.steps(_chunked(names, STEP_BLOBS), delete, counter, self._budget.spent)

    def _archive_blobs(self, cutoff: datetime) -> None:
        archive = self._stores.archive
        if archive.exists():
            old = self._old_archive_blobs(archive, cutoff)
            self._delete_blobs(old, self._delete_archive_blob, "blobs_deleted")

    def _delete_archive_blob(self, name: str) -> bool:
        if not self._delete_blob(self._stores.archive, name, name):
            return False
        self._deleted_blobs.add(name)
        return True

    def _delete_blob(self, container: ContainerClient, name: str, shown: str) -> bool:
        """Delete one blob (in a dry run, say it would go). False when it is gone already or
        may not be deleted (leased, on hold, immutable): kept and reported as `shown`, never
        an error for the run."""
        if self._dry_run:
            return True
        try:
            container.delete_blob(name)
        except ResourceNotFoundError:
            return False
        except HttpResponseError as error:
            code = str(getattr(error, "error_code", "") or error.status_code)
            if code not in PROTECTED_BLOB_ERRORS and error.status_code not in (403, 409, 412):
                raise
            self._skip(shown, code)
            return False
        return True

    def _skip(self, blob: str, reason: str) -> None:
        self.report.blobs_skipped.append({"blob": blob, "reason": reason})
        log.warning("blob kept", extra={"blob": blob, "reason": reason})

    def _old_archive_blobs(self, archive: ContainerClient, cutoff: datetime) -> Iterator[str]:
        """Blobs whose whole hour is past the cutoff (its last event may be at :59:59).

        A name outside the layout (no hour, or one that does not exist) is kept and reported.
        """
        first_hour_kept = cutoff.replace(minute=0, second=0, microsecond=0)
        for folder in self._year_folders(archive, cutoff.year):
            for blob in archive.list_blobs(name_starts_with=folder):
                if self._budget.spent():
                    return
                hour = BlobPath.parse(blob.name).hour
                if hour is None:
                    self._skip(blob.name, OUTSIDE_LAYOUT)
                elif hour < first_hour_kept:
                    yield blob.name

    @staticmethod
    def _year_folders(archive: ContainerClient, last_year: int) -> list[str]:
        """Each subscription's `y=YYYY/` up to the cutoff's year, and any other `y=` name."""
        folders: list[str] = []
        for subscription in archive.walk_blobs(
            name_starts_with=SUBSCRIPTIONS_PREFIX, delimiter="/"
        ):
            if not subscription.name.endswith("/"):
                continue
            for year in archive.walk_blobs(
                name_starts_with=f"{subscription.name}y=", delimiter="/"
            ):
                match = _YEAR_FOLDER.search(year.name)
                if match is None or int(match[1]) <= last_year:
                    folders.append(year.name)
        return folders

    def _cursors(self, cutoff: datetime) -> None:
        """Cursors of hours past the cutoff whose blob is gone (deleted by this run, or no
        longer in the archive). A blob that stays, leased or not reached, keeps its cursor:
        without it, a backfill would index the blob's expired records again."""
        rows = self._stores.cursors.query_entities(
            "PartitionKey lt @high",
            parameters={"high": hour_key(cutoff)},
            select=["PartitionKey", "RowKey", "Blob"],
        )
        for step in _chunked(self._without_blob(rows), STEP_ROWS):
            self.report.cursors_deleted += len(step)
            self._audit.before_step()
            self._delete_rows(self._stores.cursors, step)

    def _without_blob(self, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        archive = self._stores.archive
        for row in rows:
            if self._budget.spent():
                return
            blob = row.get("Blob")
            if not isinstance(blob, str) or not blob:
                continue  # no blob named: kept, as its blob may still be there
            if blob in self._deleted_blobs or not archive.get_blob_client(blob).exists():
                yield row

    def _deadletters(self, cutoff: datetime) -> None:
        """Dead letters past the longest limit: one may be an event's only copy."""
        old = (
            blob.name
            for blob in self._stores.deadletter.list_blobs()
            if not self._budget.spent() and blob.last_modified < cutoff
        )
        self._delete_blobs(old, self._delete_deadletter, "deadletters_deleted")

    def _delete_deadletter(self, name: str) -> bool:
        # A letter leased by a replay at work on it is kept (and reported): the next run sees.
        container = self._stores.deadletter
        return self._delete_blob(container, name, f"{container.container_name}/{name}")


def enforce_retention(
    stores: Stores,
    policy: RetentionPolicy,
    *,
    as_of: datetime | None = None,
    dry_run: bool = False,
    budget: Budget | float = DEFAULT_BUDGET_SECONDS,
) -> RetentionReport:
    """Run retention once; `budget` is seconds or a Budget (a clock of the caller's)."""
    job = RetentionJob(
        stores,
        policy,
        as_of=as_utc(as_of or datetime.now(UTC)),
        dry_run=dry_run,
        budget=budget if isinstance(budget, Budget) else Budget(budget),
    )
    return job.run()
