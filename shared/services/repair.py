"""`verify --repair`: restore the archive's invariants where `verify` names a breach, losing no
event. A dry run (the default) says what it would do; `apply` does it.

What each problem gets (a blob is *re-archived* by writing its records through the archive
writer, which claims and commits those that no committed blob holds, in a blob of its own,
and counts the rest as duplicates; only then is the old one removed):

* `orphaned` (uploaded, never committed): its manifest row fenced if still pending (If-Match:
  its writer can never commit it afterwards), its records re-archived, its postings (found
  from its bytes) and the blob removed;
* `duplicated` (an event in several committed blobs, as older versions could leave): the
  first blob keeps it; each other blob is un-committed (its manifest replaced by a fenced
  row, If-Match) and then handled as an orphan, so its other events stay archived once;
* `unindexed` (an event of a committed blob that no claim names): the blob is re-archived
  the same way, so its events get claims;
* `dangling` (posting rows of a blob that is neither committed nor stored): the rows go;
* `missing` (committed, and the blob is gone): its events are lost from the archive; the
  manifest is fenced and its postings dropped, so that re-delivering the source (a backfill)
  archives them again, which the old manifest would have counted as duplicates;
* `altered` and `unarchived` are not repaired here: the bytes or the input are what is
  wrong, and the note says what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.adapters.archive_store import ArchiveStore
from shared.adapters.index_tables import IndexTables
from shared.core.archive_keys import POSTING_LEADS, BlobRef, posting_row
from shared.core.keys import LOOKUP_COLUMNS
from shared.core.retention_policy import RetentionPolicy
from shared.services.archive_read import ArchiveReader
from shared.services.archive_write import ArchiveWriter, ClaimedElsewhere, postings
from shared.services.compaction import CompactionReport, DayCompaction
from shared.services.instances import Instances, Stage, fenced_row
from shared.services.run_store import RunStore
from shared.services.verify_report import GONE_WHOLE, MISSING_UNCLAIMED, VerifyReport

_POSTINGS_OF_BLOB = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"
# A write makes its blob's pending manifest row before it uploads, and claims its events
# naming the blob; retention deletes a class-day's manifests first. An orphan with no row is
# archived again only when claims name it and its day is within retention (found from
# outside: repair archived a forged blob's records, and brought back an expired day's that a
# stopped retention run had left).
_NO_ROW = (
    "no manifest row and no claim naming it within retention: the app did not write it, or "
    "its day's retention stopped before its blobs went (the next retention run deletes "
    "them): not archived; look at what it holds if its day is within retention"
)
# Losses nothing but the problem itself names: repairing them would hide them.
_KEPT_MISSING = (
    "its records are lost, and no claim names them: fencing it would leave no trace of the "
    "loss, so it stays `missing`. Restore the blob from a backup (soft delete, versioning); "
    "re-delivering the source archives its events again, and this stays the record of the loss"
)
_KEPT_GONE = (
    "its class-day is gone whole within its retention: its records are lost, and these rows "
    "are all that names them. Restore the class-day's blobs from a backup, or re-deliver the "
    "source; once the class-day holds committed blobs again, the rows are named as naming an "
    "uncommitted blob, and the repair drops them"
)
NOT_REPAIRED = {
    "altered": "its bytes differ from its manifest: restore the blob from a backup or a "
    "storage snapshot (soft delete, versioning), then verify again",
    "unarchived": "claimed by a write that never committed: re-deliver the source (backfill "
    "the PT1H.json blobs, replay dead letters) to archive these events",
    "stray": "not written by the app: look at what it holds, then delete it or move it out of "
    "the records container (engines reading **/*.jsonl.gz count its lines as records)",
}


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # the problem's kind
    name: str  # what is acted on
    does: str  # what the repair does (or would do)

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "does": self.does}


@dataclass(slots=True)
class RepairReport:
    applied: bool
    actions: list[Action] = field(default_factory=list)
    not_repaired: list[Action] = field(default_factory=list)
    rearchived: int = 0  # records written again in blobs of their own
    already_archived: int = 0  # records of removed blobs that another committed blob holds
    failed: list[str] = field(default_factory=list)  # actions that did not go through

    def as_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "actions": [action.as_dict() for action in self.actions],
            "not_repaired": [action.as_dict() for action in self.not_repaired],
            "rearchived": self.rearchived,
            "already_archived": self.already_archived,
            "failed": self.failed,
        }


def repair(  # noqa: PLR0913 - the stores, the report to act on, and how, by name
    tables: IndexTables,
    archive: ArchiveStore,
    writer: ArchiveWriter,
    report: VerifyReport,
    *,
    apply: bool,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    policy: RetentionPolicy | None = None,
) -> RepairReport:
    """Plan (and with `apply`, carry out) the repairs of what `report` names; `policy`, the
    configured retention, keeps an expired day's leftovers from being archived again."""
    repairer = _Repairer(tables, archive, writer, clock, RepairReport(apply), policy=policy)
    repairer.run(report)
    return repairer.report


