"""Retention at its limits, on Azurite: odd names, long limits, killed runs, leases, far dates.

No storage is mocked. Where a failure has to happen at a chosen point, a thin wrapper around
the real client performs the real call and then "dies" (every later call on any client
raises), as a killed process would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
import pytest
from azure.core.exceptions import ResourceNotFoundError

from shared import settings as names
from shared.adapters.cursors import Cursor, CursorStore
from shared.adapters.deadletters import UNDELIVERED, DeadLetter
from shared.adapters.storage import Stores
from shared.bootstrap import Runtime
from shared.core.keys import day_partition, days_between, month_bucket
from shared.core.pt1h import hour_key
from shared.core.records import CATEGORIES, NormalizedRecord
from shared.core.retention_policy import RetentionPolicy
from shared.services import retention
from shared.services.retention import DEFAULT_BUDGET_SECONDS, Budget, enforce_retention
from shared.settings import Settings
from tests.events import SUBSCRIPTION
from tests.test_retention import AS_OF, record_at, stored_keys

OUTSIDE_LAYOUT = "name outside the PT1H.json layout"
NOW = datetime.now(UTC).replace(microsecond=0)
# Counts in the audit row, by what they count.
AUDITED = {
    "records": "records_deleted",
    "lookups": "lookups_deleted",
    "bodies": "oversize_blobs_deleted",
    "blobs": "blobs_deleted",
    "cursors": "cursors_deleted",
    "deadletters": "deadletters_deleted",
}


def audit_rows(stores: Stores) -> dict[str, dict[str, Any]]:
    return {
        row["RowKey"]: dict(row)
        for row in stores.runs.query_entities("PartitionKey eq @pk", parameters={"pk": "retention"})
    }


def pt1h(hour: datetime, subscription: str = SUBSCRIPTION) -> str:
    return (
        f"resourceId=/SUBSCRIPTIONS/{subscription.upper()}/y={hour.year:04d}/m={hour:%m}"
        f"/d={hour:%d}/h={hour:%H}/m=00/PT1H.json"
    )


def upload(stores: Stores, name: str) -> str:
    stores.archive.get_blob_client(name).upload_blob(b"{}\n", overwrite=True)
    return name


def with_cursor(stores: Stores, hour: datetime) -> str:
    """An archive blob of that hour, and the cursor a backfill would have left for it."""
    name = upload(stores, pt1h(hour))
    assert CursorStore(stores.cursors).save(Cursor(blob=name, hour=hour_key(hour), offset=3))
    return name


def cursor_blobs(stores: Stores) -> set[str]:
    return {row["Blob"] for row in stores.cursors.list_entities(select=["Blob"])}


def old_records(
    app: Runtime, as_of: datetime, *, days: int = 3 * 365, step: int = 9
) -> list[NormalizedRecord]:
    """A record every `step` days back from `as_of`, two categories at a time."""
    numbers = itertools.count(10_000)
    records = [
        record_at(as_of - timedelta(days=back, hours=number % 24), number, category)
        for back in range(0, days, step)
        for category in CATEGORIES[(back // step) % 8 : (back // step) % 8 + 2]
        if (number := next(numbers)) >= 0
    ]
    app.writer.write(records)
    return records


def oversize_record(moment: datetime, number: int, category: str) -> NormalizedRecord:
    return record_at(moment, number, category, properties={"blob": os.urandom(60_000).hex()})


def deadletter(app: Runtime, number: int) -> str:
    letter = DeadLetter(UNDELIVERED, "index unavailable", "eventhub", f"body {number}")
    return app.deadletters.put(letter)


# --- 1. a name outside the layout is that blob's problem only ------------------------------


def test_an_archive_name_outside_the_layout_is_kept_and_reported_and_the_run_goes_on(
    archive_app: Runtime,
) -> None:
    app = archive_app
    old = AS_OF - timedelta(days=800)
    gone_record = record_at(old, 1)
    app.writer.write([gone_record, record_at(AS_OF - timedelta(days=1), 2)])
    prefix = f"resourceId=/SUBSCRIPTIONS/{SUBSCRIPTION.upper()}/y=2024"
    impossible = [
        upload(app.stores, f"{prefix}/m=02/d=30/h=10/m=00/PT1H.json"),
        upload(app.stores, f"{prefix}/m=03/d=01/h=24/m=00/PT1H.json"),
        upload(app.stores, f"{prefix}/m=03/notes.txt"),
    ]
    expired = upload(app.stores, pt1h(datetime(2024, 5, 1, 10, tzinfo=UTC)))  # listed after them
    report = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF)
    assert report.complete and report.error is None
    assert report.records_deleted == 1 and report.blobs_deleted == 1
    assert sorted(report.blobs_skipped, key=lambda skip: skip["blob"]) == [
        {"blob": name, "reason": OUTSIDE_LAYOUT} for name in sorted(impossible)
    ]
    remaining = {blob.name for blob in app.stores.archive.list_blobs()}
    assert remaining == set(impossible) and expired not in remaining
    (row,) = audit_rows(app.stores).values()
    assert row["complete"] is True and row["blobs_deleted"] == 1
    assert orjson.loads(row["blobs_skipped"]) == report.blobs_skipped


def test_archive_blobs_of_any_year_are_judged(archive_app: Runtime) -> None:
    """Not only 2015 onwards: a copied-in 2014 or year-999 blob expires like any other."""
    app = archive_app
    old = [
        upload(app.stores, pt1h(datetime(2014, 12, 31, 23, tzinfo=UTC))),
        upload(app.stores, pt1h(datetime(999, 1, 1, 0, tzinfo=UTC))),
        upload(app.stores, pt1h(datetime(1, 1, 1, 0, tzinfo=UTC))),
    ]
    young = upload(app.stores, pt1h(AS_OF - timedelta(days=10)))
    report = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF)
    assert report.blobs_deleted == len(old) and report.blobs_skipped == []
    assert {blob.name for blob in app.stores.archive.list_blobs()} == {young}


def test_many_skipped_blobs_still_fit_the_audit_row(archive_app: Runtime) -> None:
    app = archive_app
    prefix = f"resourceId=/SUBSCRIPTIONS/{SUBSCRIPTION.upper()}/y=2023/m=02/d=30"
    for number in range(300):
        upload(app.stores, f"{prefix}/h={number:03d}/{'x' * 100}/m=00/PT1H.json")
    report = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF)
    assert len(report.blobs_skipped) == 300
    (row,) = audit_rows(app.stores).values()
    assert row["blobs_skipped_total"] == 300
    assert 0 < len(orjson.loads(row["blobs_skipped"])) < 300


class Boom(RuntimeError):
    pass


class Failing:
    """The real client, except that `method` raises (after doing nothing)."""

    def __init__(self, client: Any, method: str) -> None:
        self._client = client
        self._method = method

    def __getattr__(self, attribute: str) -> Any:
        if attribute == self._method:

            def fail(*args: Any, **kwargs: Any) -> Any:
                raise Boom(f"{attribute} failed")

            return fail
        return getattr(self._client, attribute)


def test_a_step_that_raises_leaves_an_audit_row_and_the_error_goes_on(
    archive_app: Runtime,
) -> None:
    app = archive_app
    records = [record_at(AS_OF - timedelta(days=500 + n), n) for n in range(5)]
    app.writer.write(records)
    upload(app.stores, pt1h(AS_OF - timedelta(days=600)))
    archive = cast(Any, Failing(app.stores.archive, "delete_blob"))
    stores = dataclasses.replace(app.stores, archive=archive)
    with pytest.raises(Boom):
        enforce_retention(stores, RetentionPolicy(365), as_of=AS_OF)
    assert stored_keys(app) == set()
    (row,) = audit_rows(app.stores).values()
    assert row["complete"] is False
    assert "Boom" in row["error"] and "delete_blob failed" in row["error"]
    assert row["records_deleted"] == len(records)
    assert row["blobs_deleted"] >= 0  # at most over-reported: the blob is still there


# --- 2. dead letters last as long as the longest limit --------------------------------------


def test_a_dead_letter_stays_as_long_as_the_longest_limit(app: Runtime) -> None:
    name = deadletter(app, 1)
    policy = RetentionPolicy(365, {"Administrative": 2555})
    report = enforce_retention(app.stores, policy, as_of=NOW + timedelta(days=400))
    assert report.deadletters_deleted == 0
    assert app.deadletters.get(name) is not None
    forever = RetentionPolicy(365, {"Administrative": 2555, "Security": 0})
    report = enforce_retention(app.stores, forever, as_of=NOW + timedelta(days=3000))
    assert report.deadletters_deleted == 0
    report = enforce_retention(app.stores, policy, as_of=NOW + timedelta(days=2557))
    assert report.deadletters_deleted == 1
    assert app.deadletters.get(name) is None


def test_a_dead_letter_at_work_in_a_replay_is_kept_and_reported(app: Runtime) -> None:
    """A replay holds its letter under a lease: retention leaves it, and the run goes on."""
    leased, free = deadletter(app, 1), deadletter(app, 2)
    lease = app.stores.deadletter.get_blob_client(leased).acquire_lease(lease_duration=-1)
    report = enforce_retention(app.stores, RetentionPolicy(365), as_of=NOW + timedelta(days=400))
    assert report.complete and report.deadletters_deleted == 1
    assert [skip["blob"] for skip in report.blobs_skipped] == [
        f"{app.stores.deadletter.container_name}/{leased}"
    ]
    assert app.deadletters.get(free) is None
    lease.release()
    assert app.deadletters.get(leased) is not None


# --- 3. a killed run never under-reports -----------------------------------------------------


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
    call and every earlier one happened; every later call, on any client, raises."""

    DELETIONS = frozenset({"submit_transaction", "delete_entity", "delete_blob"})

    def __init__(self, client: Any, switch: KillSwitch, name: str) -> None:
        self._client = client
        self._switch = switch
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        real = getattr(self._client, attribute)
        if not callable(real):
            return real
        switch = self._switch
        counts = attribute in self.DELETIONS and self._name == switch.target

        def call(*args: Any, **kwargs: Any) -> Any:
            if switch.killed:
                raise Killed(attribute)
            result = real(*args, **kwargs)
            if counts:
                switch.calls -= 1
                if switch.calls <= 0:
                    switch.killed = True
                    raise Killed(f"{self._name}.{attribute}")
            return result

        return call


