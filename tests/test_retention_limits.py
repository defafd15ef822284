"""Retention at its limits, on Azurite: odd names, leases, orphans, killed runs, far dates.

No storage is mocked. Where a failure has to happen at a chosen point, a thin wrapper around
the real client performs the real call and then "dies" (every later call on any client
raises), as a killed process would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import orjson
import pytest

from shared import settings as names
from shared.adapters.cursors import Cursor, CursorStore
from shared.adapters.deadletters import UNDELIVERED, DeadLetter
from shared.adapters.storage import Stores
from shared.bootstrap import Runtime, build_runtime
from shared.core.archive_format import encode_blob
from shared.core.archive_keys import STATE, BlobRef, category_class, id_text, posting_ref
from shared.core.keys import LOOKUP_COLUMNS
from shared.core.normalize import normalize_input
from shared.core.pt1h import hour_key
from shared.core.records import CATEGORIES, NormalizedRecord
from shared.core.retention_policy import RetentionPolicy, day_end, wholly_past
from shared.services import orphans
from shared.services.retention import enforce_retention
from shared.services.retention_archive import OUTSIDE_LAYOUT
from shared.settings import Settings
from tests.events import SUBSCRIPTION, activity_event, envelope
from tests.test_retention import (
    AS_OF,
    blob_names,
    committed_keys,
    record_at,
    report_blobs_left,
    write,
)

NOW = datetime.now(UTC).replace(microsecond=0)
EXPORT_OUTSIDE_LAYOUT = "name outside the PT1H.json layout"


def audit_rows(stores: Stores) -> dict[str, dict[str, Any]]:
    return {
        row["RowKey"]: dict(row)
        for row in stores.runs.query_entities("PartitionKey eq @pk", parameters={"pk": "retention"})
    }


def pt1h(hour: datetime) -> str:
    return (
        f"resourceId=/SUBSCRIPTIONS/{SUBSCRIPTION.upper()}/y={hour.year:04d}/m={hour:%m}"
        f"/d={hour:%d}/h={hour:%H}/m=00/PT1H.json"
    )


def upload(stores: Stores, name: str) -> str:
    stores.archive.get_blob_client(name).upload_blob(b"{}\n", overwrite=True)
    return name


def with_cursor(stores: Stores, hour: datetime) -> str:
    """An export blob of that hour, and the cursor a backfill would have left for it."""
    name = upload(stores, pt1h(hour))
    assert CursorStore(stores.cursors).save(Cursor(blob=name, hour=hour_key(hour), offset=3))
    return name


def cursor_blobs(stores: Stores) -> set[str]:
    return {row["Blob"] for row in stores.cursors.list_entities(select=["Blob"])}


def deadletter(app: Runtime, number: int) -> str:
    return app.deadletters.put(DeadLetter(UNDELIVERED, "unavailable", "eventhub", f"{number}"))


def junk(app: Runtime, name: str) -> str:
    app.stores.records.get_blob_client(name).upload_blob(b"x", overwrite=True)
    return name


# --- 1. what cannot be judged is kept and reported; the run goes on --------------------------


def test_names_outside_the_layout_are_kept_and_reported(app: Runtime) -> None:
    old = [record_at(datetime(2024, 5, 1, 10, tzinfo=UTC), 1)]  # a month that is dropped
    staying = [record_at(AS_OF - timedelta(days=366), 2), record_at(AS_OF, 3)]  # a day goes
    write(app, [*old, *staying])
    odd = [
        junk(app, "class=administrative/y=2024/m=05/d=01/notes.txt"),
        junk(app, "class=administrative/y=2024/m=05/d=1/aaaaaaaaaaaaa.jsonl.gz"),
        junk(app, "class=administrative/y=2025/m=06/d=14/AAAAAAAAAAAAA.jsonl.gz"),
        junk(app, "class=administrative/y=2025/m=6/d=14/x.jsonl.gz"),
        junk(app, "class=administrative/y=20x5/m=06/d=14/x.jsonl.gz"),
        junk(app, "class=nosuchclass/y=2024/m=05/d=01/x.jsonl.gz"),
        junk(app, "elsewhere/readme.txt"),
    ]
    report = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF)
    assert report.complete and report.error is None
    assert (report.records_deleted, report.records_kept) == (2, 1)
    skipped = {skip["blob"] for skip in report.blobs_skipped}
    assert {skip["reason"] for skip in report.blobs_skipped} == {OUTSIDE_LAYOUT}
    assert set(odd[:3]) <= skipped  # names, and folders for those whose folder is odd
    assert {"class=administrative/y=2025/m=6/", "class=administrative/y=20x5/"} <= skipped
    assert {"class=nosuchclass/", "elsewhere/"} <= skipped
    assert blob_names(app) >= set(odd) and committed_keys(app) == {staying[1]["EventKey"]}


def test_a_manifest_row_that_names_no_blob_is_kept_and_counted(app: Runtime) -> None:
    write(app, [record_at(AS_OF - timedelta(days=366), 1), record_at(AS_OF, 2)])
    app.tables.upsert("202506", [{"PartitionKey": "m14", "RowKey": "zbad", "N": 5}])
    report = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF)
    assert report.complete and report.rows_unreadable == 1
    assert (report.records_deleted, report.records_kept) == (1, 1)
    assert app.tables.get("202506", "m14", "zbad") is not None


# --- 2. protected blobs are skipped and reported -------------------------------------------------


def test_a_leased_archive_blob_is_skipped_reported_and_goes_once_free(app: Runtime) -> None:
    leased, free = (
        record_at(AS_OF - timedelta(days=400), 1),
        record_at(AS_OF - timedelta(days=401), 2),
    )
    write(app, [leased, free, record_at(AS_OF, 3)])
    (name,) = [b for b in blob_names(app) if "/d=11/" in b]  # 400 days back: 2025-05-11
    lease = app.stores.records.get_blob_client(name).acquire_lease(lease_duration=-1)
    dry = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF, dry_run=True)
    assert dry.records_deleted == 2 and dry.blobs_skipped == []
    report = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF)
    assert report.complete and report.blobs_skipped == [{"blob": name, "reason": "LeaseIdMissing"}]
    assert (report.records_deleted, report.archive_blobs_deleted) == (1, 1)
    assert report.deleted_by_category == {"Administrative": 1}
    assert name in blob_names(app)  # kept in the archive, out of the index
    lease.release()
    retention_archive_orphans_now()
    later = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF)
    assert later.orphans_swept == 1 and name not in blob_names(app)


def retention_archive_orphans_now() -> None:
    """Orphans are idle at once (tests): undone at the end of the test by `_orphans_idle`."""
    orphans.ORPHAN_AFTER = timedelta(0)


@pytest.fixture(autouse=True)
def _orphans_idle() -> Any:
    saved = orphans.ORPHAN_AFTER
    yield
    orphans.ORPHAN_AFTER = saved


# --- 3. orphans: uploaded, never committed ---------------------------------------------------


def orphan(app: Runtime, moment: datetime, number: int) -> str:
    """An archive blob uploaded by a write that died before its manifest (its commit)."""
    record = record_at(moment, number)
    name = f"class=administrative/y={moment:%Y}/m={moment:%m}/d={moment:%d}/{id_text(number)}"
    name += ".jsonl.gz"
    app.archive.put(name, encode_blob([record]))
    return name


def crashed_write(app: Runtime, record: NormalizedRecord) -> str:
    """A write that died before its commit: its manifest row pending, its blob uploaded."""
    real = app.tables.replace_if

    def crash(month: str, entity: dict[str, Any], etag: str) -> Any:
        if STATE not in entity:
            raise RuntimeError("killed before the commit")
        return real(month, entity, etag)

    object.__setattr__(app.tables, "replace_if", crash)
    try:
        app.writer.write([record])
    except RuntimeError:
        pass
    finally:
        object.__setattr__(app.tables, "replace_if", real)
    [name] = blob_names(app) - {b for b in blob_names(app) if committed_name(app, b)}
    return name


def committed_name(app: Runtime, name: str) -> bool:
    ref = BlobRef.of_name(name)
    return ref is not None and app.reader.manifest(ref) is not None


def test_blobs_that_never_committed_are_swept_once_no_writer_can_be_at_them(app: Runtime) -> None:
    """No age alone sweeps a blob: one whose manifest row is pending stays while its writer
    may be at work (judged at the run's time), and is fenced before it goes; one that no row
    can ever commit (no row: a name the writer never began) goes at once."""
    pending = crashed_write(app, record_at(AS_OF - timedelta(days=3), 1))
    rowless = orphan(app, AS_OF - timedelta(days=400), 2)
    kept = write(app, [record_at(AS_OF - timedelta(days=3), 3)])
    report = enforce_retention(app.stores, RetentionPolicy(3650), as_of=datetime.now(UTC))
    assert report.orphans_swept == 1 and pending in blob_names(app)  # maybe still writing
    assert rowless not in blob_names(app)
    later = datetime.now(UTC) + timedelta(hours=1)  # past the takeover time
    dry = enforce_retention(app.stores, RetentionPolicy(3650), as_of=later, dry_run=True)
    assert dry.orphans_swept == 1 and pending in blob_names(app)
    report = enforce_retention(app.stores, RetentionPolicy(3650), as_of=later)
    assert report.orphans_swept == 1 and report.records_deleted == 0
    assert pending not in blob_names(app)
    assert committed_keys(app) == {kept[0]["EventKey"]}
    swept = BlobRef.of_name(pending)
    posted = {
        posting_ref(month, row["RowKey"])
        for month in app.tables.months()
        for kind in LOOKUP_COLUMNS
        for row in app.tables.query(month, "PartitionKey eq @pk", {"pk": kind})
    }
    assert swept not in posted  # its postings went too


# --- 4. dead letters and export blobs: the longest limit ----------------------------------


def test_a_dead_letter_stays_as_long_as_the_longest_limit(app: Runtime) -> None:
    name = deadletter(app, 1)
    policy = RetentionPolicy(365, {"Administrative": 2555})
    report = enforce_retention(app.stores, policy, as_of=NOW + timedelta(days=400))
    assert report.deadletters_deleted == 0 and app.deadletters.get(name) is not None
    forever = RetentionPolicy(365, {"Administrative": 2555, "Security": 0})
    report = enforce_retention(app.stores, forever, as_of=NOW + timedelta(days=3000))
    assert report.deadletters_deleted == 0
    report = enforce_retention(app.stores, policy, as_of=NOW + timedelta(days=2557))
    assert report.deadletters_deleted == 1 and app.deadletters.get(name) is None


def test_a_leased_expired_export_blob_keeps_its_cursor(archive_app: Runtime) -> None:
    app = archive_app
    cutoff = AS_OF - timedelta(days=365)
    leased = with_cursor(app.stores, cutoff - timedelta(days=3, minutes=30))
    free = with_cursor(app.stores, cutoff - timedelta(days=2, minutes=30))
    gone_earlier = with_cursor(app.stores, cutoff - timedelta(days=1, minutes=30))
    app.stores.archive.delete_blob(gone_earlier)
    young = with_cursor(app.stores, cutoff + timedelta(hours=1))
    lease = app.stores.archive.get_blob_client(leased).acquire_lease(lease_duration=-1)
    upload(app.stores, "resourceId=/SUBSCRIPTIONS/X/y=2024/m=02/d=30/h=10/m=00/PT1H.json")
    report = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF)
    reasons = {skip["reason"]: skip["blob"] for skip in report.blobs_skipped}
    assert len(reasons) == 2 and reasons[EXPORT_OUTSIDE_LAYOUT].endswith("d=30/h=10/m=00/PT1H.json")
    assert leased in reasons.values()
    assert report.blobs_deleted == 1 and report.cursors_deleted == 2
    assert cursor_blobs(app.stores) == {leased, young} and free not in cursor_blobs(app.stores)
    lease.release()
    again = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF)
    assert (again.blobs_deleted, again.cursors_deleted) == (1, 1)


# --- 5. a killed run never under-reports ---------------------------------------------------


class Killed(Exception):
    """The process died here, as far as storage can tell."""


@dataclasses.dataclass
class KillSwitch:
    """Die right after the `calls`-th deletion call on the client named `target`."""

    target: str
    calls: int
    killed: bool = False


class Doomed:
    """A real client that dies right after the switch's deletion call went through: that
    call and every earlier one happened; every later call, on any client, raises. Table
    clients it hands out are doomed too, and so is the pipeline client under a table client
    (shared.adapters.table_changesets sends transactions through it): a transaction it sends
    counts as a deletion call when it deletes."""

    DELETIONS = frozenset(
        {"submit_transaction", "delete_entity", "delete_blob", "delete_blobs", "delete_table"}
    )

    def __init__(self, client: Any, switch: KillSwitch, name: str) -> None:
        self._wrapped = client
        self._switch = switch
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        real = getattr(self._wrapped, attribute)
        if attribute == "_client":
            return Doomed(real, self._switch, self._name)
        if not callable(real):
            return real
        switch = self._switch
        counts = attribute in self.DELETIONS and self._name == switch.target

        def call(*args: Any, **kwargs: Any) -> Any:
            if attribute == "send_request" and self._name == switch.target:
                nonlocal counts
                counts = b"\r\nDELETE " in (getattr(args[0], "content", b"") or b"")
            if switch.killed:
                raise Killed(attribute)
            result = real(*args, **kwargs)
            if attribute == "get_table_client":
                return Doomed(result, switch, self._name)
            if counts:
                switch.calls -= 1
                if switch.calls <= 0:
                    switch.killed = True
                    raise Killed(f"{self._name}.{attribute}")
            return result

        return call


def doomed(stores: Stores, switch: KillSwitch) -> Stores:
    clients = {"table_service": "index", "records": "records", "cursors": "cursors"}
    clients |= {"runs": "runs", "archive": "export", "deadletter": "deadletter"}
    wrapped = {
        field: cast(Any, Doomed(getattr(stores, field), switch, name))
        for field, name in clients.items()
    }
    return dataclasses.replace(stores, **wrapped)


def snapshot(app: Runtime) -> dict[str, Any]:
    keys = committed_keys(app)
    return {
        "records": keys,
        "categories": Counter(WORLD[key]["CategoryValue"] for key in keys),
        "blobs": blob_names(app),
        "tables": set(app.tables.months()),
        "cursors": cursor_blobs(app.stores),
        "export": {blob.name for blob in app.stores.archive.list_blobs()},
        "deadletters": {blob.name for blob in app.stores.deadletter.list_blobs()},
    }


WORLD: dict[str, NormalizedRecord] = {}  # expired_world's records, by EventKey


def staying(policy: RetentionPolicy, as_of: datetime) -> set[str]:
    """The world's records whose day is not wholly past their class's limit."""
    return {
        key
        for key, record in WORLD.items()
        if not wholly_past(
            day_end(date.fromisoformat(record["TimeGenerated"][:10])),
            policy.class_cutoff(category_class(record["CategoryValue"]), as_of),
        )
    }


def assert_never_under_reports(
    row: dict[str, Any], before: dict[str, Any], after: dict[str, Any]
) -> None:
    gone = {what: len(before[what] - after[what]) for what in before if what != "categories"}
    assert row.get("records_deleted", 0) >= gone["records"], (row, gone)
    blobs = row.get("archive_blobs_deleted", 0) + row.get("orphans_swept", 0)
    assert blobs >= gone["blobs"], (row, gone)
    assert row.get("tables_dropped", 0) >= gone["tables"], (row, gone)
    assert row.get("cursors_deleted", 0) >= gone["cursors"], (row, gone)
    assert row.get("blobs_deleted", 0) >= gone["export"], (row, gone)
    assert row.get("deadletters_deleted", 0) >= gone["deadletters"], (row, gone)
    audited = orjson.loads(row.get("deleted_by_category", "{}"))
    for category, count in (before["categories"] - after["categories"]).items():
        assert audited.get(category, 0) >= count, (category, audited)


def expired_world(app: Runtime, as_of: datetime) -> None:
    """Records in months dropped and in a month whose days go one by one, across categories;
    export blobs with cursors; dead letters."""
    numbers = itertools.count()
    records = [
        record_at(as_of - timedelta(days=back, hours=hour), next(numbers), category)
        for back in (*range(360, 380), 500, 540, 800)
        for hour in (2, 14)
        for category in CATEGORIES[back % 8 : back % 8 + 2]
    ]
    write(app, records)
    WORLD.clear()
    WORLD.update({r["EventKey"]: r for r in records})
    longest = as_of - timedelta(days=730)
    for back in range(3):
        with_cursor(app.stores, (longest - timedelta(days=2 + back)).replace(minute=0))
    with_cursor(app.stores, (as_of - timedelta(days=3)).replace(minute=0))
    for number in range(3):
        deadletter(app, number)


def test_a_run_killed_at_any_step_leaves_a_row_that_never_under_reports(
    archive_app: Runtime,
) -> None:
    app = archive_app
    retention_archive_orphans_now()  # what a killed run left goes on the next
    as_of = (NOW + timedelta(days=800)).replace(minute=30)
    policy = RetentionPolicy(365, {"Security": 730})
    expired_world(app, as_of)
    kills = [("index", 1), ("index", 2), ("index", 4), ("records", 1), ("records", 2)]
    kills += [("index", 6), ("export", 1), ("cursors", 1), ("deadletter", 1), ("nothing", 1)]
    for target, calls in kills:
        before, seen = snapshot(app), set(audit_rows(app.stores))
        switch = KillSwitch(target, calls)
        with contextlib.suppress(Killed):
            enforce_retention(doomed(app.stores, switch), policy, as_of=as_of)
        (row,) = [row for key, row in audit_rows(app.stores).items() if key not in seen]
        assert_never_under_reports(row, before, snapshot(app))
        assert switch.killed is (target != "nothing"), target
        assert row["complete"] is not switch.killed
    after = snapshot(app)
    assert after["records"] == staying(policy, as_of) and 0 < len(after["records"]) < len(WORLD)
    assert len(after["blobs"]) == report_blobs_left(app)  # every blob left is committed
    assert len(after["export"]) == 1 and after["export"] == after["cursors"]
    assert after["deadletters"] == set()


def test_a_step_that_raises_leaves_an_audit_row_and_the_error_goes_on(app: Runtime) -> None:
    records = write(app, [record_at(AS_OF - timedelta(days=500 + n), n) for n in range(5)])

    class Failing:
        def __init__(self, client: Any) -> None:
            self._client = client

        def delete_blobs(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("delete_blobs failed")

        def __getattr__(self, attribute: str) -> Any:
            return getattr(self._client, attribute)

    stores = dataclasses.replace(app.stores, records=cast(Any, Failing(app.stores.records)))
    with pytest.raises(RuntimeError, match="delete_blobs failed"):
        enforce_retention(stores, RetentionPolicy(365), as_of=AS_OF)
    assert committed_keys(app) == set()  # the table went first: nothing is visible
    (row,) = audit_rows(app.stores).values()
    assert row["complete"] is False and "delete_blobs failed" in row["error"]
    assert row["records_deleted"] == len(records) and row["tables_dropped"] == 1


# --- 6. every year 0001-9999 ----------------------------------------------------------------


def test_events_before_year_1000_expire(app: Runtime) -> None:
    moments = [datetime(1, 1, 1, tzinfo=UTC), datetime(999, 3, 1, 10, tzinfo=UTC)]
    moments += [datetime(1500, 6, 1, tzinfo=UTC), AS_OF - timedelta(days=1)]
    records = write(app, [record_at(moment, n) for n, moment in enumerate(moments)])
    report = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF)
    assert (report.records_deleted, report.records_kept, report.tables_dropped) == (3, 1, 3)
    assert committed_keys(app) == {records[-1]["EventKey"]}
    assert app.tables.months() == ["202606"]


def retention_cli(
    settings: Settings, *args: str, days: str = "365"
) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        names.STORAGE_CONNECTION: settings.storage_connection,
        names.STORE_PREFIX: settings.store_prefix,
        names.RETENTION_DAYS: days,
    }
    return subprocess.run(
        [sys.executable, "-m", "shared", "retention", "--json", *args],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("as_of", "deleted"),
    [
        ("0001-01-01", 0),
        ("0001-01-01T00:00:00+05:00", 0),  # before 0001-01-01 in UTC
        ("9999-12-31T23:59:59", 3),
        ("9999-12-31T23:59:59-05:00", 3),  # after 9999-12-31 in UTC
    ],
)
def test_the_command_line_takes_any_as_of(
    app: Runtime, settings: Settings, as_of: str, deleted: int
) -> None:
    write(app, [record_at(AS_OF - timedelta(days=n * 100), n) for n in range(3)])
    result = retention_cli(settings, "--as-of", as_of, days="36500")
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    assert report["complete"] is True
    assert (report["records_deleted"], report["records_kept"]) == (deleted, 3 - deleted)


def test_the_longest_limits_at_the_first_dates_delete_nothing(app: Runtime) -> None:
    write(app, [record_at(AS_OF, 1)])
    policy = RetentionPolicy(36500, {category: 36500 for category in CATEGORIES})
    for as_of in (datetime(1, 1, 1, tzinfo=UTC), datetime(50, 1, 1, tzinfo=UTC)):
        report = enforce_retention(app.stores, policy, as_of=as_of)
        assert report.complete and report.records_deleted == 0 and report.records_kept == 1


def test_the_last_day_and_month_of_the_calendar_are_never_wholly_past(app: Runtime) -> None:
    write(app, [record_at(datetime(9999, 12, 31, 23, tzinfo=UTC), 1)])
    report = enforce_retention(
        app.stores, RetentionPolicy(1), as_of=datetime.max.replace(tzinfo=UTC)
    )
    assert report.complete and (report.records_deleted, report.records_kept) == (0, 1)
    assert date(9999, 12, 31).isoformat() in str(report.oldest_kept)


def test_a_worker_writes_on_after_retention_drops_a_month_table_it_wrote(app: Runtime) -> None:
    """A worker remembers which month tables it created; retention, elsewhere, drops one of
    them. The worker's next write into that month makes the table again, and the fresh
    events beside those late ones are never held back by it."""
    late = normalize_input(envelope([activity_event(1)]), "x")[0]
    assert len(app.writer.write(late).indexed) == 1
    month = late[0]["TimeGenerated"][:7].replace("-", "")
    other = build_runtime(app.settings)  # retention in another worker
    other.tables.drop(month)
    again = normalize_input(envelope([activity_event(n) for n in range(2, 5)]), "x")[0]
    assert len(app.writer.write(again).indexed) == 3
    assert month in app.tables.months()


def test_verify_between_runs_of_a_stopped_retention_names_leftovers_expiring_not_problems(
    archive_app: Runtime,
) -> None:
    """Found from outside: a run stopped between its steps (a kill, or its time budget) left
    a day's blobs, claims or postings without their manifests, and `verify` called them
    `orphaned`, `unarchived` and `dangling` until the next run. What is past its class's
    retention is expiring, not damage; the same leftovers of a day within retention, or with
    no policy to judge by, stay problems."""
    from shared.services.retention_audit import latest_deleting_as_of
    from shared.services.verify import verify
    from shared.services.verify_report import VerifyReport

    app = archive_app
    as_of = (NOW + timedelta(days=800)).replace(minute=30)
    policy = RetentionPolicy(365, {"Security": 730})
    expired_world(app, as_of)

    def judged(policy: RetentionPolicy | None) -> VerifyReport:
        ran = latest_deleting_as_of(app.stores.runs)  # as `verify` reads it: the audit rows
        return verify(app.tables, app.archive, app.reader, since=None, until=None, now=as_of,
                      policy=policy, retention_ran=ran)  # fmt: skip

    assert judged(policy).ok and latest_deleting_as_of(app.stores.runs) is None
    enforce_retention(app.stores, policy, as_of=as_of, dry_run=True)
    assert latest_deleting_as_of(app.stores.runs) is None  # a dry run deletes nothing
    kills = [("index", 1), ("index", 2), ("index", 4), ("records", 1), ("index", 6)]
    left = 0
    for target, calls in kills:
        switch = KillSwitch(target, calls)
        with contextlib.suppress(Killed):
            enforce_retention(doomed(app.stores, switch), policy, as_of=as_of)
        report = judged(policy)
        assert report.ok, (target, calls, report.as_dict()["counts"])
        left += report.counts["expiring"]
        if report.counts["expiring"]:  # no policy, or a longer one: the same are damage
            for other in (judged(None), judged(RetentionPolicy(36500))):
                assert other.counts["expiring"] == 0 and not other.ok, (target, calls)
    assert left > 0  # the kills did leave something to excuse
    enforce_retention(app.stores, policy, as_of=as_of)
    done = judged(policy)
    assert done.ok and done.counts["expiring"] == 0, done.as_dict()["counts"]
