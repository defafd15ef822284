"""`verify` on Azurite: a clean archive is proven; each kind of damage is found and named."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from shared import settings as names
from shared.adapters.index_tables import as_int, int64
from shared.bootstrap import Runtime
from shared.core.archive_format import encode_blob, pack_offsets, unpack_offsets
from shared.core.archive_keys import (
    CLAIM,
    MEMBERS,
    BlobRef,
    claim_row,
    event_id,
    pack_ids,
    slot_partition,
    slot_partitions,
    unpack_ids,
)
from shared.core.keys import parse_canonical_time
from shared.core.normalize import normalize_input
from shared.core.query_spec import ActivityQuery
from shared.core.records import NormalizedRecord
from shared.core.retention_policy import policy_from
from shared.services.archive_write import ArchiveWriter, plan_blobs, posted_kinds
from shared.services.blob_check import check_blob
from shared.services.query import run_query
from shared.services.repair import repair
from shared.services.verify import verify
from shared.services.verify_report import VerifyReport
from shared.settings import Settings
from shared.tools.verify_cli import format_report
from tests.archive_view import archived_records as archived_records_of
from tests.archive_view import claim_rows, committed_blobs
from tests.events import activity_event, envelope

LATER = timedelta(hours=1)  # past CLAIM_TIMEOUT: nothing written by the test is in flight


def _records(numbers: range, **overrides: object) -> list[NormalizedRecord]:
    records, rejections = normalize_input(
        envelope([activity_event(n, **overrides) for n in numbers]), "test"
    )
    assert not rejections
    return records


def _verify(app: Runtime, *, later: bool = False, **span: datetime) -> VerifyReport:
    now = datetime.now(UTC) + (LATER if later else timedelta())
    return verify(
        app.tables,
        app.archive,
        app.reader,
        since=span.get("since"),
        until=span.get("until"),
        now=now,
    )


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    environment = {
        **os.environ,
        names.STORAGE_CONNECTION: settings.storage_connection,
        names.STORE_PREFIX: settings.store_prefix,
    }
    return subprocess.run(
        [sys.executable, "-m", "shared", "verify", *args],
        env=environment,
        capture_output=True,
        check=False,
        timeout=300,
    )


def _names(report: VerifyReport, kind: str) -> list[str]:
    return [problem.name for problem in report.problems[kind]]


def _archived(app: Runtime, count: int = 300) -> list[NormalizedRecord]:
    records = _records(range(count)) + _records(range(20), category="Policy")
    assert len(app.writer.write(records).indexed) == len(records)
    return records


def test_a_clean_archive_is_proven_by_the_service_and_the_cli(
    app: Runtime, settings: Settings
) -> None:
    records = _archived(app)
    report = _verify(app, later=True)
    assert report.ok and report.counts.total() == 0 and report.pending == 0
    assert report.blobs == 2 and report.records == len(records) and report.bytes > 0
    result = _cli(settings, "--json")
    assert result.returncode == 0, result.stderr
    shown = orjson.loads(result.stdout)
    assert shown["ok"] is True and shown["records"] == len(records) and shown["missing"] == []
    plain = _cli(settings, "--since", "2024-05-01", "--until", "2024-05-02")
    assert plain.returncode == 0, plain.stderr
    assert b"complete and unaltered" in plain.stdout


def test_altered_bytes_are_found(app: Runtime, settings: Settings) -> None:
    _archived(app)
    victim = committed_blobs(app)[0]
    other = encode_blob(_records(range(1000, 1005)))
    blob = app.stores.records.get_blob_client(victim.name)
    metadata = blob.get_blob_properties().metadata
    blob.upload_blob(other.data, overwrite=True, metadata=metadata)
    report = _verify(app)
    assert _names(report, "altered") == [victim.name] and not report.ok
    assert report.counts.total() == 1  # its key rows are not judged again
    result = _cli(settings, "--json")
    assert result.returncode == 3
    assert [p["name"] for p in orjson.loads(result.stdout)["altered"]] == [victim.name]


def test_a_deleted_blob_is_missing(app: Runtime, settings: Settings) -> None:
    _archived(app)
    victim = committed_blobs(app)[-1]
    assert app.archive.delete([victim.name]) == {}
    report = _verify(app, later=True)
    assert _names(report, "missing") == [victim.name] and not report.ok
    result = _cli(settings)
    assert result.returncode == 3
    assert f"missing  {victim.name}".encode() in result.stdout


def test_a_class_day_retention_deletes_while_verify_runs_is_not_missing(
    app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention deletes a class-day's manifests, then its blobs; a verify that listed the
    manifests before and looks at the blobs after must not call them missing (found from
    outside: a false exit 3)."""
    _archived(app)
    victim = committed_blobs(app)[-1]

    def retention_meanwhile(archive: Any, manifest: Any, stored: Any) -> Any:
        if manifest.ref == victim:
            partition, row = victim.manifest_keys
            app.tables.delete(victim.month, [{"PartitionKey": partition, "RowKey": row}])
            app.archive.delete([victim.name])
        return check_blob(archive, manifest, stored)

    monkeypatch.setattr("shared.services.verify.check_blob", retention_meanwhile)
    report = _verify(app, later=True)
    assert _names(report, "missing") == [] and report.ok, report.as_dict()


