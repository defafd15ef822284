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

    def blob_cutoff(self, as_of: datetime) -> datetime | None:
        """Blobs mix categories: they go only past the longest limit (never, if one is 0)."""
        limits = (self.default_days, *self.category_days.values())
        return None if 0 in limits else as_of - timedelta(days=max(limits))

    def expired(self, category: str, moment: datetime, as_of: datetime) -> bool:
        cutoff = self.cutoff(category, as_of)
        return cutoff is not None and moment < cutoff

    def category_groups(self, as_of: datetime) -> list[CategoryGroup]:
        """Categories grouped by their cutoff: each override, then every other category."""
        overridden = tuple(self.category_days)
        groups = [
            CategoryGroup(as_of - timedelta(days=days), (category,), ())
            for category, days in self.category_days.items()
            if days
        ]
        if self.default_days:
            groups.append(CategoryGroup(as_of - timedelta(days=self.default_days), (), overridden))
        return groups


@dataclass(frozen=True, slots=True)
class CategoryGroup:
    """Rows whose category is one of `only` (or, when empty, none of `besides`) and their cutoff."""

    cutoff: datetime
    only: tuple[str, ...]
    besides: tuple[str, ...]

    def filter(self) -> tuple[str, dict[str, str]]:
        """The category condition (to follow another) and its bound parameters."""
        names = self.only or self.besides
        parameters = {f"category{number}": name for number, name in enumerate(names)}
        if self.only:
            either = " or ".join(f"CategoryValue eq @{name}" for name in parameters)
            # The SDK finds each @name between spaces: the parentheses stand apart.
            return f" and ( {either} )", parameters
        return "".join(f" and CategoryValue ne @{name}" for name in parameters), parameters


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


RowTime = Callable[[str], datetime]


def _lookup_time(row_key: str) -> datetime:
    return time_of_row_key(record_row_key(row_key))


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
        groups = self._policy.category_groups(self._as_of)
        self._lookups(groups)
        self._records(groups)
        self._count_kept()
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
            if row_time(row["RowKey"]) < group.cutoff:
                yield row

    def _lookups(self, groups: list[CategoryGroup]) -> None:
        lookup = self._stores.lookup
        by_subscription: Counter[str] = Counter()
        for group in groups:
            month_after = (group.cutoff.replace(day=1) + timedelta(days=32)).strftime("%Y%m")
            for kind in LOOKUP_COLUMNS:
                expired: list[dict[str, Any]] = []
                for row in self._expired_rows(
                    lookup, group, f"{kind}|", f"{kind}|{month_after}", _lookup_time
                ):
                    expired.append(row)
                    if kind == "s":
                        by_subscription[row["RowKey"].rsplit("|", 1)[0]] += 1
                    if len(expired) >= 1000:
                        self._delete_lookups(expired)
                        expired = []
                self._delete_lookups(expired)
        self.report.deleted_by_subscription = dict(by_subscription)

    def _delete_lookups(self, rows: list[dict[str, Any]]) -> None:
        _delete_rows(self._stores.lookup, rows, self._dry_run)
        self.report.lookups_deleted += len(rows)

    def _records(self, groups: list[CategoryGroup]) -> None:
        """Delete expired record rows, oldest day partition first, group by group."""
        by_category: Counter[str] = Counter()
        for group in groups:
            day_after = (group.cutoff + timedelta(days=1)).strftime("%Y%m%d")
            expired: list[dict[str, Any]] = []
            for row in self._expired_rows(
                self._stores.records, group, "0", day_after, time_of_row_key
            ):
                expired.append(row)
                by_category[row.get("CategoryValue", "")] += 1
                if len(expired) >= 1000:
                    self._delete_records(expired)
                    expired = []
            self._delete_records(expired)
        self.report.deleted_by_category = dict(by_category)

    def _delete_records(self, rows: list[dict[str, Any]]) -> None:
        _delete_rows(self._stores.records, rows, self._dry_run)
        self.report.records_deleted += len(rows)
        for row in rows:
            if row.get("BodyBlob"):
                if not self._dry_run:
                    with contextlib.suppress(ResourceNotFoundError):
                        self._stores.oversize.delete_blob(row["BodyBlob"])
                self.report.oversize_blobs_deleted += 1

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
            moment = time_of_row_key(row["RowKey"])
            if self._policy.expired(row.get("CategoryValue", ""), moment, self._as_of):
                continue
            self.report.records_kept += 1
            if oldest_kept is None or moment < oldest_kept:
                oldest_kept = moment
        self.report.oldest_kept = oldest_kept.isoformat() if oldest_kept else None

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
