"""Retention timer: deletes what is past its configured age (see shared/retention.py)."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.adapters import telemetry
from shared.bootstrap import runtime
from shared.services.retention import enforce_retention, policy_from
from shared.settings import RETENTION_SCHEDULE

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("retention")
@bp.timer_trigger(arg_name="timer", schedule=f"%{RETENTION_SCHEDULE}%", use_monitor=True)
def retention(timer: func.TimerRequest) -> None:
    with telemetry.invocation("retention", path=telemetry.RETENTION, past_due=timer.past_due):
        app = runtime()
        settings = app.settings
        report = enforce_retention(
            app.stores,
            policy_from(settings.retention_days, settings.retention_category_days),
            dry_run=settings.retention_dry_run,
            budget_seconds=settings.retention_time_budget_seconds,
        )
        telemetry.record_retention(report)
        log.info("retention run done", extra={"past_due": timer.past_due, **report.as_dict()})
