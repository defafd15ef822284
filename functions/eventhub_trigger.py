"""Event Hub trigger: Activity Log batches from the diagnostic setting's hub."""

from __future__ import annotations

import functools
import logging

import azure.functions as func

from functions import shell
from shared.adapters import telemetry
from shared.services.delivery import EventBody, deliver, deliver_last
from shared.settings import (
    EVENTHUB_CONNECTION,
    EVENTHUB_CONSUMER_GROUP,
    EVENTHUB_NAME,
    Section,
)

bp = func.Blueprint()
log = logging.getLogger(__name__)
TRIGGER = shell.Trigger(
    "activity_events",
    telemetry.EVENTHUB,
    log,
    "event hub batch delivered",
    functools.partial(telemetry.record_delivery, path=telemetry.EVENTHUB),
    runs_without=(Section.FORWARDING,),
)

# The checkpoint moves on when the invocation returns, even after an exception: only a retry
# policy holds it. Exponential backoff gives a storage or Log Analytics outage ~30 minutes.
MAX_RETRIES = 8
FIRST_RETRY_AFTER = "00:00:05"
LONGEST_RETRY_AFTER = "00:05:00"
# host.json's extensions.eventHubs.maxEventBatchSize (tests/test_app.py holds them equal): the
# most events one invocation gets, so what `python -m shared ingest` sends per call. Larger than
# the default 100: the Activity Log sends few records a message, and each invocation is one
# archive write whose cost (requests, index rows, blobs) is nearly fixed, so a fuller batch
# costs less per event (bench/bench_storage.py). Learn, "Azure Event Hubs trigger and bindings
# for Azure Functions", host.json settings:
# https://learn.microsoft.com/azure/azure-functions/functions-bindings-event-hubs#hostjson-settings
MAX_EVENT_BATCH_SIZE = 1000


def event_body(event: func.EventHubEvent) -> EventBody:
    partition = ""
    context = (event.metadata or {}).get("PartitionContext")
    if isinstance(context, dict):
        partition = str(context.get("PartitionId", ""))
    return EventBody(
        body=event.get_body(),
        partition=partition,
        sequence_number=event.sequence_number,
        offset=event.offset,
        enqueued_time=event.enqueued_time.isoformat() if event.enqueued_time else None,
    )


def is_final_attempt(context: func.Context | None) -> bool:
    retry = getattr(context, "retry_context", None)
    if retry is None:
        return True
    return bool(retry.retry_count >= retry.max_retry_count)


@bp.function_name("activity_events")
@bp.retry(
    strategy="exponential_backoff",
    max_retry_count=str(MAX_RETRIES),
    minimum_interval=FIRST_RETRY_AFTER,
    maximum_interval=LONGEST_RETRY_AFTER,
)
@bp.event_hub_message_trigger(
    arg_name="events",
    event_hub_name=f"%{EVENTHUB_NAME}%",
    connection=EVENTHUB_CONNECTION,
    consumer_group=f"%{EVENTHUB_CONSUMER_GROUP}%",
    cardinality="many",
)
def activity_events(events: list[func.EventHubEvent], context: func.Context) -> None:
    bodies = [event_body(event) for event in events]
    partition = bodies[0].partition if bodies else ""  # a batch comes from one partition
    if is_final_attempt(context):  # holds on while storage refuses: nothing is kept nowhere
        shell.run(
            TRIGGER,
            lambda app: deliver_last(
                bodies, writer=app.writer, deadletters=app.deadletters, forwarding=app.forwarding
            ),
            partition=partition,
        )
        return
    shell.run(
        TRIGGER,
        lambda app: deliver(
            bodies,
            writer=app.writer,
            deadletters=app.deadletters,
            forwarding=app.forwarding,
            final_attempt=False,
        ),
        partition=partition,
    )
