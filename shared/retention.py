"""Retention: delete what is past its configured age, and nothing younger.

Ages are judged from the event's own time (TimeGenerated, encoded in every index RowKey) and,
for archived PT1H.json blobs, from the hour in the blob's path, never from Last-Modified.
A record goes when it is strictly older than its category's limit. A blob holds every
category, so it goes only when it is older than the longest limit. Index rows go
oldest partition first, lookups before the record row (the record row is the commit point,
as on write), so a run stopped by its time budget leaves nothing half-visible that the next
run does not finish.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import TableClient
from azure.storage.blob import ContainerClient

from shared.blobindex import BlobPath, hour_key
from shared.index import LOOKUP_COLUMNS, MAX_BATCH, record_row_key, time_of_row_key
from shared.storage import Stores

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


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Days to keep, by default and per category; 0 keeps forever."""

    default_days: int
    category_days: Mapping[str, int] = field(default_factory=dict)

    def days_for(self, category: str) -> int:
        return self.category_days.get(category, self.default_days)

    def cutoff(self, category: str, as_of: datetime) -> datetime | None:
        days = self.days_for(category)
        return None if days == 0 else as_of - timedelta(days=days)

    def latest_cutoff(self, as_of: datetime) -> datetime | None:
        """The newest moment before which anything at all may go (shortest limit)."""
        limits = [days for days in (self.default_days, *self.category_days.values()) if days]
        return as_of - timedelta(days=min(limits)) if limits else None

    def blob_cutoff(self, as_of: datetime) -> datetime | None:
        """Blobs mix categories: they go only past the longest limit (never, if one is 0)."""
        limits = (self.default_days, *self.category_days.values())
        return None if 0 in limits else as_of - timedelta(days=max(limits))

    def expired(self, category: str, moment: datetime, as_of: datetime) -> bool:
        cutoff = self.cutoff(category, as_of)
        return cutoff is not None and moment < cutoff


@dataclass(slots=True)
class RetentionReport:
    as_of: str
    dry_run: bool
    records_deleted: int = 0
    records_kept: int = 0
    lookups_deleted: int = 0
    oversize_blobs_deleted: int = 0
    blobs_deleted: int = 0
    blobs_skipped: list[dict[str, str]] = field(default_factory=list)
    cursors_deleted: int = 0
    deadletters_deleted: int = 0
    deleted_by_category: dict[str, int] = field(default_factory=dict)
    deleted_by_subscription: dict[str, int] = field(default_factory=dict)
    oldest_kept: str | None = None
    complete: bool = True
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class _Budget:
    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._deadline = clock() + seconds

    def spent(self) -> bool:
        return self._clock() >= self._deadline


def _batches(entities: Iterable[Mapping[str, Any]]) -> Iterator[list[Mapping[str, Any]]]:
    """Same-partition groups of at most 100, in the order given."""
    batch: list[Mapping[str, Any]] = []
    for entity in entities:
        if batch and (
            len(batch) == MAX_BATCH or batch[0]["PartitionKey"] != entity["PartitionKey"]
        ):
            yield batch
            batch = []
        batch.append(entity)
    if batch:
        yield batch


def _delete_rows(table: TableClient, rows: Sequence[Mapping[str, Any]], dry_run: bool) -> None:
    if dry_run:
        return
    for batch in _batches(rows):
        try:
            table.submit_transaction(
                [
                    ("delete", {"PartitionKey": r["PartitionKey"], "RowKey": r["RowKey"]})
                    for r in batch
                ]
            )
        except HttpResponseError as error:
            if getattr(error, "error_code", "") != "ResourceNotFound":
                raise
            # Someone deleted one of them already (a concurrent run): delete one by one.
            for row in batch:
                table.delete_entity(row["PartitionKey"], row["RowKey"])


