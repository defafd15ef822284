"""Retention on Azurite, by whole units: what is past its age goes, nothing younger does."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from shared import settings as names
from shared.bootstrap import Runtime
from shared.core.archive_format import decode_lines
from shared.core.archive_keys import CODE_CLASSES, BlobRef, category_class, slot_partition
from shared.core.normalize import normalize_input
from shared.core.records import CATEGORIES, NormalizedRecord
from shared.core.retention_policy import RetentionPolicy, day_end, wholly_past
from shared.services.retention import Budget, enforce_retention
from shared.settings import Settings
from tests.events import SUBSCRIPTION, activity_event, envelope

AS_OF = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def record_at(
    moment: datetime, number: int, category: str = "Administrative", **fields: Any
) -> NormalizedRecord:
    event = activity_event(
        number,
        time=f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}.{moment.microsecond:06d}0Z",
        category=category,
        **fields,
    )
    (record,) = normalize_input(envelope([event]), "test")[0]
    return record


def write(app: Runtime, records: list[NormalizedRecord]) -> list[NormalizedRecord]:
    assert len(app.writer.write(records).indexed) == len(records)
    return records


def committed_keys(app: Runtime) -> set[str]:
    """Every EventKey in every committed archive blob: what any reader can still find."""
    keys = set()
    for blob in app.archive.blobs():
        ref = BlobRef.of_name(blob.name)
        if ref is None or app.reader.manifest(ref) is None:
            continue
        data = app.archive.read(blob.name)
        assert data is not None
        keys |= {orjson.loads(line)["EventKey"] for line in decode_lines(data)}
    return keys


def blob_names(app: Runtime) -> set[str]:
    return {blob.name for blob in app.archive.blobs()}


def index_rows(app: Runtime) -> set[tuple[str, str, str]]:
    return {
        (month, row["PartitionKey"], row["RowKey"])
        for month in app.tables.months()
        for row in app.tables.query(month, "PartitionKey ge @low", {"low": ""})
    }


def time_of(record: NormalizedRecord) -> datetime:
    return datetime.fromisoformat(record["TimeGenerated"][:26] + "+00:00")


def survivors(records: list[NormalizedRecord], policy: RetentionPolicy) -> set[str]:
    """What stays: a record goes when its whole day is past its category's limit."""
    keep = set()
    for record in records:
        cutoff = policy.class_cutoff(category_class(record["CategoryValue"]), AS_OF)
        end = day_end(time_of(record).date())
        if cutoff is None or end is None or end > cutoff:
            keep.add(record["EventKey"])
    return keep


def reported_category(record: NormalizedRecord) -> str:
    return record["CategoryValue"] if record["CategoryValue"] in CATEGORIES else "other"


def three_years(app: Runtime) -> list[NormalizedRecord]:
    """Records every 9 days for three years, every category and one unknown, a few a day."""
    records = []
    numbers = itertools.count()
    categories = [*CATEGORIES, "SomethingNew"]
    for days in range(0, 3 * 365, 9):
        for category in categories[(days // 9) % 9 : (days // 9) % 9 + 2]:
            for hour in (1, 13, 23):
                number = next(numbers)
                records.append(
                    record_at(AS_OF - timedelta(days=days, hours=hour), number, category)
                )
    return write(app, records)


def test_nothing_younger_goes_and_a_straddling_day_waits_for_the_next_run(app: Runtime) -> None:
    cutoff = AS_OF - timedelta(days=365)  # 2025-06-15T12:00: mid-day
    day_before = record_at(cutoff.replace(hour=0) - timedelta(microseconds=1), 1)
    straddling = [record_at(cutoff.replace(hour=0), 2), record_at(cutoff - timedelta(seconds=1), 3)]
    at_cutoff = record_at(cutoff, 4)
    next_day = record_at(cutoff.replace(hour=0) + timedelta(days=1), 5)
    write(app, [day_before, *straddling, at_cutoff, next_day])
    report = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF)
    assert (report.records_deleted, report.records_kept, report.days_deleted) == (1, 4, 1)
    assert committed_keys(app) == {r["EventKey"] for r in [*straddling, at_cutoff, next_day]}
    assert report.oldest_kept == cutoff.replace(hour=0).isoformat()
    assert report.tables_dropped == 0 and report.key_rows_deleted >= 1
    # Twelve hours on, the day is wholly past: it goes whole, to the day's last tick.
    later = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF + timedelta(hours=12))
    assert (later.records_deleted, later.records_kept) == (3, 1)
    assert committed_keys(app) == {next_day["EventKey"]}
    assert later.oldest_kept == next_day["TimeGenerated"][:19] + "+00:00"