def test_a_deleted_manifest_leaves_a_blob_pending_then_orphaned(app: Runtime) -> None:
    _archived(app)
    victim = committed_blobs(app)[0]
    partition, row = victim.manifest_keys
    app.tables.delete(victim.month, [{"PartitionKey": partition, "RowKey": row}])
    young = _verify(app)
    assert young.ok and young.pending > 0  # as a write in flight looks
    old = _verify(app, later=True)
    assert _names(old, "orphaned") == [victim.name] and not old.ok
    # Its claims and postings now name an uncommitted blob too.
    assert old.counts["unarchived"] > 0 and old.counts["dangling"] > 0


def test_an_event_in_a_second_committed_blob_is_duplicated(app: Runtime) -> None:
    records = _archived(app)
    original = committed_blobs(app)
    copy = records[5]
    ref = plan_blobs([copy])[0].ref
    encoded = encode_blob([copy])
    app.archive.put(ref.name, encoded)
    partition, row = ref.manifest_keys
    ticks = parse_canonical_time(copy["TimeGenerated"])[1]
    manifest: dict[str, Any] = {
        "PartitionKey": partition,
        "RowKey": row,
        "N": 1,
        "H": bytes.fromhex(encoded.sha256),
        "O": pack_offsets(encoded.offsets),
        "Lo": int64(ticks),
        "Hi": int64(ticks),
    }
    assert app.tables.create(ref.month, [manifest]) == {}
    report = _verify(app, later=True)
    [duplicated] = report.problems["duplicated"]
    assert duplicated.name == copy["EventKey"]
    first = next(blob.name for blob in original if blob.archive_class == ref.archive_class)
    assert sorted(duplicated.blobs) == sorted([first, ref.name])
    unindexed = _names(report, "unindexed")
    assert copy["EventKey"] in unindexed  # its key row names the first
    # ... and the copy was committed without posting rows: not found by any filter
    assert sorted(unindexed) == sorted([copy["EventKey"], *posted(copy, ref)])
    assert not report.ok


def posted(record: NormalizedRecord, ref: BlobRef) -> list[str]:
    """verify's names of a blob's missing posting kinds, for a blob of this one record."""
    return [f"{kind} postings of {ref.name}" for kind in sorted(posted_kinds(record))]


def test_an_event_its_claim_lost_is_unindexed(app: Runtime, settings: Settings) -> None:
    records = _archived(app)
    ref = committed_blobs(app)[0]
    [claim] = claim_rows(app, ref)
    ids = unpack_ids(bytes(claim["K"]))
    dropped = next(r for r in records if event_id(r["EventKey"]) == ids[3])
    app.tables.upsert(ref.month, [{**claim, "K": pack_ids(ids[:3] + ids[4:])}])
    report = _verify(app)
    assert _names(report, "unindexed") == [dropped["EventKey"]] and not report.ok
    assert report.problems["unindexed"][0].blobs == (ref.name,)
    assert _cli(settings).returncode == 3


