"""Retention timer: deletes what is past its configured age (see shared/services/retention.py)."""

from __future__ import annotations

import logging

import azure.functions as func

from functions import shell
from shared.adapters import telemetry
from shared.bootstrap import Runtime
from shared.core.retention_policy import policy_from
from shared.services.retention import enforce_retention
from shared.services.retention_audit import RetentionReport
from shared.settings import RETENTION_SCHEDULE

bp = func.Blueprint()
log = logging.getLogger(__name__)
TRIGGER = shell.Trigger(
    "retention", telemetry.RETENTION, log, "retention run done", telemetry.record_retention
)


def enforce_configured_retention(app: Runtime) -> RetentionReport:
    """The retention the app settings configure, on the app's stores."""
    settings = app.settings
    return enforce_retention(
        app.stores,
        policy_from(settings.retention_days, settings.retention_category_days),
        dry_run=settings.retention_dry_run,
        budget=settings.retention_time_budget_seconds,
    )


@bp.function_name("retention")
@bp.timer_trigger(arg_name="timer", schedule=f"%{RETENTION_SCHEDULE}%", use_monitor=True)
def retention(timer: func.TimerRequest) -> None:
    shell.run(TRIGGER, enforce_configured_retention, past_due=timer.past_due)
