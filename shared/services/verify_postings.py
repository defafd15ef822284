"""`verify`'s state of the month it checks, and the checks of the month's postings and runs.

Split from shared.services.verify (whose docstring says what each check proves) to keep it
within its size: `_Verifier` sets every attribute declared here, month by month.
"""

from __future__ import annotations

from datetime import date, datetime

from shared.adapters.archive_store import StoredBlob
from shared.adapters.index_tables import IndexTables
from shared.core.archive_keys import BlobRef, posting_ref
from shared.core.keys import LOOKUP_COLUMNS
from shared.core.retention_policy import RetentionPolicy
from shared.services.archive_read import ArchiveReader, Manifest
from shared.services.index_kinds import kinds_of
from shared.services.run_store import RunStore
from shared.services.verify_report import GONE_WHOLE, VerifyReport

_POSTINGS = "PartitionKey eq @pk"
EXPIRING = "; its class-day is past retention: the next retention run deletes it"


class MonthChecks:
    """A month's committed, uncommitted and listed blobs, and the checks of its postings."""

    report: VerifyReport
    _tables: IndexTables
    _reader: ArchiveReader
    _now: datetime
    _old: datetime  # what was written before this has no live writer
    _policy: RetentionPolicy | None
    _manifests: dict[BlobRef, Manifest]
    _uncommitted: dict[BlobRef, tuple[bool, datetime | None]]  # fenced?, written
    _stored: dict[BlobRef, StoredBlob]
    _unreadable: set[BlobRef]  # committed blobs missing or altered: not judged again
    _gone: set[BlobRef]  # committed when listed, deleted since (retention)
    _kinds: dict[BlobRef, frozenset[str]]  # posting kinds of intact blobs
    retention_ran: datetime | None  # the latest as_of a deleting retention run had

    def _fenced(self, ref: BlobRef) -> bool:
        state = self._uncommitted.get(ref)
        return state is not None and state[0]

    def _in_flight(self, ref: BlobRef) -> bool:
        """A pending manifest row young enough that its writer may still commit."""
        state = self._uncommitted.get(ref)
        return state is not None and not state[0] and (state[1] is None or state[1] >= self._old)

    def _postings(self, month: str, days: list[date]) -> None:
        manifests, stored = self._manifests, self._stored
        kinds = list(LOOKUP_COLUMNS)  # a posting partition is its kind
        found = self._tables.parallel(lambda kind: self._posting_refs(month, kind), kinds)
        fresh = dict(zip(kinds, found, strict=True))
        # Compacted runs (shared.services.compaction): held to the manifests the same way.
        runs = RunStore(self._tables, month)
        day_runs = dict(zip(days, self._tables.parallel(runs.day_refs, days), strict=True))
        for day, day_refs in day_runs.items():
            found.append(day_refs.named)
            self._broken_runs(day, day_refs.broken)
        self._unposted(month, fresh, {day: refs.by_kind for day, refs in day_runs.items()})
        named: dict[BlobRef, str] = {}
        for refs in found:
            for ref, row in refs.items():
                named.setdefault(ref, row)
        committed_days = {(ref.archive_class, ref.day) for ref in manifests}
        for ref, row in sorted(named.items()):
            if ref in manifests or ref.day not in days:
                continue
            blob = stored.get(ref)
            if blob is None and (ref.archive_class, ref.day) not in committed_days:
                if self._past_retention(ref):
                    continue  # retention took the class-day: postings stay till the month goes
                self.report.add("dangling", f"{month}/{row}", GONE_WHOLE, (ref.name,))
                continue
            if (
                self._reader.manifest(ref) is not None
                or self._in_flight(ref)
                or (blob is not None and blob.last_modified >= self._old)
            ):
                self.report.pending += 1
            elif not self._expiring(ref):  # else its blob is `expiring`, the row stays
                detail = "posting names an uncommitted blob"
                self.report.add("dangling", f"{month}/{row}", detail, (ref.name,))

    def _unposted(
        self,
        month: str,
        fresh: dict[str, dict[BlobRef, str]],
        in_runs: dict[date, dict[str, set[BlobRef]]],
    ) -> None:
        """Each intact committed blob of the month, for each kind its records have a value of
        (and the month posts): a fresh row or a run names it, else its records are not
        found by that filter (`unindexed`; the repair re-archives the blob, posting anew).
        Fresh rows are read before runs, and a merge commits its run before it deletes
        them: a blob is named by one or the other (its day's), whenever compaction runs."""
        posted = kinds_of(self._tables).of(month)
        for ref, kinds in sorted(self._kinds.items()):
            if ref in self._unreadable or ref in self._gone:
                continue
            of_day = in_runs.get(ref.day, {})
            for kind in sorted(kinds & posted):
                if ref not in fresh[kind] and ref not in of_day.get(kind, ()):
                    detail = f"no posting row of kind {kind!r} names the blob: not found by it"
                    self.report.add(
                        "unindexed", f"{kind} postings of {ref.name}", detail, (ref.name,)
                    )

    def _past_retention(self, ref: BlobRef) -> bool:
        """Whether retention, as configured, deletes the blob's class-day by now (without a
        policy to judge by: assumed, for a class-day gone whole)."""
        if self._policy is None:
            return True
        return self._policy.class_day_past(ref.archive_class, ref.day, self._now)

    def _expiring(self, ref: BlobRef) -> bool:
        """Whether a retention run has put the blob's class-day past the configured retention:
        what a run stopped between its steps left of it goes on the next (known only with a
        policy and a run; never when retention has not run, or only dry)."""
        ran = self.retention_ran
        return (
            self._policy is not None
            and ran is not None
            and self._policy.class_day_past(ref.archive_class, ref.day, min(ran, self._now))
        )

    def _broken_runs(self, day: date, broken: list[tuple[str, int]]) -> None:
        """A committed run whose rows are gone: its values' records are `unindexed`, named
        with the day's committed blobs (`verify --repair` re-archives them, posting anew)."""
        blobs = tuple(sorted(ref.name for ref in self._manifests if ref.day == day))
        for kind, prefix in broken:
            detail = (
                "the day's committed run of this unit lacks rows or has one that cannot be "
                "read: its values are not found"
            )
            self.report.add(
                "unindexed", f"run {kind}{prefix:x} of {day.isoformat()}", detail, blobs
            )

    def _posting_refs(self, month: str, partition: str) -> dict[BlobRef, str]:
        """The blobs a posting partition names, each with one of its rows."""
        refs: dict[BlobRef, str] = {}
        for row in self._tables.query(month, _POSTINGS, {"pk": partition}, select=["RowKey"]):
            try:
                ref = posting_ref(month, row["RowKey"])
            except (ValueError, KeyError, IndexError):
                continue  # not a posting row this layout writes
            refs.setdefault(ref, f"{partition}/{row['RowKey']}")
        return refs