def test_per_category_limits_across_three_years(app: Runtime) -> None:
    records = three_years(app)
    policy = RetentionPolicy(365, {"Administrative": 2555, "Security": 90})
    keep = survivors(records, policy)
    assert 0 < len(keep) < len(records)
    report = enforce_retention(app.stores, policy, as_of=AS_OF)
    assert report.complete and report.error is None
    assert committed_keys(app) == keep
    assert (report.records_deleted, report.records_kept) == (len(records) - len(keep), len(keep))
    deleted = [r for r in records if r["EventKey"] not in keep]
    assert report.deleted_by_category == dict(Counter(map(reported_category, deleted)))
    assert (
        "Administrative" not in report.deleted_by_category and "other" in report.deleted_by_category
    )
    assert report.archive_blobs_deleted > 0 and report.blobs_skipped == []
    assert report.orphans_swept == 0 and report.tables_dropped == 0  # Administrative: 7 years
    assert len(blob_names(app)) == report_blobs_left(app)
    again = enforce_retention(app.stores, policy, as_of=AS_OF)
    assert (again.records_deleted, again.days_deleted, again.records_kept) == (0, 0, len(keep))


def report_blobs_left(app: Runtime) -> int:
    """Blobs that are committed: every blob left has its manifest (no half-deleted day)."""
    return sum(
        1
        for blob in app.archive.blobs()
        if (ref := BlobRef.of_name(blob.name)) is not None and app.reader.manifest(ref)
    )


def test_a_month_past_every_limit_goes_as_one_table_drop(app: Runtime) -> None:
    old = [record_at(datetime(2024, 3, day, 10, tzinfo=UTC), day) for day in range(1, 32)]
    young = [record_at(AS_OF - timedelta(days=3), 100)]
    write(app, [*old, *young])
    assert app.tables.months() == ["202403", "202606"]
    report = enforce_retention(app.stores, RetentionPolicy(365, {"Policy": 730}), as_of=AS_OF)
    assert app.tables.months() == ["202606"]
    assert report.tables_dropped == 1 and report.key_rows_deleted == 0
    assert (report.records_deleted, report.days_deleted, report.archive_blobs_deleted) == (
        31,
        31,
        31,
    )
    assert committed_keys(app) == {young[0]["EventKey"]} and len(blob_names(app)) == 1
    # Folders, tables, manifests (one query), the drop, one batch delete.
    assert report.requests <= 20, report.requests


def _spread(days: list[date], count: int, numbers: Iterator[int]) -> list[NormalizedRecord]:
    """`count` records a day, a minute apart from midnight."""
    return [
        record_at(
            datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(minutes=n), next(numbers)
        )
        for d in days
        for n in range(count)
    ]


def test_requests_per_event_removed_are_few(app: Runtime) -> None:
    """Blobs of a few hundred records: a month dropped whole costs well under 0.02 requests
    an event; a day of a month that stays costs its manifests' and blobs' few requests and a
    transaction per claim slot holding its events."""
    numbers = itertools.count()
    dropped = _spread([date(2025, 2, day) for day in range(3, 9)], 300, numbers)
    write(app, dropped)
    report = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF)
    assert report.records_deleted == len(dropped) and report.tables_dropped == 1
    assert report.requests / report.records_deleted <= 0.02, report.requests
    by_day = _spread([date(2025, 6, day) for day in (1, 2)], 300, numbers)
    write(app, by_day)
    slots = {(r["TimeGenerated"][:10], slot_partition(r["TimeGenerated"])) for r in by_day}
    report = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF)
    assert report.records_deleted == len(by_day) and report.tables_dropped == 0
    assert report.key_rows_deleted == len(slots)  # one claim row a blob and slot
    assert report.requests <= len(slots) + 2 * 6 + 10, report.requests