def doomed(stores: Stores, switch: KillSwitch) -> Stores:
    clients = ("records", "lookup", "cursors", "runs", "archive", "deadletter", "oversize")
    wrapped = {name: cast(Any, Doomed(getattr(stores, name), switch, name)) for name in clients}
    return dataclasses.replace(stores, **wrapped)


def snapshot(stores: Stores) -> dict[str, set[Any]]:
    def keys(rows: Any) -> set[tuple[str, str]]:
        return {(row["PartitionKey"], row["RowKey"]) for row in rows}

    return {
        "records": {
            (row["RowKey"], row["CategoryValue"])
            for row in stores.records.list_entities(select=["RowKey", "CategoryValue"])
        },
        "lookups": keys(stores.lookup.list_entities(select=["PartitionKey", "RowKey"])),
        "cursors": keys(stores.cursors.list_entities(select=["PartitionKey", "RowKey"])),
        "blobs": {blob.name for blob in stores.archive.list_blobs()}
        if stores.archive.exists()
        else set(),
        "deadletters": {blob.name for blob in stores.deadletter.list_blobs()},
        "bodies": {blob.name for blob in stores.oversize.list_blobs()},
    }


def assert_never_under_reports(
    row: dict[str, Any], before: dict[str, set[Any]], after: dict[str, set[Any]]
) -> None:
    for what, counter in AUDITED.items():
        gone = len(before[what] - after[what])
        assert row.get(counter, 0) >= gone, (what, row.get(counter), gone)
    gone_by_category = Counter(category for _, category in before["records"] - after["records"])
    audited = orjson.loads(row.get("deleted_by_category", "{}"))
    for category, gone in gone_by_category.items():
        assert audited.get(category, 0) >= gone, (category, audited, gone_by_category)


