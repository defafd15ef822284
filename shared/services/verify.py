"""`verify`: proof that the archive is complete and unaltered, read from the archive and its index.

For every day in [since, until) (a day is in when any part of it is):

* each committed blob (manifest row) exists (else `missing`); its bytes' SHA-256 is the
  manifest's and the blob's `sha256` metadata, its size is the manifest's, it holds N lines,
  each a JSON object with an EventKey (else `altered`);
* each EventKey is in exactly one committed blob (else `duplicated`);
* each event of a committed blob is claimed by a claim row naming that blob (else
  `unindexed`); each event a claim row holds is in a committed blob of its day, its own or,
  when the claim went stale and a later one took the event over, another (else
  `unarchived`, once the claim is older than CLAIM_TIMEOUT: a younger one whose blob is not
  committed is a write in flight, counted as `pending`);
* each compacted run a day's state names as committed is whole, its last row there (else its
  values' records are `unindexed`, named with the day's committed blobs); each intact
  committed blob is named, for each posting kind its records have a value of, by a fresh
  posting row or a run of the day (else `unindexed`: not found by that filter);
* each posting row's blob is committed (else `dangling`), except a posting whose blob is gone
  and whose class-day, past its retention, has no manifest left (retention deletes it whole
  and leaves postings till the month's table drops; younger: `dangling`);
* each blob of the archive container is committed (else `orphaned`, unless its manifest row
  is pending and younger than CLAIM_TIMEOUT or the blob itself is that young: `pending`) and
  named by the layout (else `stray` if named `*.jsonl.gz`, which engines read as records;
  else `foreign`: reported, not a failure, for it is nothing the app wrote).

A class-day that a retention run (the latest `as_of` of its audit rows, dry runs aside) has
put past the configured retention (`policy`) is retention's to delete: a blob of it
that is not committed, a claim of it whose events are in no committed blob, and a committed
blob of it whose events no claim names are what a run stopped between its steps (a kill, its
time budget, a protected blob) or a writer committing while it ran left, and are `expiring`,
reported beside the problems, not among them: the next run deletes them.

`verify --repair` (shared.services.repair) heals what these name, where no event is lost.

Blobs committed while verify ran are re-read before they are called a problem, and so are
committed blobs found gone (retention deleted their class-day meanwhile: not `missing`).
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from collections import defaultdict
from collections.abc import Iterator
from datetime import date, datetime

from shared.adapters.archive_store import ArchiveStore, StoredBlob
from shared.adapters.index_tables import IndexTables
from shared.core.archive_keys import (
    BLOB_SUFFIX,
    CLAIM,
    CLASS_CODES,
    FENCED,
    REPAIRING,
    STATE,
    BlobRef,
    event_id,
    slot_partitions,
)
from shared.core.retention_policy import RetentionPolicy
from shared.services.archive_read import ArchiveReader, Manifest
from shared.services.archive_write import CLAIM_TIMEOUT
from shared.services.blob_check import Checked, check_blob
from shared.services.claim_log import Claim, is_release, parse_claim, released_numbers
from shared.services.verify_postings import EXPIRING, MonthChecks
from shared.services.verify_report import MISSING, MISSING_UNCLAIMED, DaySpan, VerifyReport

_EVENT_KEY = re.compile(r"[0-9a-f]{32}")
_RANGE = "PartitionKey ge @low and PartitionKey lt @high"
_CLAIMS = "PartitionKey ge @low and PartitionKey le @high and RowKey ge @first and RowKey lt @after"
_PAST_CLAIMS = chr(ord(CLAIM) + 1)  # sorts after every claim's RowKey, before mark rows
# What damaged bytes raise when decoded (orjson's JSONDecodeError is a ValueError).
_DAMAGED = (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError, TypeError)


def verify(  # noqa: PLR0913 - the three adapters, then the range and the clock, by name
    tables: IndexTables,
    archive: ArchiveStore,
    reader: ArchiveReader,
    *,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    policy: RetentionPolicy | None = None,
    retention_ran: datetime | None = None,
) -> VerifyReport:
    """Check every day of [since, until) (None: unbounded) of the archive and its index.

    `policy` (the configured retention) tells a class-day retention deleted from one deleted
    by something else; without it, any class-day gone whole is taken for retention's doing.
    `retention_ran` is the latest `as_of` a retention run that deletes started with (its
    audit rows): what the policy put past by then is `expiring` when left half-deleted; with
    no run, nothing is."""
    report = VerifyReport(since, until)
    return _Verifier(
        tables, archive, reader, now, report, policy=policy, retention_ran=retention_ran
    ).run()


class _Verifier(MonthChecks):
    def __init__(  # noqa: PLR0913 - the three adapters, the clock, the report, the retention
        self,
        tables: IndexTables,
        archive: ArchiveStore,
        reader: ArchiveReader,
        now: datetime,
        report: VerifyReport,
        *,
        policy: RetentionPolicy | None,
        retention_ran: datetime | None,
    ) -> None:
        self._tables = tables
        self._archive = archive
        self._reader = reader
        self._old = now - CLAIM_TIMEOUT  # what was written before this has no live writer
        self._span = DaySpan.of(report.since, report.until)
        self._now = now
        self._policy = policy
        self.retention_ran = retention_ran
        self.report = report
        self._seen: dict[bytes, int] = {}  # EventKey -> index of its first blob in _names
        self._names: list[str] = []
        self._duplicates: dict[str, list[str]] = defaultdict(list)
        self._expiring_blobs: set[str] = set()  # committed blobs of class-days past retention
        # The month being verified: its committed blobs, its listed blobs, and those of its
        # committed blobs that are missing or altered (their key rows are not judged again).
        self._manifests: dict[BlobRef, Manifest] = {}
        self._uncommitted: dict[BlobRef, tuple[bool, datetime | None]] = {}  # fenced?, written
        self._repairing: set[BlobRef] = set()  # fenced by a repair that has not ended
        self._stored: dict[BlobRef, StoredBlob] = {}
        self._unreadable: set[BlobRef] = set()
        self._gone: set[BlobRef] = set()  # committed when listed, deleted since (retention)
        self._kinds: dict[BlobRef, frozenset[str]] = {}  # posting kinds of intact blobs

    def run(self) -> VerifyReport:
        months = set(self._tables.months())
        for blob in self._archive.blobs():  # one pass for names outside the layout
            ref = BlobRef.of_name(blob.name)
            if ref is None and blob.name.endswith(BLOB_SUFFIX):
                why = "named like an archive blob, but no name the app writes: engines read it"
                self.report.add("stray", blob.name, why)
            elif ref is None:
                self.report.add("foreign", blob.name, "a name outside the archive's layout")
            elif self._span.holds(ref.day):
                months.add(ref.month)
        for month in sorted(months):
            days = self._span.days_of(month)
            if days:
                self.report.months += 1
                self._month(month, days)
        for event_key, names in self._duplicates.items():
            blobs = (self._names[self._seen[bytes.fromhex(event_key)]], *names)
            if self._expiring_blobs.issuperset(blobs):  # a late commit and its redelivery
                detail = "one event in several blobs" + EXPIRING
                self.report.add("expiring", event_key, detail, blobs)
            else:
                self.report.add("duplicated", event_key, "one event in several blobs", blobs)
        return self.report

    def _month(self, month: str, days: list[date]) -> None:
        self._manifests = manifests = self._read_manifests(month, days[0], days[-1])
        self._stored = stored = {}
        self._unreadable, self._gone, self._kinds = set(), set(), {}
        for archive_class in CLASS_CODES:
            prefix = f"class={archive_class}/y={month[:4]}/m={month[4:]}/"
            for blob in self._archive.blobs(prefix):
                ref = BlobRef.of_name(blob.name)
                if ref is not None and ref.day in days:
                    stored[ref] = blob
        for day in days:
            self._day(month, day)
        for ref, blob in stored.items():
            if ref not in manifests:
                self._uncommitted_blob(ref, blob)
        self._postings(month, days)

    def _read_manifests(self, month: str, first: date, last: date) -> dict[BlobRef, Manifest]:
        bounds = {"low": f"m{first.day:02d}", "high": f"m{last.day + 1:02d}"}
        manifests: dict[BlobRef, Manifest] = {}
        self._uncommitted, self._repairing = {}, set()
        for row in self._tables.query(month, _RANGE, bounds):
            partition, row_key = row["PartitionKey"], row["RowKey"]
            try:
                ref = BlobRef.of_manifest(month, partition, row_key)
                if STATE in row:  # pending or fenced: a write in flight, or one given up
                    written = getattr(row, "metadata", {}).get("timestamp")
                    fenced = row[STATE] in (FENCED, REPAIRING)
                    self._uncommitted[ref] = (fenced, written)
                    if row[STATE] == REPAIRING:
                        self._repairing.add(ref)
                    continue
                manifests[ref] = Manifest.of_row(ref, row)
            except (ValueError, KeyError, TypeError, IndexError) as error:
                name = f"{month}/{partition}/{row_key}"
                self.report.add("altered", name, f"manifest row unreadable: {error}")
        return manifests

    # --- one day: its committed blobs and its claims ---------------------------------------

    def _day(self, month: str, day: date) -> None:
        claims = self._claims(month, day)
        # (event id, blob id) of every claim, packed: one small bytes object each.
        claimed = {event + _blob_bytes(c.ref) for _, c in claims for event in c.events()}
        manifests, stored = self._manifests, self._stored
        refs = sorted(ref for ref in manifests if ref.day == day)
        checked = self._tables.parallel(
            lambda ref: check_blob(self._archive, manifests[ref], stored.get(ref)), refs
        )
        archived: set[bytes] = set()  # event ids of the day's intact committed blobs
        for blob in checked:
            if blob.missing and self._reader.manifest(blob.ref) is None:
                self._gone.add(blob.ref)  # its class-day went (retention) while verify ran
                continue
            if blob.missing:
                named = any(claim.ref == blob.ref for _, claim in claims)
                detail = MISSING if named else MISSING_UNCLAIMED
                self.report.add("missing", blob.ref.name, detail)
            elif blob.altered is not None:
                self.report.add("altered", blob.ref.name, blob.altered)
            if blob.missing or blob.altered is not None:
                self._unreadable.add(blob.ref)
                continue
            self.report.blobs += 1
            self.report.bytes += blob.size
            self.report.records += len(blob.event_keys)
            archived.update(self._events(blob, claimed))
            self._kinds[blob.ref] = blob.kinds
        del claimed
        taken = self._taken_over(claims, archived)
        for name, claim in claims:
            self._settle_claim(name, claim, archived, taken)

    def _claims(self, month: str, day: date) -> list[tuple[str, Claim]]:
        """The day's claim rows (every slot), each with its `month/PartitionKey/RowKey`."""
        slots = slot_partitions(day)
        bounds = {"low": slots[0], "high": slots[-1], "first": CLAIM, "after": _PAST_CLAIMS}
        claims: list[tuple[str, Claim]] = []
        released: set[tuple[str, int]] = set()  # (slot, number of lane "") taken back
        for row in self._tables.query(month, _CLAIMS, bounds):
            name = f"{month}/{row['PartitionKey']}/{row['RowKey']}"
            try:
                if is_release(row):
                    released.update((row["PartitionKey"], n) for n in released_numbers(row))
                else:
                    claims.append((name, parse_claim(day, row)))
            except (KeyError, ValueError, TypeError, struct.error) as error:
                self.report.add("unarchived", name, f"claim row unreadable: {error!r}")
        return [
            (name, claim)
            for name, claim in claims
            if claim.lane or (name.split("/")[1], claim.sequence) not in released
        ]

    def _events(self, blob: Checked, claimed: set[bytes]) -> Iterator[bytes]:
        """Each event's duplicate and claim checks; the blob's event ids."""
        ref = blob.ref
        index = len(self._names)
        self._names.append(ref.name)
        in_blob: set[bytes] = set()
        suffix = _blob_bytes(ref)
        # Past retention, a commit that landed while a run deleted the day's claims: expiring.
        expiring, unclaimed = self._expiring(ref), 0
        if expiring:
            self._expiring_blobs.add(ref.name)
        for event_key in blob.event_keys:
            compact = bytes.fromhex(event_key)
            if self._seen.setdefault(compact, index) != index or compact in in_blob:
                self._duplicates[event_key].append(ref.name)
            in_blob.add(compact)
            event = event_id(event_key)
            if event + suffix not in claimed and expiring:
                unclaimed += 1
            elif event + suffix not in claimed:
                self.report.add("unindexed", event_key, "no claim names its blob", (ref.name,))
            yield event
        if unclaimed:
            detail = f"committed, {unclaimed} of its events claimed by no row" + EXPIRING
            self.report.add("expiring", ref.name, detail)

    def _taken_over(self, claims: list[tuple[str, Claim]], archived: set[bytes]) -> set[bytes]:
        """Of the unarchived events of fenced blobs' claims, those a live claim holds (a write
        that took them over, maybe still in flight); the rest are lost, not taken over (a
        repair fences a missing blob, and its events wait for a re-delivery)."""
        void = {
            event
            for _, claim in claims
            if self._fenced(claim.ref)
            for event in claim.events()
            if event not in archived
        }
        if not void:
            return void
        return {
            event
            for _, claim in claims
            if not self._fenced(claim.ref)
            for event in claim.events()
            if event in void
        }

    def _settle_claim(
        self, name: str, claim: Claim, archived: set[bytes], taken: set[bytes]
    ) -> None:
        """A claim whose events are not all archived: a write in flight, or events lost."""
        ref = claim.ref
        lost = [event for event in claim.events() if event not in archived]
        if self._fenced(ref):
            lost = [event for event in lost if event not in taken]  # a taker's claim settles
        if not lost or ref in self._unreadable or ref in self._gone:
            return  # all archived (here or by a later claim), or reported with its blob
        if self._expiring(ref):
            detail = f"{len(lost)} claimed events in no committed blob" + EXPIRING
            self.report.add("expiring", name, detail, (ref.name,))
            return
        if self._fenced(ref):
            detail = f"{len(lost)} events of a fenced blob that no write took over, e.g. "
            self.report.add("unarchived", name, detail + lost[0].hex(), (ref.name,))
            return
        young = claim.written is not None and claim.written >= self._old
        if ref not in self._manifests and (young or self._reader.manifest(ref) is not None):
            self.report.pending += 1  # in flight, or committed while verify ran
            return
        detail = f"{len(lost)} claimed events in no committed blob, e.g. {lost[0].hex()}"
        self.report.add("unarchived", name, detail, (ref.name,))

    def _uncommitted_blob(self, ref: BlobRef, blob: StoredBlob) -> None:
        if ref in self._repairing:  # no writer's: a repair stopped before it re-archived
            detail = "uploaded, fenced by a repair that stopped before re-archiving its records"
            self.report.add("orphaned", ref.name, detail)
            return
        young = blob.last_modified >= self._old or self._in_flight(ref)
        if young or self._reader.manifest(ref) is not None:
            self.report.pending += 1
        elif self._expiring(ref):
            self.report.add("expiring", ref.name, "uploaded, not committed" + EXPIRING)
        else:
            state = "fenced" if self._fenced(ref) else "never committed"
            self.report.add("orphaned", ref.name, f"uploaded, {state}")


def _blob_bytes(ref: BlobRef) -> bytes:
    return ref.blob_id.to_bytes(8, "big")