def test_a_dry_run_changes_nothing_and_reports_what_a_real_run_does(app: Runtime) -> None:
    records = three_years(app)
    policy = RetentionPolicy(400, {"Policy": 90, "Administrative": 1000})
    blobs, rows = blob_names(app), index_rows(app)
    dry = enforce_retention(app.stores, policy, as_of=AS_OF, dry_run=True)
    assert blob_names(app) == blobs and index_rows(app) == rows
    assert committed_keys(app) == {r["EventKey"] for r in records}
    real = enforce_retention(app.stores, policy, as_of=AS_OF)
    assert dry.dry_run and not real.dry_run
    same = ["records_deleted", "records_kept", "archive_blobs_deleted", "days_deleted"]
    same += ["tables_dropped", "key_rows_deleted", "orphans_swept", "deleted_by_category"]
    for field in (*same, "oldest_kept"):
        assert getattr(dry, field) == getattr(real, field), field
    assert real.records_deleted > 0 and real.tables_dropped > 0 and real.key_rows_deleted > 0
    assert committed_keys(app) == survivors(records, policy)


def test_zero_keeps_forever(app: Runtime) -> None:
    records = three_years(app)
    report = enforce_retention(app.stores, RetentionPolicy(0), as_of=AS_OF)
    assert (report.records_deleted, report.records_kept) == (0, len(records))
    forever = RetentionPolicy(30, {"Security": 0})
    report = enforce_retention(app.stores, forever, as_of=AS_OF)
    assert report.tables_dropped == 0  # one class kept forever: no month is past every limit
    assert "Security" not in report.deleted_by_category and report.records_deleted > 0


def test_a_run_stopped_by_its_budget_is_finished_by_the_next(app: Runtime) -> None:
    records = three_years(app)
    policy = RetentionPolicy(365, {"Security": 90})
    ticks = itertools.count()
    stopped = enforce_retention(
        app.stores, policy, as_of=AS_OF, budget=Budget(30, lambda: float(next(ticks)))
    )
    assert not stopped.complete
    expected_gone = len(records) - len(survivors(records, policy))
    assert 0 < stopped.records_deleted < expected_gone
    resumed = enforce_retention(app.stores, policy, as_of=AS_OF)
    assert resumed.complete
    assert committed_keys(app) == survivors(records, policy)
    assert stopped.records_deleted + resumed.records_deleted == expected_gone


def claim_rows_past_retention(app: Runtime, policy: RetentionPolicy) -> list[str]:
    """Claim rows of a class's day that is wholly past that class's limit."""
    left = []
    for month in app.tables.months():
        bounds = {"low": "k", "high": "l"}
        for row in app.tables.query(
            month, "PartitionKey ge @low and PartitionKey lt @high", bounds
        ):
            partition, code = str(row["PartitionKey"]), row.get("C")
            if not str(row["RowKey"]).startswith("c") or code not in CODE_CLASSES:
                continue
            day = date(int(month[:4]), int(month[4:]), int(partition[1:3]))
            cutoff = policy.class_cutoff(CODE_CLASSES[str(code)], AS_OF)
            if wholly_past(day_end(day), cutoff):
                left.append(f"{month}/{partition}/{row['RowKey']}")
    return left


def test_a_run_stopped_at_any_step_leaves_no_claim_rows_of_expired_days(app: Runtime) -> None:
    """Stopped between a day's blobs and its claim rows (by its budget, or killed), a run
    left claim rows no later run came back for: `verify` then named their events unarchived
    for good (found from outside)."""
    policy = RetentionPolicy(365, {"Security": 730})  # Security keeps each month's table
    numbers = itertools.count()
    for stop_after in range(1, 16):
        start = AS_OF - timedelta(days=400 + 35 * stop_after)
        write(
            app,
            [
                record_at(start - timedelta(days=day, hours=hour), next(numbers), category)
                for day in range(3)
                for hour in (2, 14)
                for category in ("Administrative", "Security")
            ],
        )
        ticks = itertools.count()
        budget = Budget(stop_after, lambda ticks=ticks: float(next(ticks)))  # type: ignore[misc]
        enforce_retention(app.stores, policy, as_of=AS_OF, budget=budget)
        assert enforce_retention(app.stores, policy, as_of=AS_OF).complete
        assert claim_rows_past_retention(app, policy) == [], stop_after