def expired_world(app: Runtime, as_of: datetime, policy: RetentionPolicy) -> set[str]:
    """Records (two with oversize bodies), archive blobs with cursors, dead letters; the
    EventKeys that stay."""
    records = old_records(app, as_of)
    bodies = [
        oversize_record(as_of - timedelta(days=800), 90_001, "Policy"),
        oversize_record(as_of - timedelta(days=500), 90_002, "ResourceHealth"),
    ]
    app.writer.write(bodies)
    records += bodies
    longest = as_of - timedelta(days=730)
    for back in range(5):
        with_cursor(app.stores, (longest - timedelta(days=2 + back)).replace(minute=0))
    with_cursor(app.stores, (as_of - timedelta(days=3)).replace(minute=0))
    for number in range(3):
        deadletter(app, number)
    return {
        record["EventKey"]
        for record in records
        if not policy.expired(
            record["CategoryValue"],
            datetime.fromisoformat(record["TimeGenerated"][:26] + "+00:00"),
            as_of,
        )
    }


def test_a_run_killed_at_any_step_leaves_a_row_that_never_under_reports(
    archive_app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = archive_app
    # Bodies a killed run left behind go on the next run, however recently they were written.
    monkeypatch.setattr(retention, "ORPHAN_AFTER", timedelta(0), raising=False)
    as_of = (NOW + timedelta(days=800)).replace(minute=30)  # past the dead letters' limit
    policy = RetentionPolicy(365, {"Security": 730})
    survivors = expired_world(app, as_of, policy)
    # Killed in every step, at its first deletion and later on; then a run to the end.
    kills = [("lookup", 1), ("lookup", 5), ("records", 1), ("records", 2), ("oversize", 1)]
    kills += [("archive", 1), ("archive", 3), ("cursors", 1), ("cursors", 2)]
    kills += [("deadletter", 1), ("deadletter", 2), ("nothing", 1)]
    for target, calls in kills:
        before = snapshot(app.stores)
        seen = set(audit_rows(app.stores))
        switch = KillSwitch(target, calls)
        with contextlib.suppress(Killed):
            enforce_retention(doomed(app.stores, switch), policy, as_of=as_of)
        (row,) = [row for key, row in audit_rows(app.stores).items() if key not in seen]
        assert_never_under_reports(row, before, snapshot(app.stores))
        assert switch.killed is (target != "nothing"), target
        assert row["complete"] is not switch.killed
    after = snapshot(app.stores)
    assert stored_keys(app) == survivors
    assert after["blobs"] == cursor_blobs(app.stores) and len(after["blobs"]) == 1
    assert after["deadletters"] == set() and after["bodies"] == set()


def test_a_killed_command_line_run_leaves_a_row_that_never_under_reports(
    app: Runtime, settings: Settings
) -> None:
    numbers = itertools.count()
    app.writer.write(
        [
            record_at(AS_OF - timedelta(days=400 + number % 300, minutes=number), number)
            for number in itertools.islice(numbers, 1500)
        ]
    )
    before = snapshot(app.stores)
    environment = {
        **os.environ,
        names.STORAGE_CONNECTION: settings.storage_connection,
        names.STORE_PREFIX: settings.store_prefix,
        names.RETENTION_DAYS: "365",
    }
    command = [sys.executable, "-m", "shared", "retention", "--json", "--as-of", AS_OF.isoformat()]
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        # Kill it once its row says a third step has begun: the first is surely done.
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            rows = list(audit_rows(app.stores).values())
            if rows and rows[0].get("lookups_deleted", 0) >= 2000:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    after = snapshot(app.stores)
    assert len(before["lookups"] - after["lookups"]) >= 1000
    (row,) = audit_rows(app.stores).values()
    assert row["complete"] is False
    assert_never_under_reports(row, before, after)


# --- 4. a blob that stays keeps its cursor --------------------------------------------------


def test_a_leased_expired_blob_keeps_its_cursor(archive_app: Runtime) -> None:
    app = archive_app
    cutoff = AS_OF - timedelta(days=365)
    leased = with_cursor(app.stores, cutoff - timedelta(days=3, minutes=30))
    free = with_cursor(app.stores, cutoff - timedelta(days=2, minutes=30))
    gone_earlier = with_cursor(app.stores, cutoff - timedelta(days=1, minutes=30))
    app.stores.archive.delete_blob(gone_earlier)
    young = with_cursor(app.stores, cutoff + timedelta(hours=1))
    lease = app.stores.archive.get_blob_client(leased).acquire_lease(lease_duration=-1)
    dry = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF, dry_run=True)
    assert (dry.blobs_deleted, dry.cursors_deleted) == (2, 3)
    report = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF)
    assert [skip["blob"] for skip in report.blobs_skipped] == [leased]
    assert report.blobs_deleted == 1 and report.cursors_deleted == 2
    assert {blob.name for blob in app.stores.archive.list_blobs()} == {leased, young}
    assert cursor_blobs(app.stores) == {leased, young}
    assert free not in cursor_blobs(app.stores)
    lease.release()
    again = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF)
    assert (again.blobs_deleted, again.cursors_deleted) == (1, 1)
    assert cursor_blobs(app.stores) == {young}


