"""Retention: delete what is past its configured age, and nothing younger.

Ages are judged from the event's own time (TimeGenerated, encoded in every index RowKey) and,
for archived PT1H.json blobs, from the hour in the blob's path, never from Last-Modified.
A record goes when it is strictly older than its category's limit. A blob holds every
category, so it goes only when it is older than the longest limit; so does a dead letter (it
may be the only copy of an event of any category). Index rows go oldest partition first,
lookups before the record row (the record row is the commit point, as on write), so a run
stopped by its time budget leaves nothing half-visible that the next run does not finish.

One item that cannot be judged (an archive name outside the PT1H.json layout, an unreadable
RowKey) is kept and reported; it never stops the run for the others. A cursor goes only once
its blob is gone, so a blob that stays (leased, protected, not reached) is never indexed again.

Each run has one audit row, written when it starts (`complete: false`) and rewritten before
every deletion step with counts that already include that step: a run killed at any point
leaves a row that is true or over-reports, never one that under-reports. A step that raises
leaves `complete: false` and its `error` on the row, and the error goes on to the caller.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import orjson
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode
from azure.storage.blob import ContainerClient

from shared.adapters.index_store import (
    LOOKUP_COLUMNS,
    MAX_BATCH,
    day_partition,
    month_bucket,
    record_row_key,
    time_of_row_key,
)
from shared.adapters.storage import Stores
from shared.services.blob_indexing import BlobPath, hour_key

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
MAX_AUDIT_TEXT = 30_000  # a string property holds 32K characters
MAX_ERROR_TEXT = 2_000
# An oversize body whose record row is missing is an orphan once nobody can be writing it
# (the writer uploads the body, then creates the row, at once).
ORPHAN_AFTER = timedelta(hours=1)
_YEAR_FOLDER = re.compile(r"/y=(\d{4})/$")
_BODY_NAME = re.compile(r"(\d{4})/(\d{2})/(\d{2})/(\d{19}_[^/]+)\.json")
_T = TypeVar("_T")


def days_before(moment: datetime, days: int) -> datetime | None:
    """`days` days before `moment`; None when that is out of range (nothing is older)."""
    try:
        return moment - timedelta(days=days)
    except OverflowError:
        return None


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Days to keep, by default and per category; 0 keeps forever."""

    default_days: int
    category_days: Mapping[str, int] = field(default_factory=dict)

    def days_for(self, category: str) -> int:
        return self.category_days.get(category, self.default_days)

    def cutoff(self, category: str, as_of: datetime) -> datetime | None:
        """What is strictly older goes; None: nothing goes (kept forever, or before year 1)."""
        days = self.days_for(category)
        return None if days == 0 else days_before(as_of, days)

    def longest_cutoff(self, as_of: datetime) -> datetime | None:
        """For what may hold any category (archive blobs, dead letters): past every limit."""
        limits = (self.default_days, *self.category_days.values())
        return None if 0 in limits else days_before(as_of, max(limits))

    def blob_cutoff(self, as_of: datetime) -> datetime | None:
        """Blobs mix categories: they go only past the longest limit (never, if one is 0)."""
        return self.longest_cutoff(as_of)

    def expired(self, category: str, moment: datetime, as_of: datetime) -> bool:
        cutoff = self.cutoff(category, as_of)
        return cutoff is not None and moment < cutoff

    def category_groups(self, as_of: datetime) -> list[CategoryGroup]:
        """Categories grouped by their cutoff: each override, then every other category."""
        overridden = tuple(self.category_days)
        groups = []
        for category, days in self.category_days.items():
            cutoff = days_before(as_of, days) if days else None
            if cutoff is not None:
                groups.append(CategoryGroup(cutoff, (category,), ()))
        default = days_before(as_of, self.default_days) if self.default_days else None
        if default is not None:
            groups.append(CategoryGroup(default, (), overridden))
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
    rows_unreadable: int = 0  # record rows whose RowKey gives no time: kept, counted as kept
    lookups_deleted: int = 0
    oversize_blobs_deleted: int = 0
    blobs_deleted: int = 0
    blobs_skipped: list[dict[str, str]] = field(default_factory=list)
    cursors_deleted: int = 0
    deadletters_deleted: int = 0
    deleted_by_category: dict[str, int] = field(default_factory=dict)
    deleted_by_subscription: dict[str, int] = field(default_factory=dict)
    oldest_kept: str | None = None
    complete: bool = False
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


RowTime = Callable[[str], datetime]


def _lookup_time(row_key: str) -> datetime:
    return time_of_row_key(record_row_key(row_key))


def _time_or_none(row_time: RowTime, row_key: str) -> datetime | None:
    """The time a RowKey gives; None for one that gives none (written by something else)."""
    try:
        return row_time(row_key)
    except (ValueError, OverflowError):
        return None


def _day_after(moment: datetime) -> str:
    """The day partition after the moment's day: an exclusive upper bound, to 9999-12-31."""
    day = moment.date()
    return "99991232" if day == date.max else day_partition(day + timedelta(days=1))


def _month_after(moment: datetime) -> str:
    """The month bucket after the moment's month: an exclusive upper bound, to 9999-12."""
    if moment.month < 12:
        return month_bucket(date(moment.year, moment.month + 1, 1))
    return "999913" if moment.year == date.max.year else month_bucket(date(moment.year + 1, 1, 1))


def _utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # an offset that takes it past 0001-01-01 or 9999-12-31 in UTC
        return (
            datetime.min.replace(tzinfo=UTC)
            if moment.year == 1
            else datetime.max.replace(tzinfo=UTC)
        )


