"""Catch-up timer: indexes the new bytes of every recent, unsealed PT1H.json.

After an outage longer than its lookback it also covers the hours since its last clean run
(a watermark in the cursor table), up to a week of them per run, oldest first.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import azure.functions as func

from shared.adapters import telemetry
from shared.bootstrap import runtime
from shared.services.blob_indexing import catch_up
from shared.settings import CATCHUP_SCHEDULE

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("archive_catchup")
@bp.timer_trigger(arg_name="timer", schedule=f"%{CATCHUP_SCHEDULE}%", use_monitor=True)
def archive_catchup(timer: func.TimerRequest) -> None:
    with telemetry.invocation("archive_catchup", path=telemetry.CATCHUP, past_due=timer.past_due):
        app = runtime()
        report = catch_up(
            app.blob_indexer,
            app.stores.archive,
            app.cursors,
            now=datetime.now(UTC),
            hours=app.settings.catchup_hours,
        )
        telemetry.record_blobs(report, path=telemetry.CATCHUP)
        log.info("archive catch-up done", extra={"past_due": timer.past_due, **report.as_dict()})