class TimesUpAfterFirstDelete:
    """The real archive container; the clock runs out once its first blob is deleted."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.late = False

    def clock(self) -> float:
        return 1e12 if self.late else 0.0

    def delete_blob(self, name: str) -> None:
        self._client.delete_blob(name)
        self.late = True

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._client, attribute)


def test_a_blob_not_reached_within_the_budget_keeps_its_cursor(archive_app: Runtime) -> None:
    app = archive_app
    cutoff = AS_OF - timedelta(days=365)
    first = with_cursor(app.stores, cutoff - timedelta(days=20))
    second = with_cursor(app.stores, cutoff - timedelta(days=10))
    archive = TimesUpAfterFirstDelete(app.stores.archive)
    stores = dataclasses.replace(app.stores, archive=cast(Any, archive))
    clock: Callable[[], float] = archive.clock
    stopped = enforce_retention(
        stores, RetentionPolicy(365), as_of=AS_OF, budget=Budget(DEFAULT_BUDGET_SECONDS, clock)
    )
    assert not stopped.complete and stopped.blobs_deleted == 1
    assert {blob.name for blob in app.stores.archive.list_blobs()} == {second}
    assert second in cursor_blobs(app.stores)
    finished = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF)
    assert finished.complete and finished.blobs_deleted == 1
    assert cursor_blobs(app.stores) == set() and first != second


# --- 5. every year 0001-9999, every setting bounded ---------------------------------------


def test_day_and_month_keys_are_fixed_width_in_every_year() -> None:
    moments = [datetime(year, 3, 1, tzinfo=UTC) for year in (1, 9, 99, 999, 1000, 2024, 9999)]
    days = [day_partition(moment) for moment in moments]
    assert days[0] == "00010301" and days[3] == "09990301"
    assert all(len(day) == 8 for day in days) and days == sorted(days)
    months = [month_bucket(moment) for moment in moments]
    assert months[3] == "099903" and months == sorted(months)
    first = datetime(1, 1, 1, tzinfo=UTC)
    assert days_between(first, first + timedelta(days=2)) == ["00010103", "00010102", "00010101"]


def canonical(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}.0000000Z"


def test_events_before_year_1000_expire(app: Runtime) -> None:
    from shared.core.normalize import normalize_input
    from tests.events import activity_event, envelope

    moments = [datetime(1, 1, 1, tzinfo=UTC), datetime(999, 3, 1, 10, tzinfo=UTC)]
    moments += [datetime(1500, 6, 1, tzinfo=UTC), AS_OF - timedelta(days=1)]
    events = [activity_event(n, time=canonical(m)) for n, m in enumerate(moments)]
    records, rejections = normalize_input(envelope(events), "test")
    assert rejections == [] and len(records) == 4
    app.writer.write(records)
    report = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF)
    assert report.records_deleted == 3 and report.records_kept == 1
    assert stored_keys(app) == {records[-1]["EventKey"]}
    assert report.lookups_deleted == 3 * 5
    assert sum(1 for _ in app.stores.lookup.list_entities(select=["RowKey"])) == 5


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
        ("0002-06-01", 0),
        ("9999-12-31T23:59:59", 3),
        ("9999-12-31T23:59:59-05:00", 3),  # after 9999-12-31 in UTC
    ],
)
def test_the_command_line_takes_any_as_of(
    app: Runtime, settings: Settings, as_of: str, deleted: int
) -> None:
    app.writer.write([record_at(AS_OF - timedelta(days=n * 100), n) for n in range(3)])
    result = retention_cli(settings, "--as-of", as_of, days="36500")
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    assert report["complete"] is True
    assert (report["records_deleted"], report["records_kept"]) == (deleted, 3 - deleted)


def test_the_longest_limits_at_the_first_dates_delete_nothing(archive_app: Runtime) -> None:
    app = archive_app
    app.writer.write([record_at(AS_OF, 1)])
    policy = RetentionPolicy(36500, {category: 36500 for category in CATEGORIES})
    for as_of in (datetime(1, 1, 1, tzinfo=UTC), datetime(50, 1, 1, tzinfo=UTC)):
        report = enforce_retention(app.stores, policy, as_of=as_of)
        assert report.complete and report.records_deleted == 0 and report.records_kept == 1


def test_an_out_of_range_retention_setting_stops_the_command_with_its_name(
    settings: Settings,
) -> None:
    result = retention_cli(settings, "--dry-run", days="1000000")
    assert result.returncode == 2
    assert names.RETENTION_DAYS in result.stderr and "36500" in result.stderr
    assert result.stderr.count("\n") == 1


# --- siblings: what one bad row or a killed run must not leave behind ------------------------


def test_a_row_whose_key_gives_no_time_is_kept_and_counted(app: Runtime) -> None:
    gone = record_at(AS_OF - timedelta(days=400), 1)
    app.writer.write([gone, record_at(AS_OF, 2)])
    for row_key in ("not-a-time", "0000000000000000000_x"):  # no number / out of range
        app.stores.records.create_entity(
            {"PartitionKey": "20240101", "RowKey": row_key, "CategoryValue": "Administrative"}
        )
    report = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF)
    assert report.complete and report.records_deleted == 1
    assert report.rows_unreadable == 2 and report.records_kept == 3


def test_an_oversize_body_left_by_a_killed_run_goes_on_the_next(
    app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "ORPHAN_AFTER", timedelta(0), raising=False)
    orphan = oversize_record(AS_OF - timedelta(days=500), 1, "Policy")
    kept = oversize_record(AS_OF - timedelta(days=500), 2, "Administrative")
    young = oversize_record(AS_OF - timedelta(days=10), 3, "Policy")
    app.writer.write([orphan, kept, young])
    bodies = {blob.name for blob in app.stores.oversize.list_blobs()}
    assert len(bodies) == 3
    (orphan_row,) = [
        row
        for row in app.stores.records.list_entities(select=["PartitionKey", "RowKey", "BodyBlob"])
        if row["RowKey"].endswith(orphan["EventKey"])
    ]
    app.stores.records.delete_entity(orphan_row["PartitionKey"], orphan_row["RowKey"])
    report = enforce_retention(
        app.stores, RetentionPolicy(365, {"Administrative": 2555}), as_of=AS_OF
    )
    assert report.oversize_blobs_deleted == 1
    assert {blob.name for blob in app.stores.oversize.list_blobs()} == bodies - {
        orphan_row["BodyBlob"]
    }
    with pytest.raises(ResourceNotFoundError):
        app.stores.oversize.get_blob_client(orphan_row["BodyBlob"]).get_blob_properties()