def test_a_claim_never_committed_is_pending_then_unarchived(app: Runtime) -> None:
    _archived(app)
    [lost] = _records(range(5000, 5001))
    ref = plan_blobs([lost])[0].ref
    partition = slot_partition(lost["TimeGenerated"])
    claim = {
        "PartitionKey": partition,
        "RowKey": claim_row(99),
        "B": int64(ref.blob_id),
        "C": ref.code,
        "K": pack_ids([event_id(lost["EventKey"])]),
    }
    assert app.tables.create(ref.month, [claim]) == {}
    young = _verify(app)
    assert young.ok and young.pending == 1
    old = _verify(app, later=True)
    assert _names(old, "unarchived") == [f"{ref.month}/{partition}/{claim_row(99)}"]
    assert old.problems["unarchived"][0].blobs == (ref.name,) and not old.ok


def test_a_foreign_name_is_reported_without_failing(app: Runtime, settings: Settings) -> None:
    _archived(app, 10)
    weird = "class=administrative/y=2024/m=05/notes.txt"
    app.stores.records.upload_blob(weird, b"hello")
    report = _verify(app, later=True)
    assert report.ok and _names(report, "foreign") == [weird]
    result = _cli(settings)
    assert result.returncode == 0, result.stderr
    assert f"foreign  {weird}".encode() in result.stdout


def test_names_shown_to_a_terminal_carry_no_control_characters() -> None:
    report = VerifyReport(None, None)
    report.add("orphaned", "class=other/\x1b[31mx.jsonl.gz", "uploaded, never committed")
    shown = format_report(report)
    assert "\x1b" not in shown and "orphaned  class=other/?[31mx.jsonl.gz" in shown
    assert "NOT proven" in shown


def test_damage_outside_the_range_is_not_looked_at(app: Runtime) -> None:
    _archived(app, 10)
    later_day = _records(range(10), time="2024-05-03T10:00:00.0000000Z")
    app.writer.write(later_day)
    victim = next(ref for ref in committed_blobs(app) if ref.day.day == 3)
    app.archive.delete([victim.name])
    may_first = datetime(2024, 5, 1, tzinfo=UTC)
    assert _verify(app, since=may_first, until=may_first + timedelta(days=2)).ok
    assert not _verify(app, since=may_first).ok
    report = _verify(app, since=may_first, until=may_first + timedelta(days=2, seconds=1))
    assert _names(report, "missing") == [victim.name]


def test_bad_arguments_are_exit_two_with_one_line(settings: Settings) -> None:
    for args in (["--since", "yesterday"], ["--since", "2024-05-02", "--until", "2024-05-01"]):
        result = _cli(settings, *args)
        assert result.returncode == 2, (args, result.stderr)
        message = result.stderr.decode().strip()
        assert message.count("\n") == 0 and "--since" in message, message


# --- found from outside: damage that verify (or its repair) let pass ------------------------


def test_a_lost_blob_stays_a_failure_after_the_repair_fences_it(app: Runtime) -> None:
    """Repair fences a missing blob's manifest (so a re-delivery archives its events again);
    until that happens, its events are unarchived: the loss never reads as a clean archive."""
    _archived(app)
    victim = committed_blobs(app)[-1]
    assert app.archive.delete([victim.name]) == {}
    report = _verify(app, later=True)
    assert _names(report, "missing") == [victim.name]
    later = datetime.now(UTC) + LATER
    writer = ArchiveWriter(app.tables, app.archive, clock=lambda: later)
    done = repair(app.tables, app.archive, writer, report, apply=True)
    assert [action.kind for action in done.actions] == ["missing"] and done.failed == []
    after = _verify(app, later=True)
    assert not after.ok and after.counts["unarchived"] == 1, after.as_dict()
    assert after.problems["unarchived"][0].blobs == (victim.name,)


