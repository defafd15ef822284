"""A bad setting stops only what it configures.

What every path needs (storage, the hub, the archive container, the store prefix) is refused
when the app starts, by name. A function's own settings (retention's, the catch-up's, the seal,
forwarding's) stop only the functions that read them, named in the error of every run and
counted in `activitylog.settings.invalid`; forwarding's stop nothing: ingestion goes on without
it, and says why on every run. The command line still refuses any bad setting (exit 2).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import azure.functions as func
import orjson
import pytest
from azure.functions.timer import TimerRequest
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

from shared import settings as names
from shared.adapters import telemetry
from shared.bootstrap import runtime
from shared.core.normalize import normalize_input
from shared.settings import Settings, SettingsError, load_settings, read_settings
from shared.tools import cli
from shared.tools.local_host import Invocation, Retry, app_settings, event_hub_batch, registered
from tests.archive_view import archived_keys
from tests.events import SUBSCRIPTION, activity_event, envelope, jsonl
from tests.test_blobindex import pt1h_name

ROOT = Path(__file__).resolve().parents[1]


# --- at startup -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value", "starts"),
    [
        (names.RETENTION_DAYS, "abc", True),
        (names.RETENTION_CATEGORY_DAYS, "Administrative=7", True),
        (names.RETENTION_TIME_BUDGET_SECONDS, "0", True),
        (names.CATCHUP_LOOKBACK_HOURS, "a while", True),
        (names.SEAL_AFTER_MINUTES, "soon", True),
        (names.LOGS_INGESTION_ENDPOINT, "https://dce.example.com", True),  # half configured
        (names.STORE_PREFIX, "Bad_Prefix", False),
        (names.ARCHIVE_CONTAINER, "UPPER", False),
        (f"{names.STORAGE_CONNECTION}__blobServiceUri", "https://a.blob.core.windows.net", False),
        (names.EVENTHUB_NAME, "not a hub name!", False),
        (names.EVENTHUB_CONSUMER_GROUP, "-bad-", False),
    ],
)
def test_the_app_starts_unless_a_setting_every_path_needs_is_bad(
    setting: str, value: str, starts: bool
) -> None:
    started = subprocess.run(
        [sys.executable, "-c", "import function_app"],
        cwd=ROOT,
        env={**os.environ, setting: value},
        capture_output=True,
        text=True,
        check=False,
    )
    if starts:
        assert started.returncode == 0, started.stderr
        assert setting.split("__", maxsplit=1)[0] in started.stderr  # logged at startup, by name
    else:
        assert started.returncode != 0
        last = started.stderr.splitlines()[-1]
        assert "SettingsError" in last and setting.split("__", maxsplit=1)[0] in last


def test_read_settings_keeps_each_functions_bad_setting_for_the_function() -> None:
    env = {names.RETENTION_DAYS: "abc", names.SEAL_AFTER_MINUTES: "0"}
    settings = read_settings(env)
    assert settings.store_prefix == "activitylog"  # the common part is there
    assert set(settings.invalid) == {"retention", "seal"}
    for read in (
        settings.retention,
        lambda: settings.retention_days,
        lambda: settings.retention_dry_run,
    ):
        with pytest.raises(SettingsError, match=names.RETENTION_DAYS) as raised:
            read()
        assert raised.value.setting == names.RETENTION_DAYS
    with pytest.raises(SettingsError, match=names.SEAL_AFTER_MINUTES):
        _ = settings.catchup_hours
    assert settings.catchup_lookback_hours == 3  # a section that is fine reads as ever
    assert settings.logs_ingestion() is None
    with pytest.raises(SettingsError, match=names.RETENTION_DAYS):
        load_settings(env)  # the strict reading (command line, tests) refuses any bad setting


# --- while running --------------------------------------------------------------------------


@pytest.fixture
def metrics() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    tracer_provider, meter_provider = SdkTracerProvider(), SdkMeterProvider(metric_readers=[reader])
    telemetry.use_providers(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield reader
    finally:
        telemetry.reset()
        tracer_provider.shutdown()
        meter_provider.shutdown()


def invalid_counts(reader: InMemoryMetricReader) -> dict[tuple[str, str], int]:
    """`activitylog.settings.invalid` by (function, setting)."""
    data = reader.get_metrics_data()
    counts: dict[tuple[str, str], int] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == telemetry.SETTINGS_INVALID:
                    for point in metric.data.data_points:
                        where = dict(point.attributes or {})
                        key = (str(where["function"]), str(where["setting"]))
                        value = cast(NumberDataPoint, point).value  # a counter's points
                        counts[key] = counts.get(key, 0) + int(value)
    return counts


def base_settings(settings: Settings, **bad: str) -> dict[str, str]:
    return {
        names.STORAGE_CONNECTION: settings.storage_connection,
        names.STORE_PREFIX: settings.store_prefix,
        names.ARCHIVE_CONTAINER: f"{settings.store_prefix}-archive",
        **bad,
    }


def function_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Error lines of the functions' own loggers (not the app's one line at startup)."""
    return [
        record
        for record in caplog.records
        if record.name.startswith("functions.") and record.levelno == logging.ERROR
    ]