class _Repairer:
    def __init__(  # noqa: PLR0913 - the three stores, the clock, the report, the policy
        self,
        tables: IndexTables,
        archive: ArchiveStore,
        writer: ArchiveWriter,
        clock: Callable[[], datetime],
        report: RepairReport,
        *,
        policy: RetentionPolicy | None,
    ) -> None:
        self._policy = policy
        self._tables = tables
        self._archive = archive
        self._reader = ArchiveReader(tables, archive)
        self._writer = writer
        self._instances = Instances(tables, clock)
        self._clock = clock
        self.report = report

    def run(self, verified: VerifyReport) -> None:
        rearchive: dict[BlobRef, str] = {}
        claimed = {name for p in verified.problems["unarchived"] for name in p.blobs}
        for kind, ref in self._blobs(verified, "orphaned"):
            if self._instances.read(ref).etag is None and not self._lost_row(ref, claimed):
                self.report.not_repaired.append(Action(kind, ref.name, _NO_ROW))
                continue
            rearchive.setdefault(ref, kind)
        for problem in verified.problems["duplicated"]:
            for named in _refs(problem.blobs[1:]):  # the first blob keeps the event
                rearchive.setdefault(named, "duplicated")
        for problem in verified.problems["unindexed"]:
            for named in _refs(problem.blobs):
                rearchive.setdefault(named, "unindexed")
        for ref, kind in sorted(rearchive.items()):
            self._rearchive(kind, ref)
        self._losses(verified, set(rearchive))
        for kind, why in NOT_REPAIRED.items():
            for problem in verified.problems[kind]:
                self.report.not_repaired.append(Action(kind, problem.name, why))

    def _losses(self, verified: VerifyReport, rearchived: set[BlobRef]) -> None:
        """`missing` and `dangling`: the index made to say what the archive lost, except where
        nothing else names the loss (then the problem stays, and the note says why)."""
        for problem in verified.problems["missing"]:
            if problem.detail == MISSING_UNCLAIMED:
                self.report.not_repaired.append(Action("missing", problem.name, _KEPT_MISSING))
            elif (ref := BlobRef.of_name(problem.name)) is not None:
                self._missing(ref)
        dangling: set[BlobRef] = set()
        for problem in verified.problems["dangling"]:
            if problem.detail == GONE_WHOLE:
                self.report.not_repaired.append(Action("dangling", problem.name, _KEPT_GONE))
            else:
                dangling.update(_refs(problem.blobs))
        for ref in sorted(dangling - rearchived):
            self._dangling(ref)

    def _lost_row(self, ref: BlobRef, claimed: set[str]) -> bool:
        """Whether a blob with no manifest row lost it (the index damaged): claims name it, so
        the app wrote it, and its class-day is within retention (a retention run that stopped
        between a day's manifests and its claims leaves the same signs on an expired day)."""
        if ref.name not in claimed:
            return False
        if self._policy is None:
            return True
        return not self._policy.class_day_past(ref.archive_class, ref.day, self._clock())

    @staticmethod
    def _blobs(verified: VerifyReport, kind: str) -> Iterator[tuple[str, BlobRef]]:
        for problem in verified.problems[kind]:
            ref = BlobRef.of_name(problem.name)
            if ref is not None:
                yield kind, ref

    def _do(self, action: Action, work: Callable[[], None]) -> None:
        self.report.actions.append(action)
        if not self.report.applied:
            return
        try:
            work()
        except ClaimedElsewhere as error:
            self.report.failed.append(f"{action.name}: {error}")

    # --- the repairs ---------------------------------------------------------------------------

    def _rearchive(self, kind: str, ref: BlobRef) -> None:
        does = (
            "un-commit it, re-archive its records that no other committed blob holds, then "
            "remove its postings and the blob"
            if kind != "orphaned"
            else "fence it, re-archive its records that no committed blob holds, then remove "
            "its postings and the blob"
        )
        self._do(Action(kind, ref.name, does), lambda: self._rearchive_now(ref))

    def _rearchive_now(self, ref: BlobRef) -> None:
        if not self._uncommit(ref, repairing=True):
            self.report.failed.append(f"{ref.name}: its manifest row changed meanwhile: run again")
            return
        records = self._reader.blob_records(ref)
        if not isinstance(records, list):
            self.report.failed.append(f"{ref.name}: its bytes cannot be read: kept")
            return
        written = self._writer.write(records)  # raises ClaimedElsewhere: nothing removed
        self.report.rearchived += len(written.indexed)
        self.report.already_archived += len(written.existing)
        self._tables.delete(ref.month, postings(ref, records))
        self._remerge(ref)
        self._archive.delete([ref.name])

    def _remerge(self, ref: BlobRef) -> None:
        """A merged day's run written again without the blob (a merge keeps only committed
        blobs' entries), when the day has one."""
        if RunStore(self._tables, ref.month).state(ref.day).runs:
            DayCompaction(self._tables, ref.month, ref.day, CompactionReport()).run(rewrite=True)

    def _uncommit(self, ref: BlobRef, *, repairing: bool = False) -> bool:
        """Make the blob's manifest row fenced (If-Match): nothing holds its events after.
        `repairing`: its records are re-archived next, and until then it is their only copy
        (REPAIRING: retention's sweep leaves it; a repair stopped before the end is taken
        up by the next, `verify` naming the blob `orphaned`)."""
        instance = self._instances.read(ref)
        if instance.stage is Stage.DEAD:
            return True
        if instance.etag is None:
            return False
        fenced = fenced_row(ref, instance.plan, repairing=repairing)
        if self._tables.replace_if(ref.month, fenced, instance.etag) is not None:
            return True
        return self._instances.read(ref).stage is Stage.DEAD

    def _missing(self, ref: BlobRef) -> None:
        does = (
            "its records are lost from the archive: fence its manifest and drop its postings, "
            "so that re-delivering the source (backfill) archives them again"
        )
        self._do(Action("missing", ref.name, does), lambda: self._drop_index_of(ref))

    def _drop_index_of(self, ref: BlobRef) -> None:
        if self._uncommit(ref):
            self._drop_postings_by_range(ref)
        else:
            self.report.failed.append(f"{ref.name}: its manifest row changed meanwhile")

    def _dangling(self, ref: BlobRef) -> None:
        does = "drop the posting rows that name this blob (neither committed nor stored)"
        self._do(Action("dangling", ref.name, does), lambda: self._drop_postings_by_range(ref))

    def _drop_postings_by_range(self, ref: BlobRef) -> None:
        """Every posting row naming the blob, found by its RowKey ranges (one read a kind and
        bucket: repairs are rare), deleted."""
        if self._reader.manifest(ref) is not None:
            return  # committed meanwhile: its postings are its own
        ranges = [
            (kind, posting_row(bucket, ref, 0)[:-1])
            for kind in LOOKUP_COLUMNS
            for bucket in POSTING_LEADS
        ]
        rows = [
            {"PartitionKey": kind, "RowKey": row["RowKey"]}
            for kind, low in ranges
            for row in self._tables.query(
                ref.month,
                _POSTINGS_OF_BLOB,
                {"pk": kind, "low": low, "high": low + "~"},
                select=["RowKey"],
            )
        ]
        if rows:
            self._tables.delete(ref.month, rows)
        self._remerge(ref)


def _refs(names: tuple[str, ...]) -> list[BlobRef]:
    return [ref for ref in map(BlobRef.of_name, names) if ref is not None]