@pytest.mark.parametrize("spelling", ["upper", "low bit", "past the id"])
def test_a_copy_under_another_spelling_of_a_blob_id_is_not_that_blob(
    app: Runtime, spelling: str
) -> None:
    """Base32 decoding ignores case and the last character's low bit: another spelling of a
    committed blob's id must not pass for it (engines reading `**/*.jsonl.gz` read both)."""
    _archived(app, 10)
    victim = committed_blobs(app)[0]
    folder, file = victim.name.rsplit("/", 1)
    blob_id = file.removesuffix(".jsonl.gz")
    last = "abcdefghijklmnopqrstuvwxyz234567".index(blob_id[-1])
    other = {
        "upper": blob_id.upper(),
        "low bit": blob_id[:-1] + "abcdefghijklmnopqrstuvwxyz234567"[last ^ 1],
        "past the id": "zzzzzzzzzzzzz",
    }[spelling]
    assert BlobRef.of_name(f"{folder}/{other}.jsonl.gz") is None
    copy = f"{folder}/{other}.jsonl.gz"
    app.stores.records.upload_blob(copy, app.archive.read(victim.name) or b"")
    report = _verify(app, later=True)
    assert _names(report, "stray") == [copy] and not report.ok, report.as_dict()
    writer = ArchiveWriter(app.tables, app.archive)
    dry = repair(app.tables, app.archive, writer, report, apply=False)
    assert [(a.kind, a.name) for a in dry.not_repaired] == [("stray", copy)]


_ACCOUNT = (
    '"time": "2024-05-01T10:00:00Z", "category": "Administrative", "resultType": "Success", '
    '"resourceId": "/subscriptions/11111111-1111-4111-8111-111111111111/resourceGroups/rg/'
    'providers/Microsoft.Storage/storageAccounts/sa"'
)


@pytest.mark.parametrize(
    "fields",
    [
        '"operationName": "x/write", "properties": {"big": 123456789012345678901234567890, '
        '"tiny": 1e-999, "huge": 1e400, "plain": 0.1, "neg": -0.0, "deep": '
        + "[" * 300
        + "]" * 300
        + "}",
        # An exact number beside a plain string of the same text (the normalizer makes one
        # from the other): the archive writes both as strings.
        '"operationName": 1e400',
        '"operationName": "x/write", "properties": {"a": "123456789012345678901234567890", '
        '"b": 123456789012345678901234567890}',
        '"operationName": "x/write", "properties": {"tenantId": 1.0000000000000001}',
    ],
)
def test_odd_records_verify_clean(app: Runtime, fields: str) -> None:
    """Verify holds what was written to its manifest, not to a key recomputed from archived
    text: exact numbers are archived as strings, so their records cannot be re-keyed."""
    body = ('{"records": [{' + _ACCOUNT + ", " + fields + "}]}").encode()
    records, rejections = normalize_input(body, "test")
    assert not rejections and len(records) == 1
    assert len(app.writer.write(records).indexed) == 1
    report = _verify(app, later=True)
    assert report.ok, report.as_dict()


def test_a_class_day_gone_before_its_retention_is_not_taken_for_retention(app: Runtime) -> None:
    """Retention deletes a class-day whole and leaves its postings until the month goes;
    a class-day gone whole while younger than its retention was deleted by something else."""
    _archived(app, 10)
    victim = next(ref for ref in committed_blobs(app) if ref.archive_class == "policy")
    partition, row = victim.manifest_keys
    app.tables.delete(victim.month, [{"PartitionKey": partition, "RowKey": row}])
    app.tables.delete(victim.month, claim_rows(app, victim))
    assert app.archive.delete([victim.name]) == {}
    now = datetime.now(UTC) + LATER
    common: dict[str, Any] = {"since": None, "until": None, "now": now}
    kept = verify(app.tables, app.archive, app.reader, policy=policy_from(0, {}), **common)
    assert not kept.ok and kept.problems["dangling"][0].blobs == (victim.name,), kept.as_dict()
    assert "retention" in kept.problems["dangling"][0].detail
    longer = policy_from(30, {"Policy": 100_000})
    assert not verify(app.tables, app.archive, app.reader, policy=longer, **common).ok
    past = verify(app.tables, app.archive, app.reader, policy=policy_from(30, {}), **common)
    assert past.ok, past.as_dict()