def deliver_batch(first: int) -> set[str]:
    """One Event Hub batch through the registered function; the EventKeys it holds."""
    body = envelope([activity_event(n) for n in range(first, first + 5)])
    registered("activity_events")(
        event_hub_batch([body], first_sequence=first), Invocation("activity_events", Retry(0, 8))
    )
    return {record["EventKey"] for record in normalize_input(body, "x")[0]}


def indexed_keys() -> set[str]:
    """EventKeys in the archive, each there once (a duplicate fails here)."""
    keys = archived_keys(runtime())
    assert len(keys) == len(set(keys)), "an event is archived twice"
    return set(keys)


def index_a_blob(number: int) -> set[str]:
    data = jsonl([activity_event(1000 + number)])
    hour = datetime(2024, 5, 1, number, tzinfo=UTC)
    blob = runtime().stores.archive.get_blob_client(pt1h_name(hour))
    blob.create_append_blob()
    blob.append_block(data)
    registered("archive_blob")(blob)
    return {record["EventKey"] for record in normalize_input(data, "x")[0]}


def test_a_bad_retention_setting_stops_the_retention_function_alone(
    settings: Settings, metrics: InMemoryMetricReader, caplog: pytest.LogCaptureFixture
) -> None:
    with app_settings(base_settings(settings, **{names.RETENTION_DAYS: "abc"})):
        runtime().stores.archive.create_container()
        delivered = deliver_batch(0)
        assert indexed_keys() == delivered  # Event Hub ingestion goes on
        answer = registered("activity")(
            func.HttpRequest(
                "GET", "/api/activity", params={"subscription": SUBSCRIPTION}, body=b""
            )
        )
        assert answer.status_code == 200  # and the query API answers
        assert len(orjson.loads(answer.get_body())["records"]) == len(delivered)
        archived = index_a_blob(1)
        assert indexed_keys() == delivered | archived  # and the archive path
        with caplog.at_level(logging.ERROR, logger="functions"):
            for _ in range(2):  # on every run, by name
                with pytest.raises(SettingsError, match=names.RETENTION_DAYS):
                    registered("retention")(TimerRequest(past_due=False))
        assert indexed_keys() == delivered | archived  # nothing deleted
    logged = [r for r in function_errors(caplog) if names.RETENTION_DAYS in r.getMessage()]
    assert [r.name for r in logged] == ["functions.retention_timer"] * 2
    assert invalid_counts(metrics) == {("retention", names.RETENTION_DAYS): 2}


def test_bad_forwarding_settings_leave_ingestion_running_without_forwarding(
    settings: Settings, metrics: InMemoryMetricReader, caplog: pytest.LogCaptureFixture
) -> None:
    half = {names.LOGS_INGESTION_ENDPOINT: "https://dce.example.ingest.monitor.azure.com"}
    with app_settings(base_settings(settings, **half)):
        runtime().stores.archive.create_container()
        with caplog.at_level(logging.ERROR):
            delivered = deliver_batch(0) | deliver_batch(10)
            archived = index_a_blob(1)
        assert indexed_keys() == delivered | archived
    logged = [r for r in function_errors(caplog) if names.LOGS_INGESTION_RULE_ID in r.getMessage()]
    assert len(logged) == 3  # every run says why it does not forward
    assert invalid_counts(metrics) == {
        ("activity_events", names.LOGS_INGESTION_RULE_ID): 2,
        ("archive_blob", names.LOGS_INGESTION_RULE_ID): 1,
    }


def test_a_bad_catch_up_setting_stops_the_catch_up_alone(
    settings: Settings, metrics: InMemoryMetricReader
) -> None:
    bad = {names.CATCHUP_LOOKBACK_HOURS: "0"}
    with app_settings(base_settings(settings, **bad)):
        runtime().stores.archive.create_container()
        with pytest.raises(SettingsError, match=names.CATCHUP_LOOKBACK_HOURS):
            registered("archive_catchup")(TimerRequest(past_due=False))
        indexed = deliver_batch(0) | index_a_blob(1)
        assert indexed_keys() == indexed
    assert invalid_counts(metrics) == {("archive_catchup", names.CATCHUP_LOOKBACK_HOURS): 1}


def test_a_bad_seal_stops_the_functions_that_seal_blobs_and_nothing_else(
    settings: Settings, metrics: InMemoryMetricReader
) -> None:
    with app_settings(base_settings(settings, **{names.SEAL_AFTER_MINUTES: "soon"})):
        runtime().stores.archive.create_container()
        with pytest.raises(SettingsError, match=names.SEAL_AFTER_MINUTES):
            registered("archive_catchup")(TimerRequest(past_due=False))
        with pytest.raises(SettingsError, match=names.SEAL_AFTER_MINUTES):
            index_a_blob(1)
        delivered = deliver_batch(0)
        assert indexed_keys() == delivered
        registered("retention")(TimerRequest(past_due=False))
    assert invalid_counts(metrics) == {
        ("archive_catchup", names.SEAL_AFTER_MINUTES): 1,
        ("archive_blob", names.SEAL_AFTER_MINUTES): 1,
    }


def test_the_command_line_still_refuses_any_bad_setting(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bodies = tmp_path / "bodies.json"
    bodies.write_bytes(envelope([activity_event(1)]))
    with app_settings(base_settings(settings, **{names.RETENTION_DAYS: "abc"})):
        assert cli.main(["ingest", str(bodies)]) == cli.EXIT_USAGE
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and names.RETENTION_DAYS in error
