"""Exporting to Application Insights: `azure-monitor-opentelemetry`, configured once.

Imported only by a process that exports (shared.adapters.telemetry, when
APPLICATIONINSIGHTS_CONNECTION_STRING is set): importing and configuring the distro adds
~0.17 s to a cold start. Logs keep their structured dimensions: every record of the loggers
`functions` and `shared` is exported, with its `extra=` fields as custom dimensions, and
warnings and errors of the others (see APP_LOGGERS).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from shared.settings import STORAGE_CONNECTION

# Set by infra/: the Python worker configures the exporter itself (Learn, "Use OpenTelemetry
# with Azure Functions", Python: https://learn.microsoft.com/azure/azure-functions/
# opentelemetry-howto?pivots=programming-language-python). Configuring the distro a second
# time is unsupported; the app then only filters what the worker's log handler sends.
WORKER_EXPORTS = "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"
# The client id of the app's user-assigned identity (Application Insights with local auth off).
IDENTITY_CLIENT_ID = f"{STORAGE_CONNECTION}__clientId"
# Loggers exported at every level (their `extra=` fields become custom dimensions); any other
# logger from WARNING up, except the telemetry pipeline's own (it would report on itself) and
# the Azure SDK's HTTP pipeline (a line per request and retry).
APP_LOGGERS = ("functions", "shared")
UNEXPORTED_LOGGERS = ("opentelemetry", "azure.monitor.opentelemetry", "azure.core.pipeline")
# Auto-instrumentations the distro would enable. Off: the app's storage and Log Analytics calls
# would each become a dependency (and urllib3/requests would report them a second time).
INSTRUMENTATIONS = (
    "azure_sdk",
    "django",
    "fastapi",
    "flask",
    "httpx",
    "psycopg2",
    "requests",
    "urllib",
    "urllib3",
)


def configure_azure_monitor(connection: str) -> bool:
    """Export the process's spans, metrics and logs to Application Insights; whether with the
    app's identity (Entra ID)."""
    if os.environ.get(WORKER_EXPORTS, "").strip().lower() == "true":
        _filter_handlers(lambda handler: type(handler).__module__.startswith("opentelemetry"))
        return bool(os.environ.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING"))
    from azure.monitor.opentelemetry import configure_azure_monitor as configure

    options: dict[str, Any] = {
        "connection_string": connection,
        "logger_name": "",  # the root logger, filtered below
        "instrumentation_options": {name: {"enabled": False} for name in INSTRUMENTATIONS},
        # Both poll or sample in the background on every instance; the workbook uses neither.
        "enable_live_metrics": False,
        "enable_performance_counters": False,
    }
    if not os.environ.get("OTEL_TRACES_SAMPLER"):
        # A span per invocation, all kept: the distro's default (5 traces a second, rate
        # limited) drops the first spans of every new instance. OTEL_TRACES_SAMPLER overrides.
        options["sampling_ratio"] = 1.0
    client_id = os.environ.get(IDENTITY_CLIENT_ID, "").strip()
    if client_id:
        # Application Insights with local auth off takes Entra ID tokens only (infra/README.md).
        from azure.identity import ManagedIdentityCredential

        options["credential"] = ManagedIdentityCredential(client_id=client_id)
    before = list(logging.getLogger().handlers)
    configure(**options)
    _filter_handlers(lambda handler: handler not in before)  # the distro's OpenTelemetry one
    return bool(client_id)


def _filter_handlers(exporting: Callable[[logging.Handler], bool]) -> None:
    for handler in logging.getLogger().handlers:
        if exporting(handler):
            handler.addFilter(_exported)


def _exported(record: logging.LogRecord) -> bool:
    """Whether the OpenTelemetry log handler sends this record (see APP_LOGGERS)."""
    name = record.name
    if name.split(".", 1)[0] in APP_LOGGERS:
        return True
    unexported = any(name == n or name.startswith(f"{n}.") for n in UNEXPORTED_LOGGERS)
    return record.levelno >= logging.WARNING and not unexported