def test_a_loss_the_repair_cannot_leave_a_trace_of_is_not_repaired_out_of_sight(
    app: Runtime,
) -> None:
    """Found from outside: a blob gone with its claims (`missing`), or a class-day gone whole
    within its retention (`dangling`), was "repaired" by dropping what named it: `verify`
    then said the archive was whole, though records were lost. Those stay named."""
    _archived(app, 10)
    lost = committed_blobs(app)[0]  # its blob and its claims gone
    assert app.archive.delete([lost.name]) == {}
    app.tables.delete(lost.month, claim_rows(app, lost))
    gone = next(ref for ref in committed_blobs(app) if ref.archive_class == "policy")
    partition, row = gone.manifest_keys  # the whole class-day gone
    app.tables.delete(gone.month, [{"PartitionKey": partition, "RowKey": row}])
    app.tables.delete(gone.month, claim_rows(app, gone))
    assert app.archive.delete([gone.name]) == {}
    now = datetime.now(UTC) + LATER
    common: dict[str, Any] = {
        "since": None,
        "until": None,
        "now": now,
        "policy": policy_from(0, {}),
    }
    report = verify(app.tables, app.archive, app.reader, **common)
    assert _names(report, "missing") == [lost.name], report.as_dict()
    assert report.problems["dangling"][0].blobs == (gone.name,), report.as_dict()
    done = repair(app.tables, app.archive, app.writer, report, apply=True, clock=lambda: now)
    kept = {(action.kind, action.name) for action in done.not_repaired}
    assert ("missing", lost.name) in kept and not done.failed, done.as_dict()
    assert any(kind == "dangling" for kind, _ in kept), done.as_dict()
    again = verify(app.tables, app.archive, app.reader, **common)
    assert _names(again, "missing") == [lost.name] and again.problems["dangling"], again.as_dict()


@pytest.mark.parametrize(
    "change",
    [
        {"records": "999"},
        {"records": None},  # removed: every blob the app writes carries it
        {"sha256": None},
        {"records": "010"},
    ],
)
def test_a_blob_whose_metadata_was_changed_or_removed_is_altered(
    app: Runtime, change: dict[str, str | None]
) -> None:
    _archived(app, 10)
    victim = committed_blobs(app)[0]
    blob = app.stores.records.get_blob_client(victim.name)
    metadata = {**blob.get_blob_properties().metadata, **change}
    blob.set_blob_metadata({name: value for name, value in metadata.items() if value is not None})
    report = _verify(app, later=True)
    assert _names(report, "altered") == [victim.name] and not report.ok


def test_a_record_placed_by_its_blob_paths_subscription_verifies_clean(app: Runtime) -> None:
    """The blob path's subscription fills a record's column without entering its key (the
    contract): verify must not hold the filled column against the key."""
    line = b'{"time": "2024-05-01T10:00:00Z", "operationName": "x/write", "category": "Policy"}'
    records, rejections = normalize_input(line, "blob", "11111111-1111-4111-8111-111111111111")
    assert not rejections and records[0]["SubscriptionId"]
    assert len(app.writer.write(records).indexed) == 1
    assert _verify(app, later=True).ok


def test_a_blob_whose_posting_rows_of_a_kind_are_gone_is_unindexed_and_repaired(
    app: Runtime,
) -> None:
    """Posting rows deleted (or never written) leave a value's records unfindable by it:
    verify names the blob, and the repair re-archives it, posting anew."""
    records = _archived(app)
    victim = committed_blobs(app)[0]
    suffix = victim.name.rsplit("/", 1)[1].removesuffix(".jsonl.gz")
    rows = [
        row
        for row in app.tables.query(victim.month, "PartitionKey eq @pk", {"pk": "c"})
        if suffix in str(row["RowKey"])
    ]
    assert rows
    app.tables.delete(victim.month, rows)
    report = _verify(app, later=True)
    assert not report.ok, report.as_dict()
    [problem] = report.problems["unindexed"]
    assert problem.blobs == (victim.name,) and "c" in problem.name
    later = datetime.now(UTC) + LATER
    writer = ArchiveWriter(app.tables, app.archive, clock=lambda: later)
    done = repair(app.tables, app.archive, writer, report, apply=True)
    assert done.failed == [] and done.rearchived > 0
    after = _verify(app, later=True)
    assert after.ok, after.as_dict()
    assert sorted(r["EventKey"] for r in records) == sorted(
        r["EventKey"] for r in archived_records_of(app)
    )


