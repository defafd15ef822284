"""Compaction timer: merges each closed day's fresh posting rows into runs sorted by value hash
(one per key kind and hash prefix), so a lookup reads about one row a day
(see shared/services/compaction.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import azure.functions as func

from functions import shell
from shared.adapters import telemetry
from shared.bootstrap import Runtime
from shared.services.compaction import TIMER_BUDGET_SECONDS, CompactionReport, compact

bp = func.Blueprint()
log = logging.getLogger(__name__)
TRIGGER = shell.Trigger(
    "compaction", telemetry.COMPACTION, log, "compaction run done", telemetry.record_compaction
)
# Hourly, off the hour: days close at midnight UTC and settle for SETTLE; a run merges every
# closed day that has fresh rows, so a missed run is made up by the next.
SCHEDULE = "0 20 * * * *"


def compact_index(app: Runtime) -> CompactionReport:
    # Stops starting units within the budget, well inside host.json's functionTimeout: what is
    # left is merged by the next run.
    return compact(app.tables, as_of=datetime.now(UTC), budget_seconds=TIMER_BUDGET_SECONDS)


@bp.function_name("compaction")
@bp.timer_trigger(arg_name="timer", schedule=SCHEDULE, use_monitor=True)
def compaction(timer: func.TimerRequest) -> None:
    shell.run(TRIGGER, compact_index, past_due=timer.past_due)
