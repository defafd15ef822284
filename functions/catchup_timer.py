"""Catch-up timer: indexes the new bytes of every recent, unsealed PT1H.json.

After an outage longer than its lookback it also covers the hours since its last clean run
(a watermark in the cursor table), up to a week of them per run, oldest first.
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime

import azure.functions as func

from functions import shell
from shared.adapters import telemetry
from shared.services.catchup import catch_up
from shared.settings import CATCHUP_SCHEDULE, Section

bp = func.Blueprint()
log = logging.getLogger(__name__)
TRIGGER = shell.Trigger(
    "archive_catchup",
    telemetry.CATCHUP,
    log,
    "archive catch-up done",
    functools.partial(telemetry.record_blobs, path=telemetry.CATCHUP),
    runs_without=(Section.FORWARDING,),
)


@bp.function_name("archive_catchup")
@bp.timer_trigger(arg_name="timer", schedule=f"%{CATCHUP_SCHEDULE}%", use_monitor=True)
def archive_catchup(timer: func.TimerRequest) -> None:
    shell.run(
        TRIGGER,
        lambda app: catch_up(
            app.blob_indexer,
            app.stores.archive,
            now=datetime.now(UTC),
            hours=app.settings.catchup_hours,
        ),
        past_due=timer.past_due,
    )