def test_each_run_leaves_an_audit_record(app: Runtime) -> None:
    three_years(app)
    report = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF, dry_run=True)
    (row,) = list(
        app.stores.runs.query_entities("PartitionKey eq @pk", parameters={"pk": "retention"})
    )
    assert row["records_deleted"] == report.records_deleted > 0
    assert row["tables_dropped"] == report.tables_dropped and row["requests"] == report.requests
    assert row["dry_run"] is True and row["complete"] is True
    assert orjson.loads(row["deleted_by_category"]) == report.deleted_by_category


def _export_blob(app: Runtime, hour: datetime) -> str:
    name = (
        f"resourceId=/SUBSCRIPTIONS/{SUBSCRIPTION.upper()}/y={hour:%Y}/m={hour:%m}/d={hour:%d}"
        f"/h={hour:%H}/m=00/PT1H.json"
    )
    app.stores.archive.get_blob_client(name).upload_blob(b"{}\n", overwrite=True)
    return name


def test_export_blobs_go_by_the_hour_in_their_path_past_the_longest_limit(
    archive_app: Runtime,
) -> None:
    app = archive_app
    policy = RetentionPolicy(365, {"Administrative": 730})
    cutoff = AS_OF - timedelta(days=730)
    last_hour_out = (cutoff - timedelta(hours=1)).replace(minute=0)
    old = [_export_blob(app, last_hour_out), _export_blob(app, last_hour_out - timedelta(days=300))]
    kept = [
        _export_blob(app, cutoff.replace(minute=0)),  # the hour holding the cutoff
        _export_blob(app, AS_OF - timedelta(days=400)),
        _export_blob(app, AS_OF - timedelta(hours=2)),
    ]
    leased = _export_blob(app, last_hour_out - timedelta(days=1))
    app.stores.archive.get_blob_client(leased).acquire_lease(lease_duration=-1)
    dry = enforce_retention(app.stores, policy, as_of=AS_OF, dry_run=True)
    assert dry.blobs_deleted == 3
    report = enforce_retention(app.stores, policy, as_of=AS_OF)
    remaining = {blob.name for blob in app.stores.archive.list_blobs()}
    assert remaining == {*kept, leased} and not set(old) & remaining
    assert report.blobs_deleted == 2
    assert [skip["blob"] for skip in report.blobs_skipped] == [leased]


def test_the_command_line_runs_the_same_job(app: Runtime, settings: Settings) -> None:
    records = three_years(app)
    environment = {
        **os.environ,
        names.STORAGE_CONNECTION: settings.storage_connection,
        names.STORE_PREFIX: settings.store_prefix,
        names.RETENTION_DAYS: "365",
    }
    command = [sys.executable, "-m", "shared", "retention", "--json", "--as-of", AS_OF.isoformat()]
    dry = subprocess.run([*command, "--dry-run"], env=environment, capture_output=True, check=True)
    dry_report = orjson.loads(dry.stdout)
    assert dry_report["dry_run"] is True
    assert len(committed_keys(app)) == len(records)
    real = orjson.loads(
        subprocess.run(command, env=environment, capture_output=True, check=True).stdout
    )
    assert real["records_deleted"] == dry_report["records_deleted"] > 0
    assert real["records_kept"] == len(committed_keys(app))
    assert real["tables_dropped"] > 0 and real["requests"] > 0
    assert real["blobs_deleted"] == 0 and real["dry_run"] is False


def test_a_bad_retention_setting_stops_the_command_with_its_name(settings: Settings) -> None:
    environment = {
        **os.environ,
        names.STORAGE_CONNECTION: settings.storage_connection,
        names.RETENTION_DAYS: "30",
    }
    result = subprocess.run(
        [sys.executable, "-m", "shared", "retention", "--dry-run"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert names.RETENTION_DAYS in result.stderr
    assert result.stderr.count("\n") == 1


def test_day_and_month_ends_hold_at_the_calendar_s_edges() -> None:
    assert day_end(date(2024, 2, 29)) == datetime(2024, 3, 1, tzinfo=UTC)
    assert day_end(date.max) is None
    policy = RetentionPolicy(30, {"Security": 90})
    assert policy.class_cutoff("security", AS_OF) == AS_OF - timedelta(days=90)
    assert policy.class_cutoff("other", AS_OF) == AS_OF - timedelta(days=30)
    assert policy.longest_cutoff(AS_OF) == AS_OF - timedelta(days=90)
