"""Retention of the app's archive by whole units: a class's day of blobs, a month's table.

Blobs are named `class={class}/y=YYYY/m=MM/d=DD/...` and indexed in one table a month
(shared.core.archive_keys), so what is past its age goes in a few requests, never a record
at a time. Month by month, oldest first:

* A month wholly past the longest limit (its end at or before the longest limit's cutoff)
  goes whole: its table, with every key, manifest and posting row, is dropped in one request,
  then its blobs are deleted, 256 to a request. Its manifests are read first, only to count
  the records (their `N`) by class; no other row is read.
* In a month that stays, each class's day wholly past the class's limit (the day's end at or
  before the class's cutoff) goes in three steps: the day's manifest rows of those classes
  first (the commit points: from then on nothing of the day is visible, so nothing is ever
  seen half-deleted), then its claim rows of those classes (and its forward-mark rows once
  every class's day is gone: a mark lists events of any class), then its blobs.
  The day's posting rows stay until the month's table is dropped: they hold value hashes and
  blob ids only, and resolve to nothing (every read skips a blob without a manifest).
* A day that straddles a cutoff (the cutoff falls within it) is kept whole, so nothing younger
  than its limit ever goes. Its records go on the first run after the day is wholly past;
  limits are whole days and the timer runs daily, so they outlive their limit by under a day.
* A blob without a manifest (a write that crashed, or was fenced, before its commit) is
  swept, in any day, only when nothing can ever commit it (shared.services.orphans: fenced
  first when stale, so a writer resuming later fails its commit), with its posting rows:
  `orphans_swept`. No age alone ever deletes anything.

A blob that may not be deleted (PROTECTED_BLOB_ERRORS: immutability, legal hold, lease) is
skipped and reported, and its records are taken back from the counts: it has left the index
(its manifest went first) but stays in the archive, where engines still read it, and is tried
again on every run until it can go. A name outside the layout, or a manifest row whose keys
name no blob, is kept and reported; the run goes on. Records are counted from manifests, so
deletions by category are known (a class's category; `other` for the rest); which
subscriptions they held is not, without reading every blob, and is not reported.

`requests` counts the storage requests made here: listings of folders and blobs (5,000 items
a page, counted from the items returned), table queries (each page), row transactions, table
drops and batch deletes. Audit row writes are not counted.
"""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from azure.core.exceptions import ResourceNotFoundError

from shared.adapters.archive_store import MAX_DELETE_BATCH, ArchiveStore
from shared.adapters.index_tables import IndexTables, as_int, transactions
from shared.adapters.storage import Stores
from shared.core.archive_keys import (
    CLAIM,
    CLASS_CATEGORIES,
    CLASS_CODES,
    MANIFEST_ROW,
    MARK,
    OTHER_CLASS,
    STATE,
    BlobRef,
    slot_partitions,
)
from shared.core.retention_policy import (
    RetentionPolicy,
    day_end,
    moment_of_ticks,
    month_end,
    wholly_past,
)
from shared.services.archive_read import ArchiveReader, is_manifest
from shared.services.orphans import abandoned, drop_postings
from shared.services.retention_audit import AuditRow, add_counts

# Blob errors that mean "this blob may not be deleted": skip and report, never fail the run.
_T = TypeVar("_T")
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
OUTSIDE_LAYOUT = "name outside the archive layout"
STEP_BLOBS = 10 * MAX_DELETE_BATCH  # blobs per deletion step (one audit update before each)
STEP_ROWS = 10_000  # key rows per deletion step
LIST_PAGE = 5000  # items a blob listing returns per request
_KEY_ROWS = "PartitionKey ge @low and PartitionKey le @high"
_MANIFESTS = "PartitionKey ge @low and PartitionKey lt @high"
_ROW_KEYS = ["PartitionKey", "RowKey"]

Manifests = dict[BlobRef, tuple[int, int]]  # committed blob -> (records, first record's ticks)


class BlobNotDeleted(RuntimeError):
    """A blob deletion refused for a reason other than protection (the run stops, audited)."""


@dataclass(frozen=True, slots=True)
class Listed:
    """An archive blob as listed."""

    name: str
    ref: BlobRef
    last_modified: datetime