def _chunked(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    chunk: list[_T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _add_counts(totals: dict[str, int], counts: Counter[str]) -> None:
    for name, count in counts.items():
        totals[name] = totals.get(name, 0) + count


def _audit_json(value: dict[str, Any] | list[Any]) -> tuple[str, int | None]:
    """JSON that fits a string property: when the whole would not, the first entries and
    the number of all of them."""
    text = orjson.dumps(value).decode()
    if len(text) <= MAX_AUDIT_TEXT:
        return text, None
    items = list(value.items()) if isinstance(value, dict) else list(value)
    keep = len(items)
    while keep and len(text) > MAX_AUDIT_TEXT:
        keep //= 2
        part = dict(items[:keep]) if isinstance(value, dict) else items[:keep]
        text = orjson.dumps(part).decode()
    return text, len(items)


def _run_key() -> str:
    """Newest run first; a random tail keeps two runs started in one millisecond apart."""
    millis = int(datetime.now(UTC).timestamp() * 1000)
    return f"{10**15 - millis:015d}-{uuid.uuid4().hex[:8]}"


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
        self._run_key = _run_key()
        self._deleted_blobs: set[str] = set()  # archive blobs this run deleted (or would)
        self.report = RetentionReport(as_of=as_of.isoformat(), dry_run=dry_run)

    def run(self) -> RetentionReport:
        """Every step, audited: the row first, before each deletion step, and at the end."""
        started = time.monotonic()
        self._write_audit()
        try:
            self._steps()
        except BaseException as error:
            self.report.error = f"{type(error).__name__}: {error}"[:MAX_ERROR_TEXT]
            self._finish(started, complete=False)
            try:
                self._write_audit()
            except Exception:
                # The step's error is the one to raise; the row keeps the last progress.
                log.exception("retention audit row not updated after a failed step")
            raise
        self._finish(started, complete=not self._budget.spent())
        self._write_audit()
        return self.report

    def _finish(self, started: float, *, complete: bool) -> None:
        self.report.complete = complete
        self.report.seconds = round(time.monotonic() - started, 3)

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

    def _progress(self) -> None:
        """Before a deletion step: the row, with counts that already include the step."""
        if not self._dry_run:
            self._write_audit()

    def _count(self, counter: str, amount: int) -> None:
        setattr(self.report, counter, getattr(self.report, counter) + amount)

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
            moment = _time_or_none(row_time, row["RowKey"])
            if moment is not None and moment < group.cutoff:
                yield row

    def _lookups(self, groups: list[CategoryGroup]) -> None:
        for group in groups:
            month_after = _month_after(group.cutoff)
            for kind in LOOKUP_COLUMNS:
                rows = self._expired_rows(
                    self._stores.lookup, group, f"{kind}|", f"{kind}|{month_after}", _lookup_time
                )
                for step in _chunked(rows, STEP_ROWS):
                    self._delete_lookups(step, by_subscription=kind == "s")

    def _delete_lookups(self, rows: list[dict[str, Any]], *, by_subscription: bool) -> None:
        self.report.lookups_deleted += len(rows)
        if by_subscription:
            subscriptions = Counter(row["RowKey"].rsplit("|", 1)[0] for row in rows)
            _add_counts(self.report.deleted_by_subscription, subscriptions)
        self._progress()
        _delete_rows(self._stores.lookup, rows, self._dry_run)

    def _records(self, groups: list[CategoryGroup]) -> None:
        """Delete expired record rows, oldest day partition first, group by group."""
        for group in groups:
            rows = self._expired_rows(
                self._stores.records, group, "0", _day_after(group.cutoff), time_of_row_key
            )
            for step in _chunked(rows, STEP_ROWS):
                self._delete_records(step)

    def _delete_records(self, rows: list[dict[str, Any]]) -> None:
        bodies = [row["BodyBlob"] for row in rows if row.get("BodyBlob")]
        self.report.records_deleted += len(rows)
        self.report.oversize_blobs_deleted += len(bodies)
        categories = Counter(str(row.get("CategoryValue", "")) for row in rows)
        _add_counts(self.report.deleted_by_category, categories)
        self._progress()
        _delete_rows(self._stores.records, rows, self._dry_run)
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
            moment = _time_or_none(time_of_row_key, match[4])
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
            moment = _time_or_none(time_of_row_key, row["RowKey"])
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
        """Delete blobs a step at a time; each step counted, and the row written, first.

        `delete` says whether the blob went; the counts of those that did not are taken back.
        """
        for step in _chunked(names, STEP_BLOBS):
            self._count(counter, len(step))
            self._progress()
            for number, name in enumerate(step):
                if self._budget.spent():
                    self._count(counter, number - len(step))
                    return
                if not delete(name):
                    self._count(counter, -1)

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
            name_starts_with="resourceId=/SUBSCRIPTIONS/", delimiter="/"
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
            self._progress()
            _delete_rows(self._stores.cursors, step, self._dry_run)

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

    def _write_audit(self) -> None:
        """The run's one row in the runs table (newest run first), replaced as the run goes."""
        entity: dict[str, Any] = {"PartitionKey": "retention", "RowKey": self._run_key}
        for name, value in self.report.as_dict().items():
            if isinstance(value, dict | list):
                entity[name], total = _audit_json(value)
                if total is not None:
                    entity[f"{name}_total"] = total
            elif value is not None:
                entity[name] = value
        self._stores.runs.upsert_entity(entity, mode=UpdateMode.REPLACE)


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
        as_of=_utc(as_of or datetime.now(UTC)),
        dry_run=dry_run,
        budget_seconds=budget_seconds,
        clock=clock,
    )
    return job.run()
