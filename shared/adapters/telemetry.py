"""Telemetry: a span per invocation and the `activitylog.*` metrics, through OpenTelemetry.

With APPLICATIONINSIGHTS_CONNECTION_STRING set, the first invocation of the worker process
configures `azure-monitor-opentelemetry` (once: it sets the process's tracer, meter and logger
providers and exports to Application Insights). Without it nothing is configured and that
package is never imported (importing and configuring it adds ~0.17 s to a cold start): the
tracer and meter are the OpenTelemetry API's defaults, which record nothing.

The handlers wrap each invocation in `invocation(...)` and hand their report to one
`record_*` function; nothing here raises into a handler. The metric names (below, with their
attributes) are those the workbook charts (infra/workbook/activitylog.workbook.json), and
SETTINGS_INVALID, for an alert. `path` is eventhub, blob (the blob trigger) or catchup;
counters are never incremented by 0.
Logs keep their structured dimensions: the handlers log their report with `extra=`, which the
exporter sends as custom dimensions (which loggers: shared.adapters.azure_monitor, where the
exporter is configured).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from shared.adapters.deadletters import NOT_FORWARDED, REJECTED, UNDELIVERED
from shared.settings import APPINSIGHTS_CONNECTION

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from shared.services.compaction import CompactionReport
    from shared.services.report import BlobReport, DeliveryReport, Report
    from shared.services.retention_audit import RetentionReport

log = logging.getLogger(__name__)

SCOPE = "activitylog"  # instrumentation scope of the tracer and the meter
# Paths, the `path` attribute.
EVENTHUB = "eventhub"
BLOB = "blob"
CATCHUP = "catchup"
RETENTION = "retention"
COMPACTION = "compaction"
QUERY = "query"

RECORDS_NORMALIZED = "activitylog.records.normalized"  # counter, path: events that became records
RECORDS_REJECTED = "activitylog.records.rejected"  # counter, path: events that cannot
RECORDS_DEADLETTERED = "activitylog.records.deadlettered"  # counter, path, kind
RECORDS_INDEXED = "activitylog.records.indexed"  # counter, path: records newly archived
RECORDS_FORWARDED = "activitylog.records.forwarded"  # counter, path: accepted by LA
BYTES_READ = "activitylog.bytes.read"  # counter, path: archive bytes read
LAG_SECONDS = "activitylog.lag.seconds"  # histogram, path: now - oldest TimeGenerated
BLOBS_BEHIND = "activitylog.blobs.behind"  # histogram, path: blobs with bytes not yet indexed
RETENTION_DELETED = "activitylog.retention.deleted"  # counter, dry_run: records deleted
RETENTION_KEPT = "activitylog.retention.kept"  # histogram, dry_run: records kept, one per run
METRICS = (
    RECORDS_NORMALIZED,
    RECORDS_REJECTED,
    RECORDS_DEADLETTERED,
    RECORDS_INDEXED,
    RECORDS_FORWARDED,
    BYTES_READ,
    LAG_SECONDS,
    BLOBS_BEHIND,
    RETENTION_DELETED,
    RETENTION_KEPT,
)
# Not charted, watched by an alert: a function stopped, or running without forwarding, because
# an app setting of its own is bad. Counter, function (its registered name), setting.
SETTINGS_INVALID = "activitylog.settings.invalid"

_T = TypeVar("_T")
_lock = threading.RLock()
_injected: tuple[TracerProvider, MeterProvider] | None = None
_warned: set[str] = set()


def _safely(what: str, action: Callable[[], _T]) -> _T | None:
    """Run a telemetry step; a failure is logged (once per step) and swallowed."""
    try:
        return action()
    except Exception:
        if what not in _warned:
            _warned.add(what)
            log.warning("telemetry: %s failed; the invocation goes on", what, exc_info=True)
        return None


# --- configuration -------------------------------------------------------------------------


def configure() -> bool:
    """Export to Application Insights when APPLICATIONINSIGHTS_CONNECTION_STRING is set.

    Runs once per process (later calls return the first answer); True when export is on.
    """
    with _lock:
        return _configure_once()


@functools.cache
def _configure_once() -> bool:
    connection = os.environ.get(APPINSIGHTS_CONNECTION, "").strip()
    if not connection:
        return False
    return bool(_safely("configuring Azure Monitor", lambda: _export(connection)))


def _export(connection: str) -> bool:
    # Imported here, never at module import: only a process that exports pays for it.
    from shared.adapters.azure_monitor import configure_azure_monitor

    entra_id = configure_azure_monitor(connection)
    log.info("telemetry: exporting to Application Insights", extra={"entra_id": entra_id})
    return True


def use_providers(*, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
    """Record to these providers instead of the process's (tests, or an app with its own SDK).

    Azure Monitor is then not configured by this module. `reset()` undoes it.
    """
    global _injected  # noqa: PLW0603  # one injection point for the whole process
    with _lock:
        _injected = (tracer_provider, meter_provider)
        _instruments.cache_clear()


def reset() -> None:
    """Back to the process's providers (configured from the setting, or the API's no-ops)."""
    global _injected  # noqa: PLW0603
    with _lock:
        _injected = None
        _instruments.cache_clear()


# --- instruments ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Instruments:
    tracer: Tracer
    normalized: Counter
    rejected: Counter
    deadlettered: Counter
    indexed: Counter
    forwarded: Counter
    bytes_read: Counter
    lag: Histogram
    blobs_behind: Histogram
    retention_deleted: Counter
    retention_kept: Histogram
    settings_invalid: Counter


def _current() -> _Instruments | None:
    with _lock:
        return _safely("creating the tracer and instruments", _instruments)


@functools.cache
def _instruments() -> _Instruments:
    from opentelemetry import metrics, trace

    if _injected is None:
        configure()
        tracer_provider, meter_provider = None, None  # the process's: SDK or API no-ops
    else:
        tracer_provider, meter_provider = _injected
    meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
    records, blobs = "{record}", "{blob}"
    return _Instruments(
        tracer=trace.get_tracer(SCOPE, tracer_provider=tracer_provider),
        normalized=meter.create_counter(
            RECORDS_NORMALIZED, records, "Events that became normalized records"
        ),
        rejected=meter.create_counter(
            RECORDS_REJECTED, records, "Events that cannot become records (dead-lettered)"
        ),
        deadlettered=meter.create_counter(
            RECORDS_DEADLETTERED, records, "Records and events put in dead letters, by kind"
        ),
        indexed=meter.create_counter(
            RECORDS_INDEXED, records, "Records newly indexed (duplicates not counted)"
        ),
        forwarded=meter.create_counter(
            RECORDS_FORWARDED, records, "Records accepted by Log Analytics"
        ),
        bytes_read=meter.create_counter(BYTES_READ, "By", "Archive blob bytes read"),
        lag=meter.create_histogram(
            LAG_SECONDS, "s", "Now minus the oldest TimeGenerated indexed, per invocation"
        ),
        blobs_behind=meter.create_histogram(
            BLOBS_BEHIND, blobs, "Unsealed blobs with bytes not yet indexed, per catch-up"
        ),
        retention_deleted=meter.create_counter(
            RETENTION_DELETED, records, "Records deleted by retention"
        ),
        retention_kept=meter.create_histogram(
            RETENTION_KEPT, records, "Records kept by a retention run"
        ),
        settings_invalid=meter.create_counter(
            SETTINGS_INVALID, "{invocation}", "Invocations stopped or degraded by a bad setting"
        ),
    )


# --- spans ---------------------------------------------------------------------------------

AttributeValue = str | bool | int | float


@contextmanager
def invocation(function: str, *, path: str, **attributes: AttributeValue) -> Iterator[None]:
    """One span around a function invocation, current while it runs (logs correlate to it).

    An exception from the body is recorded on the span and re-raised unchanged.
    """
    started = _safely("starting the span", lambda: _start(function, path, attributes))
    try:
        yield
    except Exception as error:
        if started is not None:
            _safely("recording the exception", functools.partial(_fail, started[0], error))
        raise
    finally:
        if started is not None:
            _safely("ending the span", lambda: _end(*started))


def _start(
    function: str, path: str, attributes: Mapping[str, AttributeValue]
) -> tuple[Span, object] | None:
    from opentelemetry import context, trace

    instruments = _current()
    if instruments is None:
        return None
    span = instruments.tracer.start_span(
        function,
        kind=trace.SpanKind.INTERNAL,
        attributes={
            "activitylog.function": function,
            "activitylog.path": path,
            **{f"activitylog.{name}": value for name, value in attributes.items()},
        },
    )
    # A child of the current context: the host's invocation, when the worker attached its
    # trace context (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true), else a trace of its own.
    token = context.attach(trace.set_span_in_context(span))
    return span, token


def _fail(span: Span, error: Exception) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:500]))


def _end(span: Span, token: object) -> None:
    from opentelemetry import context

    try:
        context.detach(token)  # type: ignore[arg-type]  # the Token attach() returned
    finally:
        span.end()


def _annotate(report: Mapping[str, Any]) -> None:
    """The report's counts on the current span: numbers and flags as they are, lists counted."""
    from opentelemetry import trace

    span = trace.get_current_span()
    for name, value in report.items():
        counted = len(value) if isinstance(value, list) else value
        if isinstance(counted, str | bool | int | float):
            span.set_attribute(f"activitylog.{name}", counted)