def test_repair_never_commits_a_blob_that_has_no_manifest_row(app: Runtime) -> None:
    """Found from outside: a blob uploaded under a layout name with no manifest row (forged
    by whoever may write the records container, or left by a retention run that stopped
    after deleting its day's manifests) was `orphaned`, and repair archived its records: a
    fabricated event became searchable, and an expired one came back. A write always makes
    its pending row before it uploads, so an orphan of the app's own has a row."""
    _archived(app)
    forged = activity_event(9_000, caller="forger@evil.example")
    ref = plan_blobs(normalize_input(envelope([forged]), "x")[0])[0].ref
    app.archive.put(ref.name, encode_blob(normalize_input(envelope([forged]), "x")[0]))
    report = _verify(app, later=True)
    assert _names(report, "orphaned") == [ref.name]
    later = datetime.now(UTC) + LATER
    writer = ArchiveWriter(app.tables, app.archive, clock=lambda: later)
    done = repair(app.tables, app.archive, writer, report, apply=True)
    assert done.rearchived == 0
    assert [(action.kind, action.name) for action in done.not_repaired] == [("orphaned", ref.name)]
    assert forged["caller"] not in {record["Caller"] for record in archived_records_of(app)}
    assert app.archive.read(ref.name) is not None  # kept for whoever looks into it


@pytest.mark.parametrize("damage", [{"N": "abc"}, {"O": "abc"}, {"Lo": "abc"}, {"M": "abc"}])
def test_a_damaged_manifest_row_is_reported_and_crashes_neither_verify_nor_a_query(
    app: Runtime, damage: dict[str, Any]
) -> None:
    """Found from outside: verify reported the row as unreadable, then read it again through
    the archive reader for a posting row, which raised: a traceback and exit 1."""
    _archived(app)
    victim = committed_blobs(app)[0]
    held = app.reader.blob_records(victim)
    assert isinstance(held, list) and held
    partition, row = victim.manifest_keys
    found = app.tables.get(victim.month, partition, row)
    assert found is not None
    app.tables.upsert(victim.month, [{**found, **damage}])
    report = _verify(app, later=True)
    assert _names(report, "altered") == [f"{victim.month}/{partition}/{row}"]  # the row, named
    assert not report.ok
    caller = held[0]["Caller"]
    since = datetime(2000, 1, 1, tzinfo=UTC)
    for key in ({"caller": caller}, {}):  # a lookup by postings, and a listing of the days
        query = ActivityQuery(
            subscription=None,
            resource=None,
            caller=key.get("caller"),
            correlation_id=None,
            operation=None,
            category=None,
            since=since,
            until=datetime.now(UTC),
            limit=1000,
        )
        page = run_query(query, tables=app.tables, reader=app.reader)  # no exception
        assert all(record["Caller"] == caller for record in page.records if key)
        # Its records are missing from the answer, and the answer says so (never silently).
        assert page.unreadable == [victim.name], key


def test_repair_leaves_an_expired_days_blob_that_lost_its_manifest_to_retention(
    app: Runtime,
) -> None:
    """Found from outside: retention deletes a day's manifests, then its claims, then its
    blobs; a run stopped after the manifests left blobs that claims still name, and repair
    archived their expired records again. A blob that claims name and whose day is within
    retention lost its row to damage, and is archived again (tests/test_compaction.py)."""
    _archived(app)
    victim = committed_blobs(app)[0]
    partition, row = victim.manifest_keys
    app.tables.delete(victim.month, [{"PartitionKey": partition, "RowKey": row}])
    report = _verify(app, later=True)
    assert _names(report, "orphaned") == [victim.name]
    later = datetime.now(UTC) + LATER  # the records' day (2024) is past 90 days by then
    writer = ArchiveWriter(app.tables, app.archive, clock=lambda: later)
    policy = policy_from(90, {})
    done = repair(app.tables, app.archive, writer, report, apply=True, policy=policy)
    assert done.rearchived == 0
    assert [action.name for action in done.not_repaired if action.kind == "orphaned"] == [
        victim.name
    ]


