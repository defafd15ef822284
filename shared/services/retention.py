"""Retention: delete what is past its configured age, and nothing younger.

The app's archive and its month tables go by whole units (shared.services.retention_archive):
a class's day of blobs, a month's table. Azure's own export (PT1H.json blobs in
`insights-activity-logs`) may hold any category, so a blob goes past the longest limit only,
judged by the hour in its path, never by Last-Modified; a name outside that layout is kept
and reported. A cursor goes only once its blob is gone, so a blob that stays (leased,
protected, not reached) is never indexed again. Dead letters, one of which may be an event's
only copy, are kept for the longest limit. What goes when is shared.core.retention_policy's.

Each run keeps one audit row up to date as it goes (shared.services.retention_audit) and stops
at its time budget (`complete: false`); the next run finishes what it left.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import TableTransactionError
from azure.storage.blob import ContainerClient

from shared.adapters.index_tables import transactions
from shared.adapters.storage import Stores
from shared.core.pt1h import SUBSCRIPTIONS_PREFIX, BlobPath, hour_key
from shared.core.retention_policy import RetentionPolicy, as_utc
from shared.services.retention_archive import PROTECTED_BLOB_ERRORS, ArchiveRetention, chunked
from shared.services.retention_audit import AuditRow, RetentionReport

OUTSIDE_LAYOUT = "name outside the PT1H.json layout"
STEP_ROWS = 1000  # cursors per deletion step (one audit update before each)
STEP_BLOBS = 100  # blobs per deletion step
_YEAR_FOLDER = re.compile(r"/y=(\d{4})/$", re.ASCII)  # int() reads other digits too
__all__ = ["PROTECTED_BLOB_ERRORS", "Budget", "RetentionJob", "enforce_retention"]


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
        self._deleted_blobs: set[str] = set()  # PT1H.json blobs this run deleted (or would)
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
        ArchiveRetention(
            self._stores, self._policy, self._audit, as_of=self._as_of, spent=self._budget.spent
        ).run()
        # Azure's export and dead letters may hold any category: past the longest limit only.
        longest = self._policy.longest_cutoff(self._as_of)
        if longest is None:
            return
        if not self._budget.spent():
            self._archive_blobs(longest)
        if not self._budget.spent():
            self._cursors(longest)
        if not self._budget.spent():
            self._deadletters(longest)

    def _delete_rows(self, rows: list[dict[str, Any]]) -> None:
        """Delete cursors, a transaction per hour and hundred; one gone already is no error."""
        if self._dry_run:
            return
        cursors = self._stores.cursors
        keys = [{"PartitionKey": r["PartitionKey"], "RowKey": r["RowKey"]} for r in rows]
        for batch in transactions(keys):
            try:
                cursors.submit_transaction([("delete", key) for key in batch])
            except TableTransactionError:
                for key in batch:
                    try:
                        cursors.delete_entity(key["PartitionKey"], key["RowKey"])
                    except ResourceNotFoundError:
                        continue

    def _delete_blobs(
        self, names: Iterable[str], delete: Callable[[str], bool], counter: str
    ) -> None:
        """Delete blobs STEP_BLOBS at a time, each step audited first (AuditRow.steps)."""
        self._audit.steps(chunked(names, STEP_BLOBS), delete, counter, self._budget.spent)

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
            self.report.skip(shown, code)
            return False
        return True

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
                    self.report.skip(blob.name, OUTSIDE_LAYOUT)
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
        for step in chunked(self._without_blob(rows), STEP_ROWS):
            self.report.cursors_deleted += len(step)
            self._audit.before_step()
            self._delete_rows(step)

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