# --- metrics -------------------------------------------------------------------------------


def _add(counter: Counter, amount: int, attributes: Mapping[str, AttributeValue]) -> None:
    if amount > 0:
        counter.add(amount, attributes)


def record_delivery(report: DeliveryReport, *, path: str = EVENTHUB) -> None:
    """An Event Hub delivery's counts: metrics, and attributes on the current span."""
    _safely("recording a delivery", lambda: _record_delivery(report, path))


def _record_delivery(report: DeliveryReport, path: str) -> None:
    rejected = sum(report.rejection_reasons.values())
    instruments = _record_counts(report, path, rejected)
    if instruments is None:
        return
    where = {"path": path}
    _add(instruments.forwarded, report.forwarded, where)
    _add(instruments.deadlettered, report.deadlettered - rejected, {**where, "kind": UNDELIVERED})
    _add(instruments.deadlettered, report.not_forwarded, {**where, "kind": NOT_FORWARDED})


def _record_counts(report: Report, path: str, rejected: int) -> _Instruments | None:
    """The counts every path keeps, as span attributes and metrics; the instruments, if any."""
    _safely("annotating the span", lambda: _annotate(report.as_dict()))
    instruments = _current()
    if instruments is None:
        return None
    where = {"path": path}
    _add(instruments.normalized, report.events - rejected, where)
    _add(instruments.rejected, rejected, where)
    _add(instruments.deadlettered, rejected, {**where, "kind": REJECTED})
    _add(instruments.indexed, report.indexed, where)
    if report.lag_seconds is not None:
        instruments.lag.record(report.lag_seconds, where)
    return instruments