def test_a_late_commit_into_a_class_day_retention_is_deleting_is_expiring_not_unindexed(
    app: Runtime,
) -> None:
    """Found from outside: a writer that commits a blob into a class-day while a retention run
    deletes it (its manifest lands after retention deleted the day's manifests, its claims
    are deleted after) leaves a committed blob no claim names; `verify` called its events
    `unindexed` until the next run deletes it. Past its class's retention it is expiring;
    within it (or with no policy to judge by) it stays a problem."""
    _archived(app)
    victim = committed_blobs(app)[0]
    slots = set(slot_partitions(victim.day))
    rows = [
        row
        for row in app.tables.query(victim.month, "PartitionKey ge @low", {"low": "0"})
        if row["PartitionKey"] in slots and str(row["RowKey"]).startswith(CLAIM)
    ]
    assert rows
    app.tables.delete(victim.month, rows)  # the day's claims, as retention deletes them
    now = datetime.now(UTC) + LATER
    common: dict[str, Any] = {"since": None, "until": None, "now": now}
    ninety = policy_from(90, {})
    past = verify(app.tables, app.archive, app.reader, policy=ninety, retention_ran=now, **common)
    assert past.ok, past.as_dict()["counts"]
    assert past.counts["expiring"] >= 1 and past.counts["unindexed"] == 0
    # No policy, a longer one, or no retention run that put the day past: damage, not expiry
    # (the same loss on a store whose retention never ran, or ran only dry, is no leftover).
    for policy, ran in ((None, now), (policy_from(36500, {}), now), (ninety, None)):
        kept = verify(app.tables, app.archive, app.reader, policy=policy, retention_ran=ran,
                      **common)  # fmt: skip
        assert kept.counts["unindexed"] > 0 and kept.counts["expiring"] == 0 and not kept.ok


@pytest.mark.parametrize("field", ["Lo", "Hi"])
def test_a_manifest_whose_time_span_is_not_its_records_is_altered(app: Runtime, field: str) -> None:
    """Found from outside: a manifest's `Lo`/`Hi` moved off its records' times passed
    `verify`, while a day's listing (which skips blobs by span) and `forward` left the blob's
    records out without a word."""
    _archived(app)
    victim = committed_blobs(app)[0]
    partition, row = victim.manifest_keys
    found = app.tables.get(victim.month, partition, row)
    assert found is not None
    moved = {"Lo": as_int(found["Hi"]) + 1, "Hi": as_int(found["Lo"]) - 1}[field]
    app.tables.upsert(victim.month, [{**found, field: int64(moved)}])
    report = _verify(app, later=True)
    assert _names(report, "altered") == [victim.name] and not report.ok
    assert "time span" in report.problems["altered"][0].detail


def test_a_lookup_of_a_record_past_its_manifests_count_names_the_blob(app: Runtime) -> None:
    """Found from outside: a manifest's `N` made smaller hid the records past it from key
    lookups without a word (verify calls the blob altered)."""
    _archived(app)
    victim = committed_blobs(app)[0]
    held = app.reader.blob_records(victim)
    assert isinstance(held, list) and len(held) > 1
    partition, row = victim.manifest_keys
    found = app.tables.get(victim.month, partition, row)
    assert found is not None
    app.tables.upsert(victim.month, [{**found, "N": int64(1)}])
    last = held[-1]
    query = ActivityQuery(
        subscription=None,
        resource=None,
        caller=None,
        correlation_id=last["CorrelationId"],
        operation=None,
        category=None,
        since=datetime(2000, 1, 1, tzinfo=UTC),
        until=datetime.now(UTC),
        limit=1000,
    )
    page = run_query(query, tables=app.tables, reader=app.reader)
    assert page.unreadable == [victim.name]
    assert _names(_verify(app, later=True), "altered") == [victim.name]


@pytest.mark.parametrize("change", ["records per member", "a member's offset"])
def test_a_manifest_whose_member_layout_is_not_the_blobs_is_altered(
    app: Runtime, change: str
) -> None:
    """Found from outside: only the last offset was held to the blob, so a manifest row whose
    records per member (M) or a middle offset (O) changed made lookups skip records while
    `verify` said the archive was clean."""
    _archived(app)
    victim = committed_blobs(app)[0]
    partition, row = victim.manifest_keys
    found = app.tables.get(victim.month, partition, row)
    assert found is not None
    if change == "records per member":
        changed = {**found, MEMBERS: int(found[MEMBERS]) // 2}
    else:
        offsets = list(unpack_offsets(bytes(found["O"])))
        offsets[1] += 1
        changed = {**found, "O": pack_offsets(offsets)}
    app.tables.upsert(victim.month, [changed])
    report = _verify(app, later=True)
    assert _names(report, "altered") == [victim.name], report.as_dict()
