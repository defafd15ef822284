"""Retention on Azurite: what is past its age goes, nothing younger does."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from shared import settings as names
from shared.bootstrap import Runtime
from shared.core.keys import RecordKey
from shared.core.normalize import normalize_input
from shared.core.query_spec import parse_query
from shared.core.records import CATEGORIES, NormalizedRecord
from shared.core.retention_policy import RetentionPolicy
from shared.services.query import run_query
from shared.services.retention import Budget, enforce_retention
from shared.settings import Settings
from tests.events import SUBSCRIPTION, activity_event, envelope

AS_OF = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
OTHER_SUBSCRIPTION = "0a1b2c3d-0000-4000-8000-000000000001"


def record_at(
    moment: datetime, number: int, category: str = "Administrative", **fields: Any
) -> NormalizedRecord:
    event = activity_event(
        number,
        time=moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z",
        category=category,
        **fields,
    )
    (record,) = normalize_input(envelope([event]), "test")[0]
    return record


def three_years(app: Runtime) -> list[NormalizedRecord]:
    """Records every 9 days for three years, every category, two subscriptions."""
    records = []
    numbers = itertools.count()
    for days in range(0, 3 * 365, 9):
        for category in CATEGORIES[(days // 9) % 8 : (days // 9) % 8 + 2]:
            number = next(numbers)
            subscription = SUBSCRIPTION if number % 3 else OTHER_SUBSCRIPTION
            records.append(
                record_at(
                    AS_OF - timedelta(days=days, hours=number % 24),
                    number,
                    category,
                    resourceId=f"/subscriptions/{subscription}/resourcegroups/rg/providers/p.q/r/{number}",
                )
            )
    app.writer.write(records)
    return records


def stored_keys(app: Runtime) -> set[str]:
    return {
        row["RowKey"].split("_", 1)[1]
        for row in app.stores.records.list_entities(select=["RowKey"])
    }


def lookup_rows(app: Runtime) -> int:
    return sum(1 for _ in app.stores.lookup.list_entities(select=["RowKey"]))


def expected_survivors(records: list[NormalizedRecord], policy: RetentionPolicy) -> set[str]:
    keep = set()
    for record in records:
        moment = datetime.fromisoformat(record["TimeGenerated"][:26] + "+00:00")
        if not policy.expired(record["CategoryValue"], moment, AS_OF):
            keep.add(record["EventKey"])
    return keep


def test_one_second_younger_stays_one_second_older_goes(app: Runtime) -> None:
    limit = AS_OF - timedelta(days=365)
    younger = record_at(limit + timedelta(seconds=1), 1)
    older = record_at(limit - timedelta(seconds=1), 2)
    exactly = record_at(limit, 3)
    app.writer.write([younger, older, exactly])
    report = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF)
    assert (report.records_deleted, report.records_kept) == (1, 2)
    assert stored_keys(app) == {younger["EventKey"], exactly["EventKey"]}
    assert report.oldest_kept == limit.isoformat()
    assert app.reader.get(RecordKey.of(older)) is None


def test_three_years_across_categories_with_overrides(app: Runtime) -> None:
    records = three_years(app)
    policy = RetentionPolicy(365, {"Administrative": 2555, "Security": 730})
    survivors = expected_survivors(records, policy)
    assert 0 < len(survivors) < len(records)
    report = enforce_retention(app.stores, policy, as_of=AS_OF)
    assert stored_keys(app) == survivors
    assert report.records_deleted == len(records) - len(survivors)
    assert report.records_kept == len(survivors)
    assert report.complete
    deleted = [r for r in records if r["EventKey"] not in survivors]
    assert report.deleted_by_category == dict(Counter(r["CategoryValue"] for r in deleted))
    assert "Administrative" not in report.deleted_by_category
    assert report.deleted_by_subscription == dict(Counter(r["SubscriptionId"] for r in deleted))
    # Lookups went with their records: no key query finds a deleted record.
    assert lookup_rows(app) == sum(
        sum(
            1
            for column in (
                "SubscriptionId",
                "ResourceId",
                "Caller",
                "CorrelationId",
                "OperationNameValue",
            )
            if r[column]
        )
        for r in records
        if r["EventKey"] in survivors
    )
    gone = deleted[0]
    query = parse_query(
        {"correlation_id": gone["CorrelationId"], "since": "2022-01-01", "until": "2027-01-01"},
        AS_OF,
    )
    page = run_query(query, records=app.stores.records, lookup=app.stores.lookup, reader=app.reader)
    assert page.records == []


def test_a_dry_run_deletes_nothing_and_reports_what_a_real_run_deletes(app: Runtime) -> None:
    records = three_years(app)
    policy = RetentionPolicy(400, {"Policy": 90})
    lookups_before = lookup_rows(app)
    dry = enforce_retention(app.stores, policy, as_of=AS_OF, dry_run=True)
    assert stored_keys(app) == {r["EventKey"] for r in records}
    assert lookup_rows(app) == lookups_before
    real = enforce_retention(app.stores, policy, as_of=AS_OF)
    assert dry.dry_run and not real.dry_run
    for field in (
        "records_deleted",
        "records_kept",
        "lookups_deleted",
        "deleted_by_category",
        "deleted_by_subscription",
    ):
        assert getattr(dry, field) == getattr(real, field), field
    assert lookup_rows(app) == lookups_before - real.lookups_deleted


def test_zero_keeps_forever(app: Runtime) -> None:
    records = three_years(app)
    report = enforce_retention(app.stores, RetentionPolicy(0), as_of=AS_OF)
    assert (report.records_deleted, report.records_kept) == (0, len(records))


def test_a_run_stopped_by_its_budget_is_finished_by_the_next(app: Runtime) -> None:
    records = three_years(app)
    policy = RetentionPolicy(365)
    ticks = itertools.count()
    stopped = enforce_retention(
        app.stores, policy, as_of=AS_OF, budget=Budget(8, lambda: float(next(ticks)))
    )
    assert not stopped.complete
    assert stopped.records_deleted < len(records) - len(expected_survivors(records, policy))
    resumed = enforce_retention(app.stores, policy, as_of=AS_OF)
    assert resumed.complete
    assert stored_keys(app) == expected_survivors(records, policy)
    assert stopped.records_deleted + resumed.records_deleted == len(records) - len(stored_keys(app))


def test_a_run_stops_within_its_budget_even_when_everything_is_kept(app: Runtime) -> None:
    records = three_years(app)
    ticks = itertools.count()
    clock = lambda: float(next(ticks))  # noqa: E731 - one second per look at the clock
    stopped = enforce_retention(
        app.stores, RetentionPolicy(0, {"Policy": 3650}), as_of=AS_OF, budget=Budget(20, clock),
    )  # fmt: skip
    assert not stopped.complete
    assert stopped.records_deleted == 0 and 0 < stopped.records_kept < len(records)
    whole = enforce_retention(app.stores, RetentionPolicy(0, {"Policy": 3650}), as_of=AS_OF)
    assert whole.complete and whole.records_kept == len(records)


def _archive_blob(app: Runtime, hour: datetime, subscription: str = SUBSCRIPTION) -> str:
    name = (
        f"resourceId=/SUBSCRIPTIONS/{subscription.upper()}/y={hour:%Y}/m={hour:%m}/d={hour:%d}"
        f"/h={hour:%H}/m=00/PT1H.json"
    )
    app.stores.archive.get_blob_client(name).upload_blob(b"{}\n", overwrite=True)
    return name


def test_archive_blobs_go_by_the_hour_in_their_path_past_the_longest_limit(
    archive_app: Runtime,
) -> None:
    app = archive_app
    policy = RetentionPolicy(365, {"Administrative": 730})
    cutoff = AS_OF - timedelta(days=730)
    last_hour_out = (cutoff - timedelta(hours=1)).replace(minute=0)
    straddling = cutoff.replace(minute=0)  # the hour holding the cutoff: partly younger
    old = [
        _archive_blob(app, last_hour_out),
        _archive_blob(app, last_hour_out - timedelta(days=300)),
    ]
    kept = [
        _archive_blob(app, straddling.replace(minute=0)),
        _archive_blob(app, AS_OF - timedelta(days=400)),
        _archive_blob(app, AS_OF - timedelta(hours=2)),
    ]
    leased = _archive_blob(app, last_hour_out - timedelta(days=1), OTHER_SUBSCRIPTION)
    app.stores.archive.get_blob_client(leased).acquire_lease(lease_duration=-1)
    dry = enforce_retention(app.stores, policy, as_of=AS_OF, dry_run=True)
    assert dry.blobs_deleted == 3
    report = enforce_retention(app.stores, policy, as_of=AS_OF)
    remaining = {blob.name for blob in app.stores.archive.list_blobs()}
    assert remaining == {*kept, leased}
    assert report.blobs_deleted == 2
    assert [skip["blob"] for skip in report.blobs_skipped] == [leased]
    assert not set(old) & remaining


def test_each_run_leaves_an_audit_record(app: Runtime) -> None:
    three_years(app)
    report = enforce_retention(app.stores, RetentionPolicy(365), as_of=AS_OF, dry_run=True)
    (row,) = list(
        app.stores.runs.query_entities("PartitionKey eq @pk", parameters={"pk": "retention"})
    )
    assert row["records_deleted"] == report.records_deleted
    assert row["dry_run"] is True
    assert orjson.loads(row["deleted_by_category"]) == report.deleted_by_category


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
    assert len(stored_keys(app)) == len(records)
    real = orjson.loads(
        subprocess.run(command, env=environment, capture_output=True, check=True).stdout
    )
    assert real["records_deleted"] == dry_report["records_deleted"] > 0
    assert real["records_kept"] == len(stored_keys(app))
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