def _pages(items: int, per_page: int) -> int:
    return max(1, -(-items // per_page))


def _category(archive_class: str) -> str:
    return CLASS_CATEGORIES.get(archive_class, OTHER_CLASS)


def chunked(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    chunk: list[_T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class ArchiveRetention:
    """One run over the archive and its month tables (see the module's docstring)."""

    def __init__(
        self,
        stores: Stores,
        policy: RetentionPolicy,
        audit: AuditRow,
        *,
        as_of: datetime,
        spent: Callable[[], bool],
    ) -> None:
        self._tables = IndexTables(stores.table_service, stores.index_prefix)
        self._archive = ArchiveStore(stores.records, stores.archive_tier)
        self._reader = ArchiveReader(self._tables, self._archive)
        self._audit = audit
        self.report = audit.report
        self._dry_run = audit.report.dry_run
        self._spent = spent
        self._cutoffs = {name: policy.class_cutoff(name, as_of) for name in CLASS_CODES}
        self._longest = policy.longest_cutoff(as_of)
        self._as_of = as_of  # the run's time: also what judges a pending blob stale
        self._oldest_kept: int | None = None

    def run(self) -> None:
        folders = self._archive_months()
        tables = set(self._tables.months())
        self.report.requests += 1
        for month in sorted(set(folders) | tables):
            if self._spent():
                return
            if wholly_past(month_end(month), self._longest):
                self._drop_month(month, folders.get(month, []), has_table=month in tables)
            else:
                self._month(month, folders.get(month, []))
        if self._oldest_kept is not None:
            self.report.oldest_kept = moment_of_ticks(self._oldest_kept).isoformat()

    # --- what there is -----------------------------------------------------------------------

    def _folders(self, prefix: str) -> list[str]:
        names = self._archive.folders(prefix)
        self.report.requests += _pages(len(names), LIST_PAGE)
        return names

    def _archive_months(self) -> dict[str, list[str]]:
        """Each month (`YYYYMM`) with blobs in the archive, and the classes holding them."""
        months: dict[str, list[str]] = defaultdict(list)
        for top in self._folders(""):
            archive_class = top.removeprefix("class=").removesuffix("/")
            if not top.startswith("class=") or archive_class not in CLASS_CODES:
                self.report.skip(top, OUTSIDE_LAYOUT)
                continue
            for year in self._folders(top):
                digits = year[len(top) :].removeprefix("y=").removesuffix("/")
                if len(digits) != 4 or not digits.isdigit() or digits == "0000":  # noqa: PLR2004
                    self.report.skip(year, OUTSIDE_LAYOUT)
                    continue
                for month in self._folders(year):
                    number = month[len(year) :].removeprefix("m=").removesuffix("/")
                    if number not in {f"{n:02d}" for n in range(1, 13)}:
                        self.report.skip(month, OUTSIDE_LAYOUT)
                        continue
                    months[digits + number].append(archive_class)
        return months

    def _list(self, month: str, classes: Sequence[str]) -> list[Listed]:
        """The month's blobs of each class; a name outside the layout is kept and reported."""
        listed = []
        for archive_class in classes:
            blobs = list(self._archive.blobs(f"class={archive_class}/y={month[:4]}/m={month[4:]}/"))
            self.report.requests += _pages(len(blobs), LIST_PAGE)
            for blob in blobs:
                ref = BlobRef.of_name(blob.name)
                if ref is None or ref.name != blob.name:  # d=1 for d=01, an upper-case id...
                    self.report.skip(blob.name, OUTSIDE_LAYOUT)
                else:
                    listed.append(Listed(blob.name, ref, blob.last_modified))
        return listed

    def _query(
        self, month: str, query_filter: str, parameters: dict[str, str], select: list[str]
    ) -> Iterator[dict[str, Any]]:
        """Rows of a month's table, a page (one request) at a time; none if no table."""
        pages = (
            self._tables.table(month)
            .query_entities(query_filter, parameters=parameters, select=select)
            .by_page()
        )
        try:
            for page in pages:
                self.report.requests += 1
                yield from page
        except ResourceNotFoundError:
            self.report.requests += 1
            return

    def _manifests(self, month: str) -> Manifests:
        """The month's committed blobs; a row whose keys name no blob is counted unreadable."""
        found: Manifests = {}
        bounds = {"low": MANIFEST_ROW, "high": chr(ord(MANIFEST_ROW) + 1)}
        for row in self._query(month, _MANIFESTS, bounds, [*_ROW_KEYS, "N", "Lo", STATE]):
            if not is_manifest({k: v for k, v in row.items() if v is not None}):
                continue  # pending or fenced: not committed (swept with its blob, if any)
            try:
                ref = BlobRef.of_manifest(month, row["PartitionKey"], row["RowKey"])
                found[ref] = (as_int(row["N"]), as_int(row["Lo"]))
            except (KeyError, ValueError, TypeError):
                self.report.rows_unreadable += 1
        return found

    # --- deletion ------------------------------------------------------------------------------

    def _count_records(self, manifests: Mapping[BlobRef, tuple[int, int]], sign: int) -> None:
        by_category: Counter[str] = Counter()
        for ref, (count, _) in manifests.items():
            by_category[_category(ref.archive_class)] += sign * count
        self.report.records_deleted += sum(by_category.values())
        add_counts(self.report.deleted_by_category, by_category)

    def _drop_month(self, month: str, classes: Sequence[str], *, has_table: bool) -> None:
        """A month past every limit: its table dropped in one request, then its blobs."""
        manifests = self._manifests(month) if has_table else {}
        listed = self._list(month, classes)
        units = {(ref.archive_class, ref.day) for ref in manifests}
        units |= {(blob.ref.archive_class, blob.ref.day) for blob in listed}
        self._count_records(manifests, 1)
        self.report.days_deleted += len(units)
        self.report.tables_dropped += int(has_table)
        self._audit.before_step()
        if has_table and not self._dry_run:
            self.report.requests += 1
            with contextlib.suppress(ResourceNotFoundError):  # dropped by another run
                self._tables.drop(month)
        # With the table gone, no manifest row is left to commit against: every blob goes.
        self._delete_blobs(listed, manifests)

    def _month(self, month: str, classes: Sequence[str]) -> None:
        """A month that stays: its expired days go, its orphans are swept, the rest counted."""
        manifests = self._manifests(month)
        listed = self._list(month, classes)
        committed: dict[date, Manifests] = defaultdict(dict)
        for ref, value in manifests.items():
            committed[ref.day][ref] = value
        blobs: dict[date, list[Listed]] = defaultdict(list)
        for blob in listed:
            blobs[blob.ref.day].append(blob)
        gone: set[BlobRef] = set()
        for day in sorted(set(committed) | set(blobs)):
            end = day_end(day)
            due = {name for name, cutoff in self._cutoffs.items() if wholly_past(end, cutoff)}
            if not due:
                break  # later days end later: none of them is due either
            if self._spent():
                return
            day_manifests = {r: v for r, v in committed[day].items() if r.archive_class in due}
            day_blobs = [blob for blob in blobs[day] if blob.ref.archive_class in due]
            self._delete_day(month, day, due, day_manifests, day_blobs)
            gone.update(day_manifests)
        staying = [
            blob
            for blob in listed
            if blob.ref not in manifests
            and not wholly_past(day_end(blob.ref.day), self._cutoffs[blob.ref.archive_class])
        ]
        self._sweep(staying)
        self._count_kept(ref_value for ref_value in manifests.items() if ref_value[0] not in gone)

    def _delete_day(
        self, month: str, day: date, due: set[str], manifests: Manifests, blobs: Sequence[Listed]
    ) -> None:
        """A day's due classes: manifests, key rows, then blobs (left, they bring runs back)."""
        orphans = [blob for blob in blobs if blob.ref not in manifests]
        self._sweep(orphans)
        blobs = [blob for blob in blobs if blob.ref in manifests]
        classes = {ref.archive_class for ref in manifests} | {b.ref.archive_class for b in blobs}
        if not classes and not orphans:
            return  # gone on an earlier run (a class of the day that stays brought it here)
        self._count_records(manifests, 1)
        self.report.days_deleted += len(classes)
        if manifests:
            keys = [dict(zip(_ROW_KEYS, ref.manifest_keys, strict=True)) for ref in manifests]
            self._audit.before_step()
            if not self._dry_run:
                self._tables.delete(month, keys)
                self.report.requests += len(transactions(keys))
        if not self._spent():
            self._delete_key_rows(month, day, due)
        self._delete_blobs(blobs, manifests)

    def _key_rows(self, month: str, day: date, due: set[str]) -> Iterator[dict[str, Any]]:
        """A day's claim rows of the due classes, and its mark rows once every class is due
        (a mark lists events of any class); other rows (lane registries too) stay till the drop."""
        slots = slot_partitions(day)
        codes = {CLASS_CODES[name] for name in due}
        every_class = len(due) == len(CLASS_CODES)
        bounds = {"low": slots[0], "high": slots[-1]}
        for row in self._query(month, _KEY_ROWS, bounds, [*_ROW_KEYS, "C"]):
            kind = str(row["RowKey"])[:1]
            if (kind == CLAIM and row.get("C") in codes) or (kind == MARK and every_class):
                yield {"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"]}

    def _delete_key_rows(self, month: str, day: date, due: set[str]) -> None:
        """Key rows of a day in a month that stays: one query over the day's slots; rows
        deleted a transaction per slot (of any class)."""
        for step in chunked(self._key_rows(month, day, due), STEP_ROWS):
            self.report.key_rows_deleted += len(step)
            self._audit.before_step()
            if not self._dry_run:
                self._tables.delete(month, step)
                self.report.requests += len(transactions(step))
            if self._spent():
                return

    def _delete_blobs(self, doomed: Sequence[Listed], manifests: Manifests) -> None:
        """Delete blobs a step at a time, each step counted and audited first: committed ones
        (in `manifests`), and uncommitted ones that nothing can commit any more."""
        for start in range(0, len(doomed), STEP_BLOBS):
            if self._spent():
                return
            step = doomed[start : start + STEP_BLOBS]
            committed = sum(1 for blob in step if blob.ref in manifests)
            self.report.archive_blobs_deleted += committed
            self.report.orphans_swept += len(step) - committed
            self._audit.before_step()
            if not self._dry_run:
                refused = self._archive.delete([blob.name for blob in step])
                self.report.requests += _pages(len(step), MAX_DELETE_BATCH)
                self._take_back(step, manifests, refused)

    def _sweep(self, uncommitted: Sequence[Listed]) -> None:
        """Delete the uncommitted blobs that nothing can commit any more (fencing the stale
        pending ones first), each with its posting rows (shared.services.orphans)."""
        if not uncommitted:
            return
        refs = [blob.ref for blob in uncommitted]
        dead = set(abandoned(self._tables, refs, self._as_of, dry_run=self._dry_run))
        self.report.requests += len(uncommitted)
        doomed = [blob for blob in uncommitted if blob.ref in dead]
        if not self._dry_run:
            for blob in doomed:
                self.report.requests += drop_postings(self._tables, self._reader, blob.ref)
        self._delete_blobs(doomed, {})

    def _take_back(
        self, step: Sequence[Listed], manifests: Manifests, refused: Mapping[str, str]
    ) -> None:
        """The counts of blobs that stayed taken back; protected ones reported, others raised."""
        unexpected = []
        for blob in step:
            code = refused.get(blob.name)
            if code is None:
                continue
            if blob.ref in manifests:
                self.report.archive_blobs_deleted -= 1
                self._count_records({blob.ref: manifests[blob.ref]}, -1)
            else:
                self.report.orphans_swept -= 1
            if code in PROTECTED_BLOB_ERRORS:
                self.report.skip(blob.name, code)
            else:
                unexpected.append(f"{blob.name}: {code}")
        if unexpected:
            raise BlobNotDeleted(f"{len(unexpected)} blobs not deleted: {unexpected[:5]}")

    def _count_kept(self, manifests: Iterable[tuple[BlobRef, tuple[int, int]]]) -> None:
        for _, (count, first_ticks) in manifests:
            self.report.records_kept += count
            if self._oldest_kept is None or first_ticks < self._oldest_kept:
                self._oldest_kept = first_ticks