class RetentionJob:
    def __init__(
        self,
        stores: Stores,
        policy: RetentionPolicy,
        *,
        as_of: datetime,
        dry_run: bool,
        budget_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stores = stores
        self._policy = policy
        self._as_of = as_of
        self._dry_run = dry_run
        self._budget = _Budget(budget_seconds, clock)
        self.report = RetentionReport(as_of=as_of.isoformat(), dry_run=dry_run)

    def run(self) -> RetentionReport:
        started = time.monotonic()
        latest = self._policy.latest_cutoff(self._as_of)
        if latest is not None:
            self._lookups(latest)
            self._records(latest)
        else:
            self._count_kept_only()
        blob_cutoff = self._policy.blob_cutoff(self._as_of)
        if blob_cutoff is not None and not self._budget.spent():
            self._archive_blobs(blob_cutoff)
            self._cursors(blob_cutoff)
        default_cutoff = self._policy.cutoff("", self._as_of)
        if default_cutoff is not None and not self._budget.spent():
            self._deadletters(default_cutoff)
        self.report.complete = not self._budget.spent()
        self.report.seconds = round(time.monotonic() - started, 3)
        self._audit()
        return self.report

    def _lookups(self, latest: datetime) -> None:
        lookup = self._stores.lookup
        month_after = (latest.replace(day=1) + timedelta(days=32)).strftime("%Y%m")
        by_subscription: Counter[str] = Counter()
        for kind in LOOKUP_COLUMNS:
            if self._budget.spent():
                return
            expired: list[dict[str, Any]] = []
            for row in lookup.query_entities(
                "PartitionKey ge @low and PartitionKey lt @high",
                parameters={"low": f"{kind}|", "high": f"{kind}|{month_after}"},
                select=["PartitionKey", "RowKey", "CategoryValue"],
            ):
                moment = time_of_row_key(record_row_key(row["RowKey"]))
                if self._policy.expired(row.get("CategoryValue", ""), moment, self._as_of):
                    expired.append(row)
                    if kind == "s":
                        by_subscription[row["RowKey"].rsplit("|", 1)[0]] += 1
                if len(expired) >= 1000:
                    _delete_rows(lookup, expired, self._dry_run)
                    self.report.lookups_deleted += len(expired)
                    expired = []
                    if self._budget.spent():
                        return
            _delete_rows(lookup, expired, self._dry_run)
            self.report.lookups_deleted += len(expired)
        self.report.deleted_by_subscription = dict(by_subscription)

    def _records(self, latest: datetime) -> None:
        """Delete expired record rows; count every record kept, once, by its record row."""
        records = self._stores.records
        by_category: Counter[str] = Counter()
        expired: list[dict[str, Any]] = []
        oldest_kept: datetime | None = None
        day_after = (latest + timedelta(days=1)).strftime("%Y%m%d")
        for row in records.query_entities(
            "PartitionKey ge @low",
            parameters={"low": "0"},
            select=["PartitionKey", "RowKey", "CategoryValue", "BodyBlob"],
        ):
            moment = time_of_row_key(row["RowKey"])
            category = row.get("CategoryValue", "")
            if row["PartitionKey"] < day_after and self._policy.expired(
                category, moment, self._as_of
            ):
                if self._budget.spent():
                    break
                expired.append(row)
                by_category[category] += 1
                if len(expired) >= 1000:
                    self._delete_records(expired)
                    expired = []
            else:
                self.report.records_kept += 1
                if oldest_kept is None or moment < oldest_kept:
                    oldest_kept = moment
        self._delete_records(expired)
        self.report.deleted_by_category = dict(by_category)
        self.report.oldest_kept = oldest_kept.isoformat() if oldest_kept else None

    def _delete_records(self, rows: list[dict[str, Any]]) -> None:
        _delete_rows(self._stores.records, rows, self._dry_run)
        self.report.records_deleted += len(rows)
        for row in rows:
            if row.get("BodyBlob"):
                if not self._dry_run:
                    with contextlib.suppress(ResourceNotFoundError):
                        self._stores.oversize.delete_blob(row["BodyBlob"])
                self.report.oversize_blobs_deleted += 1

    def _count_kept_only(self) -> None:
        for row in self._stores.records.query_entities(
            "PartitionKey ge @low", parameters={"low": "0"}, select=["RowKey"]
        ):
            self.report.records_kept += 1
            moment = time_of_row_key(row["RowKey"])
            if self.report.oldest_kept is None or moment.isoformat() < self.report.oldest_kept:
                self.report.oldest_kept = moment.isoformat()

    def _archive_blobs(self, cutoff: datetime) -> None:
        archive = self._stores.archive
        if not archive.exists():
            return
        for blob in self._old_archive_blobs(archive, cutoff):
            if self._budget.spent():
                return
            if self._dry_run:
                self.report.blobs_deleted += 1
                continue
            try:
                archive.delete_blob(blob)
                self.report.blobs_deleted += 1
            except ResourceNotFoundError:
                pass
            except HttpResponseError as error:
                code = str(getattr(error, "error_code", "") or error.status_code)
                if getattr(
                    error, "error_code", ""
                ) in PROTECTED_BLOB_ERRORS or error.status_code in (403, 409, 412):
                    self.report.blobs_skipped.append({"blob": blob, "reason": code})
                    log.warning(
                        "archive blob kept: deletion refused", extra={"blob": blob, "reason": code}
                    )
                else:
                    raise

    def _old_archive_blobs(self, archive: ContainerClient, cutoff: datetime) -> Iterator[str]:
        subscriptions = [
            prefix.name
            for prefix in archive.walk_blobs(
                name_starts_with="resourceId=/SUBSCRIPTIONS/", delimiter="/"
            )
            if prefix.name.endswith("/")
        ]
        for subscription in subscriptions:
            for year in range(2015, cutoff.year + 1):
                for blob in archive.list_blobs(name_starts_with=f"{subscription}y={year}/"):
                    hour = BlobPath.parse(blob.name).hour
                    # The whole hour must be past the cutoff: its last event may be at :59:59.
                    if hour is not None and hour + timedelta(hours=1) <= cutoff:
                        yield blob.name

    def _cursors(self, cutoff: datetime) -> None:
        last_hour = cutoff - timedelta(hours=1)
        rows = list(
            self._stores.cursors.query_entities(
                "PartitionKey lt @high",
                parameters={"high": hour_key(last_hour) + "~"},
                select=["PartitionKey", "RowKey"],
            )
        )
        old = [row for row in rows if row["PartitionKey"] <= hour_key(last_hour)]
        _delete_rows(self._stores.cursors, old, self._dry_run)
        self.report.cursors_deleted += len(old)

    def _deadletters(self, cutoff: datetime) -> None:
        container = self._stores.deadletter
        for blob in container.list_blobs():
            if self._budget.spent():
                return
            if blob.last_modified < cutoff:
                if not self._dry_run:
                    try:
                        container.delete_blob(blob.name)
                    except ResourceNotFoundError:
                        continue
                self.report.deadletters_deleted += 1

    def _audit(self) -> None:
        """One row per run, newest first, in the runs table: the record of what went."""
        run_ticks = int(datetime.now(UTC).timestamp() * 1000)
        entity = {
            "PartitionKey": "retention",
            "RowKey": f"{10**15 - run_ticks:015d}",
            **{
                name: (orjson.dumps(value).decode() if isinstance(value, dict | list) else value)
                for name, value in self.report.as_dict().items()
                if value is not None
            },
        }
        self._stores.runs.upsert_entity(entity)


def policy_from(default_days: int, category_days: Mapping[str, int]) -> RetentionPolicy:
    return RetentionPolicy(default_days=default_days, category_days=dict(category_days))


def enforce_retention(
    stores: Stores,
    policy: RetentionPolicy,
    *,
    as_of: datetime | None = None,
    dry_run: bool = False,
    budget_seconds: float = 540,
    clock: Callable[[], float] = time.monotonic,
) -> RetentionReport:
    job = RetentionJob(
        stores,
        policy,
        as_of=(as_of or datetime.now(UTC)).astimezone(UTC),
        dry_run=dry_run,
        budget_seconds=budget_seconds,
        clock=clock,
    )
    return job.run()
