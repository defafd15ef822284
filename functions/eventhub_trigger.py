"""Event Hub trigger: Activity Log batches from the diagnostic setting's hub."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.adapters import telemetry
from shared.bootstrap import runtime
from shared.services.delivery import EventBody, deliver
from shared.settings import EVENTHUB_CONNECTION, EVENTHUB_CONSUMER_GROUP, EVENTHUB_NAME

bp = func.Blueprint()
log = logging.getLogger(__name__)

# The checkpoint moves on when the invocation returns, even after an exception: only a retry
# policy holds it. Exponential backoff gives a storage or Log Analytics outage ~30 minutes.
MAX_RETRIES = 8


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
    minimum_interval="00:00:05",
    maximum_interval="00:05:00",
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
    with telemetry.invocation("activity_events", path=telemetry.EVENTHUB, partition=partition):
        app = runtime()
        report = deliver(
            bodies,
            writer=app.writer,
            deadletters=app.deadletters,
            forwarder=app.forwarder,
            final_attempt=is_final_attempt(context),
        )
        telemetry.record_delivery(report, path=telemetry.EVENTHUB)
        log.info("event hub batch delivered", extra={"partition": partition, **report.as_dict()})