def record_blobs(report: BlobReport, *, path: str) -> None:
    """A blob trigger's (path=blob) or catch-up's (path=catchup) counts. Only catch-up records
    `activitylog.blobs.behind`: it looks at every unsealed blob (a blob trigger sees one)."""
    _safely("recording a blob report", lambda: _record_blobs(report, path))


def _record_blobs(report: BlobReport, path: str) -> None:
    # `deadlettered` holds rejections only (lines that cannot become records); records Log
    # Analytics refused are `not_forwarded`, as on the Event Hub path.
    instruments = _record_counts(report, path, report.deadlettered)
    if instruments is None:
        return
    where = {"path": path}
    _add(instruments.bytes_read, report.bytes_read, where)
    _add(instruments.forwarded, report.forwarded, where)
    _add(instruments.deadlettered, report.not_forwarded, {**where, "kind": NOT_FORWARDED})
    if path == CATCHUP:
        instruments.blobs_behind.record(report.behind, where)


def record_retention(report: RetentionReport) -> None:
    """A retention run's counts."""
    _safely("recording a retention run", lambda: _record_retention(report))


def _record_retention(report: RetentionReport) -> None:
    _safely("annotating the span", lambda: _annotate(report.as_dict()))
    instruments = _current()
    if instruments is None:
        return
    where = {"dry_run": report.dry_run}
    _add(instruments.retention_deleted, report.records_deleted, where)
    instruments.retention_kept.record(report.records_kept, where)


def record_compaction(report: CompactionReport) -> None:
    """A compaction run's counts, on its span (its log line carries them too)."""
    _safely("annotating the span", lambda: _annotate(report.as_dict()))


def record_settings_invalid(function: str, setting: str) -> None:
    """An invocation that a bad setting of its own stopped, or left without forwarding."""
    _safely("recording a bad setting", lambda: _record_settings_invalid(function, setting))


def _record_settings_invalid(function: str, setting: str) -> None:
    instruments = _current()
    if instruments is not None:
        instruments.settings_invalid.add(1, {"function": function, "setting": setting})
