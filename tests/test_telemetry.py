"""Telemetry: one span per invocation and the activitylog.* metrics, read back in memory.

The registered functions run on Azurite with an OpenTelemetry SDK installed through
`telemetry.use_providers` (an InMemoryMetricReader and an InMemorySpanExporter). Two tests run
the app in a child process: without APPLICATIONINSIGHTS_CONNECTION_STRING (nothing configured,
the distro never imported) and with it, against a loopback ingestion endpoint (what the
exporter sends to Application Insights).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from unittest.mock import MagicMock

import azure.functions as func
import orjson
import pytest
from azure.functions.timer import TimerRequest
from azure.storage.blob import ContainerClient
from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, TracerProvider

from shared import settings as names
from shared.adapters import telemetry
from shared.adapters.blobs import ArchiveBlob
from shared.bootstrap import Runtime, runtime
from shared.services.delivery import EventBody, RetryableDeliveryError, deliver
from shared.settings import Settings
from shared.tools.local_host import Invocation, Retry, app_settings, event_hub_batch, registered
from tests.archive_view import archived_keys, unreachable_writer
from tests.events import BASE_TIME, SUBSCRIPTION, activity_event, envelope, jsonl
from tests.logs_ingestion_server import LogsIngestionServer
from tests.test_eventhub import RULE_ID, STREAM, _credential_for_tests

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Recorded:
    """What the in-memory SDK saw: metric points and finished spans."""

    reader: InMemoryMetricReader
    exporter: InMemorySpanExporter

    def _points(self, name: str, attributes: dict[str, Any]) -> list[Any]:
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        if attributes.items() <= dict(point.attributes or {}).items():
                            found.append(point)
        return found

    def total(self, name: str, **attributes: Any) -> float:
        """A counter's total over the points with these attributes (0 when never added to)."""
        return float(sum(point.value for point in self._points(name, attributes)))

    def histogram(self, name: str, **attributes: Any) -> HistogramDataPoint | None:
        points = self._points(name, attributes)
        assert len(points) <= 1, points
        return cast(HistogramDataPoint, points[0]) if points else None

    def names(self) -> set[str]:
        data = self.reader.get_metrics_data()
        return {
            metric.name
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture(autouse=True)
def no_application_insights(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never export: the setting is absent unless a test puts it in a child's environment.
    monkeypatch.delenv(names.APPINSIGHTS_CONNECTION, raising=False)


@pytest.fixture
def sdk() -> Iterator[Recorded]:
    """An OpenTelemetry SDK in memory, installed through telemetry's injection point."""
    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    tracer_provider = SdkTracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = SdkMeterProvider(metric_readers=[reader])
    telemetry.use_providers(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield Recorded(reader, exporter)
    finally:
        telemetry.reset()
        tracer_provider.shutdown()
        meter_provider.shutdown()


@pytest.fixture
def app_env(settings: Settings) -> Iterator[dict[str, str]]:
    """The function app's settings on this test's store, with an archive container of its own."""
    values = {
        names.STORAGE_CONNECTION: settings.storage_connection,
        names.STORE_PREFIX: settings.store_prefix,
        names.ARCHIVE_CONTAINER: f"{settings.store_prefix}-archive",
    }
    with app_settings(values):
        runtime().stores.archive.create_container()
        yield values


class SpanOfLogs(logging.Handler):
    """Keeps each `functions.*` log record with the span that was current when it was logged."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[logging.LogRecord, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record, trace.get_current_span().get_span_context().span_id))


@pytest.fixture
def function_logs() -> Iterator[SpanOfLogs]:
    handler = SpanOfLogs()
    logger = logging.getLogger("functions")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # as the Functions worker's root logger is
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def attributes_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def seconds_since(moment: datetime) -> float:
    return (datetime.now(UTC) - moment).total_seconds()


def test_the_workbook_charts_exactly_the_metrics_the_app_records() -> None:
    workbook = (ROOT / "infra" / "workbook" / "activitylog.workbook.json").read_text()
    queries = [
        item["content"]["query"]
        for item in json.loads(workbook)["items"]
        if "customMetrics" in item.get("content", {}).get("query", "")
    ]
    charted = {name for query in queries for name in re.findall(r"'(activitylog\.[a-z.]+)'", query)}
    assert charted == set(telemetry.METRICS)


def test_the_host_exports_with_opentelemetry_and_the_distro_is_pinned() -> None:
    assert json.loads((ROOT / "host.json").read_text())["telemetryMode"] == "OpenTelemetry"
    pins = (ROOT / "requirements.txt").read_text().splitlines()
    assert any(re.fullmatch(r"azure-monitor-opentelemetry==[\d.]+", line) for line in pins)


# --- Event Hub --------------------------------------------------------------------------------


def test_an_event_hub_invocation_records_its_counts_and_one_span(
    app_env: dict[str, str], sdk: Recorded, function_logs: SpanOfLogs
) -> None:
    good = [activity_event(n) for n in range(10)]
    bodies = [
        envelope(good[:5]),
        b"this is not json",
        envelope([*good[5:], {"no": "time"}]),
        orjson.dumps(good[0]),  # the same event again: a duplicate
    ]
    earliest_lag = seconds_since(BASE_TIME)
    registered("activity_events")(
        event_hub_batch(bodies, partition="3"), Invocation("activity_events")
    )
    latest_lag = seconds_since(BASE_TIME)

    path = {"path": telemetry.EVENTHUB}
    assert sdk.total(telemetry.RECORDS_NORMALIZED, **path) == 11
    assert sdk.total(telemetry.RECORDS_REJECTED, **path) == 2
    assert sdk.total(telemetry.RECORDS_INDEXED, **path) == 10
    assert sdk.total(telemetry.RECORDS_DEADLETTERED, **path, kind="rejected") == 2
    assert sdk.total(telemetry.RECORDS_DEADLETTERED) == 2
    assert sdk.total(telemetry.RECORDS_FORWARDED) == 0  # no Log Analytics configured
    lag = sdk.histogram(telemetry.LAG_SECONDS, **path)
    assert lag is not None and lag.count == 1
    assert earliest_lag <= lag.sum <= latest_lag  # now minus the oldest event's time
    assert sdk.names() <= set(telemetry.METRICS)

    (span,) = sdk.spans()
    assert span.name == "activity_events"
    assert span.kind == SpanKind.INTERNAL
    assert span.status.status_code == StatusCode.UNSET
    assert attributes_of(span) | {"activitylog.lag_seconds": None} == {
        "activitylog.function": "activity_events",
        "activitylog.path": "eventhub",
        "activitylog.partition": "3",
        "activitylog.bodies": 4,
        "activitylog.events": 13,
        "activitylog.indexed": 10,
        "activitylog.duplicates": 1,
        "activitylog.deadlettered": 2,
        "activitylog.forwarded": 0,
        "activitylog.not_forwarded": 0,
        "activitylog.lag_seconds": None,
    }
    assert attributes_of(span)["activitylog.lag_seconds"] == pytest.approx(lag.sum)

    # The report is logged with its structured dimensions, inside the span.
    (record, span_id) = function_logs.records[-1]
    fields = record.__dict__
    assert (fields["partition"], fields["events"], fields["indexed"]) == ("3", 13, 10)
    assert (fields["duplicates"], fields["deadlettered"]) == (1, 2)
    assert fields["rejection_reasons"] == {"not JSON": 1, "no time": 1}
    assert span.context is not None and span_id == span.context.span_id


def test_a_redelivered_batch_indexes_nothing_and_records_no_lag(
    app_env: dict[str, str], sdk: Recorded
) -> None:
    batch = event_hub_batch([envelope([activity_event(n) for n in range(6)])])
    function = registered("activity_events")
    function(batch, Invocation("activity_events"))
    function(batch, Invocation("activity_events"))  # redelivered
    assert sdk.total(telemetry.RECORDS_NORMALIZED) == 12
    assert sdk.total(telemetry.RECORDS_INDEXED) == 6
    lag = sdk.histogram(telemetry.LAG_SECONDS)
    assert lag is not None and lag.count == 1  # the second invocation indexed nothing
    assert [attributes_of(s)["activitylog.duplicates"] for s in sdk.spans()] == [0, 6]


def test_retries_and_the_last_attempt_with_the_index_down(
    settings: Settings, app_env: dict[str, str], sdk: Recorded
) -> None:
    bodies = [envelope([activity_event(n) for n in range(3)])]
    function = registered("activity_events")
    object.__setattr__(runtime(), "writer", unreachable_writer(settings))
    with pytest.raises(RetryableDeliveryError):
        function(event_hub_batch(bodies), Invocation("activity_events", Retry(2, 8)))
    function(event_hub_batch(bodies), Invocation("activity_events", Retry(8, 8)))

    failed, last = sdk.spans()
    assert failed.status.status_code == StatusCode.ERROR
    (event,) = [e for e in failed.events if e.name == "exception"]
    assert str((event.attributes or {})["exception.type"]).endswith("RetryableDeliveryError")
    assert last.status.status_code == StatusCode.UNSET
    assert attributes_of(last)["activitylog.deadlettered"] == 3
    # Only the attempt that returned reports counts: three records, undelivered.
    assert sdk.total(telemetry.RECORDS_NORMALIZED) == 3
    assert sdk.total(telemetry.RECORDS_INDEXED) == 0
    assert sdk.total(telemetry.RECORDS_DEADLETTERED, kind="undelivered") == 3
    assert sdk.total(telemetry.RECORDS_REJECTED) == 0
    assert sdk.histogram(telemetry.LAG_SECONDS) is None


def test_records_forwarded_to_log_analytics_and_those_it_refused(
    settings: Settings, sdk: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    _credential_for_tests(monkeypatch)
    huge = activity_event(0, properties={"statusCode": "OK", "big": "z" * 1_100_000})
    events = [huge, *[activity_event(n) for n in range(1, 6)]]
    with (
        LogsIngestionServer(RULE_ID, STREAM) as logs_ingestion,
        app_settings(
            {
                names.STORAGE_CONNECTION: settings.storage_connection,
                names.STORE_PREFIX: settings.store_prefix,
                names.LOGS_INGESTION_ENDPOINT: logs_ingestion.endpoint,
                names.LOGS_INGESTION_RULE_ID: RULE_ID,
                names.LOGS_INGESTION_STREAM: STREAM,
            }
        ),
    ):
        registered("activity_events")(
            event_hub_batch([envelope(events)]), Invocation("activity_events", Retry(0, 8))
        )
    assert len(logs_ingestion.records) == 5
    assert sdk.total(telemetry.RECORDS_INDEXED) == 6
    assert sdk.total(telemetry.RECORDS_FORWARDED, path="eventhub") == 5
    assert sdk.total(telemetry.RECORDS_DEADLETTERED, kind="not-forwarded") == 1
    (span,) = sdk.spans()
    assert attributes_of(span)["activitylog.not_forwarded"] == 1


# --- archive ----------------------------------------------------------------------------------


def pt1h_name(hour: datetime, subscription: str = SUBSCRIPTION) -> str:
    return (
        f"resourceId=/SUBSCRIPTIONS/{subscription.upper()}/y={hour:%Y}/m={hour:%m}/d={hour:%d}"
        f"/h={hour:%H}/m=00/PT1H.json"
    )


def archive() -> ContainerClient:
    return runtime().stores.archive


def test_a_blob_trigger_invocation_records_bytes_read_and_its_counts(
    app_env: dict[str, str], sdk: Recorded, function_logs: SpanOfLogs
) -> None:
    name = pt1h_name(datetime(2024, 5, 1, 10, tzinfo=UTC))
    data = jsonl([activity_event(n) for n in range(7)]) + b"not an event\n"
    blob = archive().get_blob_client(name)
    blob.create_append_blob()
    blob.append_block(data)
    registered("archive_blob")(blob)

    path = {"path": telemetry.BLOB}
    assert sdk.total(telemetry.BYTES_READ, **path) == len(data)
    assert sdk.total(telemetry.RECORDS_NORMALIZED, **path) == 7
    assert sdk.total(telemetry.RECORDS_INDEXED, **path) == 7
    assert sdk.total(telemetry.RECORDS_REJECTED, **path) == 1
    assert sdk.total(telemetry.RECORDS_DEADLETTERED, **path, kind="rejected") == 1
    lag = sdk.histogram(telemetry.LAG_SECONDS, **path)
    assert lag is not None and lag.count == 1
    assert sdk.histogram(telemetry.BLOBS_BEHIND) is None  # catch-up's measure only
    (span,) = sdk.spans()
    assert span.name == "archive_blob"
    attributes = attributes_of(span)
    assert attributes["activitylog.blob"] == name
    assert attributes["activitylog.bytes_read"] == len(data)
    assert (attributes["activitylog.behind"], attributes["activitylog.failed"]) == (1, 0)
    (record, _) = function_logs.records[-1]
    assert (record.__dict__["blob"], record.__dict__["indexed"]) == (name, 7)

    registered("archive_blob")(blob)  # announced again, nothing new: nothing read
    assert sdk.total(telemetry.BYTES_READ) == len(data)
    assert attributes_of(sdk.spans()[-1])["activitylog.behind"] == 0


def test_catch_up_records_the_blobs_behind_and_what_it_read(
    app_env: dict[str, str], sdk: Recorded
) -> None:
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    subscriptions = [f"{n}f3c2a51-1d2e-4b8a-9c7d-0e1f2a3b4c5d" for n in (1, 2, 3)]
    done, new, growing = (archive().get_blob_client(pt1h_name(hour, s)) for s in subscriptions)
    for blob in (done, new, growing):
        blob.create_append_blob()
    done.append_block(jsonl([activity_event(n) for n in range(4)]))
    growing.append_block(jsonl([activity_event(n) for n in range(10, 13)]))
    indexer = runtime().blob_indexer
    for blob in (done, growing):  # indexed before, outside any function: no telemetry
        indexer.index(ArchiveBlob(archive(), blob.blob_name))
    new_data = jsonl([activity_event(n) for n in range(20, 25)])
    new.append_block(new_data)
    appended = jsonl([activity_event(n) for n in range(13, 15)])
    growing.append_block(appended)

    registered("archive_catchup")(TimerRequest(past_due=False))

    path = {"path": telemetry.CATCHUP}
    behind = sdk.histogram(telemetry.BLOBS_BEHIND, **path)
    assert behind is not None and (behind.count, behind.sum) == (1, 2)
    assert sdk.total(telemetry.BYTES_READ, **path) == len(new_data) + len(appended)
    assert sdk.total(telemetry.RECORDS_INDEXED, **path) == 7
    assert sdk.total(telemetry.RECORDS_REJECTED) == 0
    (span,) = sdk.spans()
    assert span.name == "archive_catchup"
    attributes = attributes_of(span)
    assert (attributes["activitylog.blobs"], attributes["activitylog.behind"]) == (3, 2)
    assert attributes["activitylog.past_due"] is False

    registered("archive_catchup")(TimerRequest(past_due=False))  # nothing new: none behind
    behind = sdk.histogram(telemetry.BLOBS_BEHIND, **path)
    assert behind is not None and (behind.count, behind.sum, behind.max) == (2, 2, 2)


# --- retention and query ----------------------------------------------------------------------


def test_a_retention_run_records_what_it_deleted_and_kept(
    app_env: dict[str, str], sdk: Recorded
) -> None:
    recent = datetime.now(UTC) - timedelta(days=1)
    events = [activity_event(n) for n in range(4)] + [
        activity_event(100 + n, time=(recent + timedelta(minutes=n)).isoformat()) for n in range(3)
    ]
    app: Runtime = runtime()
    deliver([EventBody(envelope(events))], writer=app.writer, deadletters=app.deadletters)
    with app_settings({names.RETENTION_DAYS: "365"}):  # 2024's events are older than that
        registered("retention")(TimerRequest(past_due=True))

    assert sdk.total(telemetry.RETENTION_DELETED, dry_run=False) == 4
    kept = sdk.histogram(telemetry.RETENTION_KEPT, dry_run=False)
    assert kept is not None and (kept.count, kept.sum) == (1, 3)
    (span,) = sdk.spans()
    attributes = attributes_of(span)
    assert (span.name, attributes["activitylog.path"]) == ("retention", "retention")
    assert (attributes["activitylog.records_deleted"], attributes["activitylog.records_kept"]) == (
        4,
        3,
    )
    assert attributes["activitylog.past_due"] is True


def test_a_query_is_one_span(app_env: dict[str, str], sdk: Recorded) -> None:
    function = registered("activity")
    ok = function(func.HttpRequest("GET", "/api/activity", params={"since": "7d"}, body=b""))
    bad = function(func.HttpRequest("GET", "/api/activity", params={"since": "soon"}, body=b""))
    assert (ok.status_code, bad.status_code) == (200, 400)
    assert [(s.name, attributes_of(s)["activitylog.path"]) for s in sdk.spans()] == [
        ("activity", "query"),
        ("activity", "query"),
    ]
    assert sdk.names() == set()


# --- failures ---------------------------------------------------------------------------------


def _explode(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("telemetry is down")


def _broken_providers(where: str) -> tuple[TracerProvider, MeterProvider]:
    tracer_provider, meter_provider = MagicMock(), MagicMock()
    if where == "providers":
        tracer_provider.get_tracer.side_effect = _explode
        meter_provider.get_meter.side_effect = _explode
    else:  # every span and instrument call fails
        span = tracer_provider.get_tracer.return_value.start_span.return_value
        for method in ("set_attribute", "set_status", "record_exception", "end"):
            getattr(span, method).side_effect = _explode
        meter = meter_provider.get_meter.return_value
        meter.create_counter.return_value.add.side_effect = _explode
        meter.create_histogram.return_value.record.side_effect = _explode
    return cast(TracerProvider, tracer_provider), cast(MeterProvider, meter_provider)


@pytest.mark.parametrize("where", ["providers", "spans and instruments"])
def test_telemetry_failures_cannot_break_a_handler(
    app_env: dict[str, str], function_logs: SpanOfLogs, where: str
) -> None:
    tracer_provider, meter_provider = _broken_providers(where)
    telemetry.use_providers(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        registered("activity_events")(
            event_hub_batch([envelope([activity_event(n) for n in range(5)])]),
            Invocation("activity_events"),
        )
        # The body's own exception comes out unchanged, whatever telemetry does.
        with pytest.raises(ZeroDivisionError), telemetry.invocation("x", path="test"):
            _ = 1 / 0
    finally:
        telemetry.reset()
    assert len(archived_keys(runtime())) == 5
    (record, _) = function_logs.records[-1]
    assert (record.__dict__["events"], record.__dict__["indexed"]) == (5, 5)


# --- the process, configured or not ------------------------------------------------------------

# Drives the Event Hub function in a fresh process (a worker's cold start), then reports.
CHILD = """
import json, logging, sys
from opentelemetry import _logs, metrics, trace
from shared.adapters import telemetry
from shared.tools.local_host import Invocation, event_hub_batch, registered
from tests.events import activity_event, envelope

logging.getLogger().setLevel(logging.INFO)  # as the Functions worker's root logger is
bodies = [envelope([activity_event(n) for n in range(8)]), b"not json"]
registered("activity_events")(event_hub_batch(bodies, partition="5"), Invocation("x"))
logging.getLogger("azure.storage.blob").info("an SDK's information")
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").warning("HTTP retried")
logging.getLogger("azure.identity").warning("an SDK's warning")
for provider in (
    metrics.get_meter_provider(), trace.get_tracer_provider(), _logs.get_logger_provider()
):
    getattr(provider, "force_flush", lambda: None)()
print(json.dumps({
    "configured": telemetry.configure(),
    "distro_imported": "azure.monitor.opentelemetry" in sys.modules,
    "tracer_provider": type(trace.get_tracer_provider()).__name__,
    "meter_provider": type(metrics.get_meter_provider()).__name__,
}))
"""


def run_child(settings: Settings, tmp_path: Path, **environment: str) -> dict[str, Any]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key != names.APPINSIGHTS_CONNECTION and not key.startswith("OTEL_")
    }
    env.update(
        {
            names.STORAGE_CONNECTION: settings.storage_connection,
            names.STORE_PREFIX: settings.store_prefix,
            "TMPDIR": str(tmp_path),  # the exporter's retry files, if any
            **environment,
        }
    )
    result = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-4000:]
    return cast(dict[str, Any], json.loads(result.stdout.decode().splitlines()[-1]))


def test_without_the_setting_nothing_is_configured_nor_imported(
    settings: Settings, tmp_path: Path
) -> None:
    child = run_child(settings, tmp_path)
    assert child == {
        "configured": False,
        "distro_imported": False,
        "tracer_provider": "ProxyTracerProvider",  # the OpenTelemetry API's no-op defaults
        "meter_provider": "_ProxyMeterProvider",
    }


def test_a_setting_that_cannot_be_used_leaves_telemetry_off_and_the_handler_working(
    settings: Settings, tmp_path: Path
) -> None:
    child = run_child(settings, tmp_path, **{names.APPINSIGHTS_CONNECTION: "not a connection"})
    assert child == {
        "configured": False,
        "distro_imported": True,
        "tracer_provider": "ProxyTracerProvider",
        "meter_provider": "_ProxyMeterProvider",
    }


class IngestionEndpoint(ThreadingHTTPServer):
    """A loopback Application Insights ingestion endpoint: keeps every telemetry item."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Track)
        self.items: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def connection_string(self) -> str:
        return (
            "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
            f"IngestionEndpoint=http://127.0.0.1:{self.server_address[1]}/"
        )

    def close(self) -> None:
        self.shutdown()
        self.server_close()

    def of_type(self, base_type: str) -> list[dict[str, Any]]:
        return [item for item in self.items if item["data"]["baseType"] == base_type]


class _Track(BaseHTTPRequestHandler):
    server: IngestionEndpoint

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        items = json.loads(body)
        self.server.paths.append(self.path)
        self.server.items.extend(items)
        answer = json.dumps(
            {"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_with_the_setting_the_process_exports_to_application_insights(
    settings: Settings, tmp_path: Path
) -> None:
    endpoint = IngestionEndpoint()
    try:
        child = run_child(
            settings,
            tmp_path,
            **{
                names.APPINSIGHTS_CONNECTION: endpoint.connection_string,
                # Nothing but the loopback endpoint: no SDK self-telemetry, no remote config.
                "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
                "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true",
                "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
            },
        )
    finally:
        endpoint.close()
    assert child["configured"] and child["distro_imported"]
    assert (child["tracer_provider"], child["meter_provider"]) == (
        "TracerProvider",
        "MeterProvider",
    )
    assert set(endpoint.paths) == {"/v2.1/track"}

    metrics: dict[tuple[str, str], float] = {}
    for item in endpoint.of_type("MetricData"):
        data = item["data"]["baseData"]
        (point,) = data["metrics"]
        key = (point["name"], json.dumps(data.get("properties", {}), sort_keys=True))
        metrics[key] = metrics.get(key, 0) + point["value"]
    eventhub = json.dumps({"path": "eventhub"})
    assert metrics[(telemetry.RECORDS_INDEXED, eventhub)] == 8
    assert metrics[(telemetry.RECORDS_NORMALIZED, eventhub)] == 8
    assert metrics[(telemetry.RECORDS_REJECTED, eventhub)] == 1
    rejected = json.dumps({"kind": "rejected", "path": "eventhub"}, sort_keys=True)
    assert metrics[(telemetry.RECORDS_DEADLETTERED, rejected)] == 1
    assert (telemetry.LAG_SECONDS, eventhub) in metrics

    (span,) = [
        item
        for item in endpoint.of_type("RemoteDependencyData")
        if item["data"]["baseData"]["name"] == "activity_events"
    ]
    properties = span["data"]["baseData"]["properties"]
    assert (properties["activitylog.partition"], properties["activitylog.indexed"]) == ("5", "8")
    (log,) = [
        item
        for item in endpoint.of_type("MessageData")
        if item["data"]["baseData"]["message"] == "event hub batch delivered"
    ]
    dimensions = log["data"]["baseData"]["properties"]
    assert (dimensions["partition"], dimensions["indexed"], dimensions["deadlettered"]) == (
        "5",
        "8",
        "1",
    )
    # The log belongs to the invocation's span.
    assert log["tags"]["ai.operation.id"] == span["tags"]["ai.operation.id"]
    assert log["tags"]["ai.operation.parentId"] == span["data"]["baseData"]["id"]
    # The app's loggers at every level; the others' warnings and errors only, and not the
    # Azure SDK's HTTP pipeline.
    by_logger = {
        (item["data"]["baseData"]["properties"]["logger_name"], item["data"]["baseData"]["message"])
        for item in endpoint.of_type("MessageData")
    }
    assert (
        "shared.adapters.telemetry",
        "telemetry: exporting to Application Insights",
    ) in by_logger
    others = {
        message for logger, message in by_logger if not logger.startswith(("functions.", "shared."))
    }
    assert others == {"an SDK's warning"}


def test_when_the_worker_exports_the_app_does_not_configure_the_distro_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Learn, "Use OpenTelemetry with Azure Functions" (Python): with
    PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true the worker configures the exporter; the
    app must not configure it a second time, only filter what the worker's log handler sends."""
    import azure.monitor.opentelemetry as distro

    from shared.adapters import azure_monitor

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(distro, "configure_azure_monitor", lambda **options: calls.append(options))
    monkeypatch.setenv(azure_monitor.WORKER_EXPORTS, "true")

    class WorkersHandler(logging.Handler):  # what the worker's distro put on the root logger
        pass

    WorkersHandler.__module__ = "opentelemetry.sdk._logs._internal"
    handler = WorkersHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        azure_monitor.configure_azure_monitor("InstrumentationKey=00000000-0000-0000-0000-0000")
    finally:
        root.removeHandler(handler)
    assert calls == []
    noisy = logging.LogRecord("azure.core.pipeline.policies", logging.INFO, "", 0, "GET", (), None)
    mine = logging.LogRecord("shared.services.delivery", logging.INFO, "", 0, "done", (), None)
    assert (handler.filter(noisy), bool(handler.filter(mine))) == (False, True)
