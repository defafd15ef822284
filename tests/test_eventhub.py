"""The Event Hub path: every record delivered once, to the archive and to Log Analytics.

The function registered by function_app is driven with real EventHubEvent objects on
Azurite; Log Analytics is the loopback endpoint that enforces the Logs Ingestion contract.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from azure.core.exceptions import ServiceRequestError

from shared import settings as names
from shared.adapters import log_analytics as forward
from shared.adapters.deadletters import NOT_FORWARDED, REJECTED, UNDELIVERED
from shared.bootstrap import Runtime, build_runtime, runtime
from shared.core.normalize import normalize_input
from shared.services import delivery
from shared.services.delivery import EventBody, RetryableDeliveryError, deliver
from shared.services.replay import replay
from shared.settings import Settings, load_settings
from shared.tools.local_host import Invocation, Retry, app_settings, event_hub_batch, registered
from tests.archive_view import (
    archived_keys,
    archived_records,
    committed_blobs,
    index_rows,
    unreachable_writer,
)
from tests.events import activity_event, envelope
from tests.logs_ingestion_server import LogsIngestionServer

RULE_ID = "dcr-00000000000000000000000000000000"
STREAM = "Custom-ActivityLog_CL"


def indexed_event_keys(app: Runtime) -> list[str]:
    """EventKeys of every record in a committed archive blob, sorted, duplicates kept."""
    return archived_keys(app)


def keys_of(events: list[Any]) -> list[str]:
    return sorted(record["EventKey"] for record in normalize_input(envelope(events), "x")[0])


def letters(app: Runtime, kind: str | None = None) -> list[Any]:
    return list(app.deadletters.list(kind))


@pytest.fixture
def logs_ingestion() -> Iterator[LogsIngestionServer]:
    with LogsIngestionServer(RULE_ID, STREAM) as server:
        yield server


@pytest.fixture
def forwarding_settings(settings: Settings, logs_ingestion: LogsIngestionServer) -> dict[str, str]:
    return {
        names.STORAGE_CONNECTION: settings.storage_connection,
        names.STORE_PREFIX: settings.store_prefix,
        names.LOGS_INGESTION_ENDPOINT: logs_ingestion.endpoint,
        names.LOGS_INGESTION_RULE_ID: RULE_ID,
        names.LOGS_INGESTION_STREAM: STREAM,
    }


def _credential_for_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    # Entra ID is out of reach here: the loopback endpoint accepts this static test token.
    from tests.logs_ingestion_server import StaticTokenCredential

    monkeypatch.setattr(
        "shared.adapters.storage.credential_for", lambda _settings: StaticTokenCredential()
    )
    # Short backoff between the client's own retries, so an outage costs seconds here.
    quick = functools.partial(forward.build_client, retry_total=2, retry_backoff_factor=0.05)
    monkeypatch.setattr("shared.adapters.log_analytics.build_client", quick)


def test_a_batch_mixing_good_and_bad_events(settings: Settings) -> None:
    good = [activity_event(n) for n in range(10)]
    bodies = [
        envelope(good[:5]),
        b"this is not json",
        envelope([*good[5:], {"no": "time"}, ["not", "an", "object"]]),
        orjson.dumps(good[0]),  # a single event, already in the first body
    ]
    with app_settings(
        {
            names.STORAGE_CONNECTION: settings.storage_connection,
            names.STORE_PREFIX: settings.store_prefix,
        }
    ):
        registered("activity_events")(
            event_hub_batch(bodies, partition="3"), Invocation("activity_events")
        )
        app = runtime()
    expected_keys = sorted(r["EventKey"] for r in normalize_input(envelope(good), "x")[0])
    assert indexed_event_keys(app) == expected_keys
    rejected = letters(app, REJECTED)
    assert len(rejected) == 3
    by_source = {letter.source: letter for letter in rejected}
    plain = by_source["eventhub:partition=3:sequence=1"]
    assert plain.raw == "this is not json"
    assert plain.reason.startswith("not JSON")
    assert plain.coordinates["partition"] == "3"
    assert plain.coordinates["sequence_number"] == 1
    assert plain.coordinates["offset"] == "4096"
    assert plain.coordinates["enqueued_time"]
    assert {letter.reason.split(":")[0] for letter in rejected} >= {"not JSON"}


def test_counts_reconcile_and_a_redelivered_batch_indexes_nothing_twice(app: Runtime) -> None:
    events = [activity_event(n) for n in range(250)]
    bodies = [EventBody(envelope(events[i : i + 50]), "0", i) for i in range(0, 250, 50)]
    bodies.append(EventBody(b"{broken", "0", 999))
    first = deliver(bodies, writer=app.writer, deadletters=app.deadletters)
    again = deliver(bodies, writer=app.writer, deadletters=app.deadletters)
    third = deliver(bodies, writer=app.writer, deadletters=app.deadletters)
    assert (first.events, first.indexed, first.duplicates, first.deadlettered) == (251, 250, 0, 1)
    assert (again.indexed, again.duplicates, again.deadlettered) == (0, 250, 1)
    assert third.indexed == 0
    assert indexed_event_keys(app) == keys_of(events)  # each once
    assert len(letters(app)) == 1  # the same rejection dead-lettered once, however often seen


def test_the_same_event_twice_in_one_batch_is_one_row(app: Runtime) -> None:
    event = activity_event(1)
    report = deliver(
        [EventBody(envelope([event, event])), EventBody(orjson.dumps(event))],
        writer=app.writer,
        deadletters=app.deadletters,
    )
    assert (report.events, report.indexed, report.duplicates) == (3, 1, 2)
    assert indexed_event_keys(app) == keys_of([event])


def test_a_five_megabyte_batch(app: Runtime) -> None:
    padding = "x" * 4000
    events = [
        activity_event(n, properties={"statusCode": "OK", "note": f"{n}{padding}"})
        for n in range(1300)
    ]
    bodies = [EventBody(envelope(events[i : i + 100]), "1", i) for i in range(0, 1300, 100)]
    assert sum(len(body.body) for body in bodies) > 5_000_000
    report = deliver(bodies, writer=app.writer, deadletters=app.deadletters)
    assert (report.events, report.indexed, report.deadlettered) == (1300, 1300, 0)
    assert indexed_event_keys(app) == keys_of(events)


def test_long_resource_ids_and_key_forbidden_characters_in_every_field(app: Runtime) -> None:
    hostile = "a#b?c/d\\e'f%g|h\u0001i~j"
    long_id = (
        "/subscriptions/"
        + "s" * 36
        + "/resourcegroups/rg/providers/microsoft.web/sites/"
        + "n" * 520
    )
    assert len(long_id) >= 600
    every_string_field = {
        field: hostile
        for field in (
            "operationName",
            "category",
            "resultType",
            "resultSignature",
            "caller",
            "callerIpAddress",
            "correlationId",
            "operationId",
            "eventDataId",
            "location",
            "resultDescription",
            "hierarchy",
            "tenantId",
            "level",
        )
    }
    events = [
        activity_event(1, resourceId=long_id),
        activity_event(
            2, resourceId=f"/subscriptions/{hostile}/resourceGroups/{hostile}/x/{hostile}"
        ),
        activity_event(3, **every_string_field, resourceId=hostile, time="2024-05-01T10:00:03Z"),
    ]
    report = deliver([EventBody(envelope(events))], writer=app.writer, deadletters=app.deadletters)
    assert (report.events, report.indexed, report.deadlettered) == (3, 3, 0)
    records = normalize_input(envelope(events), "x")[0]
    assert any(record["Caller"] == hostile for record in records)
    archived = {record["EventKey"]: record for record in archived_records(app)}
    assert archived == {record["EventKey"]: record for record in records}  # whole, once each
    for row in index_rows(app):
        for key in (row["PartitionKey"], row["RowKey"]):
            assert len(key) <= 512
            assert not any(ch in key for ch in "/\\#?\u0001")


def test_a_record_too_big_for_a_table_entity_is_archived_whole(app: Runtime) -> None:
    import random

    noise = random.Random(7).randbytes(1_500_000).hex()  # incompressible, 3 MB of text
    event = activity_event(5, properties={"statusCode": "OK", "blob": noise})
    report = deliver([EventBody(envelope([event]))], writer=app.writer, deadletters=app.deadletters)
    assert (report.indexed, report.deadlettered) == (1, 0)
    (record,) = normalize_input(envelope([event]), "x")[0]
    assert archived_records(app) == [record]
    (ref,) = committed_blobs(app)
    assert app.reader.fetch([(ref, 0)]) == [record]  # read back by its place too


def test_storage_outage_raises_while_retries_remain_then_dead_letters_whole_bodies(
    app: Runtime, settings: Settings
) -> None:
    events = [activity_event(n) for n in range(20)]
    bodies = [EventBody(envelope(events[:10]), "2", 7), EventBody(envelope(events[10:]), "2", 8)]
    broken = unreachable_writer(settings)
    with pytest.raises(RetryableDeliveryError):
        deliver(bodies, writer=broken, deadletters=app.deadletters, final_attempt=False)
    assert letters(app) == []  # nothing dead-lettered while the retry policy still holds it
    last = deliver(bodies, writer=broken, deadletters=app.deadletters, final_attempt=True)
    assert (last.events, last.indexed, last.deadlettered) == (20, 0, 20)
    undelivered = letters(app, UNDELIVERED)
    assert sorted(letter.coordinates["sequence_number"] for letter in undelivered) == [7, 8]
    assert {letter.raw for letter in undelivered} == {b.body.decode() for b in bodies}
    # The cause is fixed: replay delivers them, once.
    assert replay(app) == {"replayed": 2, "still_failing": 0}
    assert indexed_event_keys(app) == keys_of(events)
    assert letters(app) == []
    assert replay(app) == {"replayed": 0, "still_failing": 0}


def test_the_function_raises_for_a_retry_and_dead_letters_on_its_last_attempt(
    settings: Settings,
) -> None:
    bodies = [envelope([activity_event(n) for n in range(3)])]
    outage = {
        names.STORAGE_CONNECTION: settings.storage_connection,
        names.STORE_PREFIX: settings.store_prefix,
    }
    function = registered("activity_events")
    with app_settings(outage):
        app = runtime()
        broken = unreachable_writer(settings)
        object.__setattr__(app, "writer", broken)  # storage goes away under the running app
        with pytest.raises(RetryableDeliveryError):
            function(event_hub_batch(bodies), Invocation("activity_events", Retry(2, 8)))
        function(event_hub_batch(bodies), Invocation("activity_events", Retry(8, 8)))
        assert len(letters(app, UNDELIVERED)) == 1


class Outage:
    """Storage refusing the first `failures` calls made through any of the wrapped stores,
    then back (the index and the dead letters live in one account: down together)."""

    def __init__(self, failures: int) -> None:
        self.left = failures

    def wrap(self, store: Any) -> Any:
        outage = self

        class Refusing:
            def __getattr__(self, name: str) -> Any:
                method = getattr(store, name)

                def call(*args: Any, **kwargs: Any) -> Any:
                    if outage.left > 0:
                        outage.left -= 1
                        raise ServiceRequestError("connection refused")
                    return method(*args, **kwargs)

                return call

        return Refusing()


def held(monkeypatch: pytest.MonkeyPatch, seconds: float) -> list[float]:
    """The last attempt's hold, on a clock that moves only by its own pauses."""
    pauses: list[float] = []
    hold = delivery.Hold(seconds=seconds, clock=lambda: sum(pauses), sleep=pauses.append)
    monkeypatch.setattr(delivery, "LAST_ATTEMPT_HOLD", hold)
    return pauses


def test_the_last_attempt_holds_on_while_storage_is_down_and_loses_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found from outside: with the storage account down on the last attempt, neither the
    # archive nor the dead letters took the batch, the invocation raised, and the host moved
    # the checkpoint on: both events were kept nowhere.
    events = [activity_event(n) for n in range(2)]
    pauses = held(monkeypatch, seconds=480)
    store = {names.STORAGE_CONNECTION: settings.storage_connection,
             names.STORE_PREFIX: settings.store_prefix}  # fmt: skip
    with app_settings(store):
        app = runtime()
        outage = Outage(failures=5)
        object.__setattr__(app, "writer", outage.wrap(app.writer))
        object.__setattr__(app, "deadletters", outage.wrap(app.deadletters))
        registered("activity_events")(
            event_hub_batch([envelope(events)]), Invocation("activity_events", Retry(8, 8))
        )
    assert pauses and sum(pauses) < 480
    # Kept: storage came back while the dead letters were written; a replay archives them.
    app = build_runtime(settings)
    [letter] = letters(app, UNDELIVERED)
    assert letter.raw == envelope(events).decode()
    assert replay(app) == {"replayed": 1, "still_failing": 0}
    assert indexed_event_keys(app) == keys_of(events)


def test_the_last_attempt_raises_only_when_its_hold_runs_out(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses = held(monkeypatch, seconds=120)
    broken = unreachable_writer(settings)
    outage = Outage(failures=10**6)
    bodies = [EventBody(envelope([activity_event(1)]))]
    with pytest.raises(ServiceRequestError):
        delivery.deliver_last(
            bodies, writer=broken, deadletters=outage.wrap(build_runtime(settings).deadletters)
        )
    assert pauses and sum(pauses) <= 120


def test_forwarding_delivers_each_record_once_across_redelivery(
    forwarding_settings: dict[str, str],
    logs_ingestion: LogsIngestionServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _credential_for_tests(monkeypatch)
    events = [activity_event(n) for n in range(40)]
    batch = event_hub_batch([envelope(events[:20]), envelope(events[20:])])
    function = registered("activity_events")
    with app_settings(forwarding_settings):
        function(batch, Invocation("activity_events", Retry(0, 8)))
        function(batch, Invocation("activity_events", Retry(0, 8)))  # redelivered
        app = runtime()
    sent = [record["EventKey"] for record in logs_ingestion.records]
    assert len(sent) == 40 and len(set(sent)) == 40
    assert sorted(sent) == indexed_event_keys(app)
    assert all(request.status == 204 for request in logs_ingestion.requests)
    for request in logs_ingestion.requests:
        assert request.path.startswith(f"/dataCollectionRules/{RULE_ID}/streams/{STREAM}")


def padded_batch() -> Any:
    """100 events of 30 KB each: a batch Log Analytics takes in several calls."""
    padding = "p" * 30_000
    events = [
        activity_event(n, properties={"statusCode": "OK", "pad": f"{n}{padding}"})
        for n in range(100)
    ]
    return event_hub_batch([envelope(events)])


def test_log_analytics_failing_mid_batch_then_recovering(
    forwarding_settings: dict[str, str],
    logs_ingestion: LogsIngestionServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _credential_for_tests(monkeypatch)
    batch = padded_batch()
    function = registered("activity_events")
    with app_settings(forwarding_settings):
        app = runtime()
        logs_ingestion.script([None, 429])  # the first call lands, the second is throttled
        logs_ingestion.fail_persistently(500)
        with pytest.raises(RetryableDeliveryError):
            function(batch, Invocation("activity_events", Retry(0, 8)))
        first_calls = len(logs_ingestion.records)
        assert 0 < first_calls < 100
        logs_ingestion.fail_persistently(None)  # Log Analytics is back
        function(batch, Invocation("activity_events", Retry(1, 8)))
    sent = [record["EventKey"] for record in logs_ingestion.records]
    assert len(sent) == 100 and len(set(sent)) == 100  # the first call's records not re-sent
    assert indexed_event_keys(app) == sorted(sent)
    assert letters(app) == []


class WorkerDied(BaseException):
    """A crash inside a call (the host killing a worker at its timeout, say): no handler
    of the app's runs, as none would when the process ends."""


def test_a_worker_dying_mid_forward_leaves_the_calls_already_accepted_marked(
    forwarding_settings: dict[str, str],
    logs_ingestion: LogsIngestionServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each call Log Analytics accepted is marked as it returns, not once all are done: the
    redelivery after a crash re-sends only what was in flight or never sent."""
    _credential_for_tests(monkeypatch)
    batch = padded_batch()
    function = registered("activity_events")
    calls = 0
    upload = forward.LogAnalyticsForwarder._send

    def dies_at_the_second_call(self: Any, chunk: Any, result: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first call was accepted
            raise WorkerDied
        return upload(self, chunk, result)

    with app_settings(forwarding_settings):
        monkeypatch.setattr(forward.LogAnalyticsForwarder, "_send", dies_at_the_second_call)
        with pytest.raises(WorkerDied):
            function(batch, Invocation("activity_events", Retry(0, 8)))
        first_call = len(logs_ingestion.records)
        assert 0 < first_call < 100
        monkeypatch.setattr(forward.LogAnalyticsForwarder, "_send", upload)
        function(batch, Invocation("activity_events", Retry(1, 8)))  # redelivered
        app = runtime()
    sent = [record["EventKey"] for record in logs_ingestion.records]
    assert len(sent) == 100 and len(set(sent)) == 100, (len(sent), first_call)
    assert indexed_event_keys(app) == sorted(sent)


def test_a_record_too_large_for_any_call_is_dead_lettered_and_its_neighbours_forwarded(
    forwarding_settings: dict[str, str],
    logs_ingestion: LogsIngestionServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _credential_for_tests(monkeypatch)
    huge = activity_event(0, properties={"statusCode": "OK", "big": "z" * 1_100_000})
    events = [huge, *[activity_event(n) for n in range(1, 6)]]
    with app_settings(forwarding_settings):
        registered("activity_events")(
            event_hub_batch([envelope(events)]), Invocation("x", Retry(0, 8))
        )
        app = runtime()
    assert len(logs_ingestion.records) == 5
    (letter,) = letters(app, NOT_FORWARDED)
    assert "1 MB" in letter.reason or "limit" in letter.reason.lower()
    assert orjson.loads(letter.raw)["EventKey"] in indexed_event_keys(app)
    assert indexed_event_keys(app) == keys_of(events)


def test_only_storage_configured_indexes_alone(settings: Settings) -> None:
    assert (
        build_runtime(
            load_settings({names.STORAGE_CONNECTION: settings.storage_connection})
        ).forwarder
        is None
    )


def test_marking_a_record_forwarded_never_makes_it_look_archived(app: Runtime) -> None:
    kept, gone = normalize_input(envelope([activity_event(1), activity_event(2)]), "x")[0]
    app.writer.write([kept])
    app.marks.mark([kept, gone])  # `gone` was never archived (or retention took it)
    assert archived_records(app) == [kept]
    assert app.marks.unforwarded([kept]) == set()
    # The mark claimed nothing: `gone`, when it comes, is archived, not taken for a duplicate.
    written = app.writer.write([gone])
    assert (len(written.indexed), written.duplicates) == (1, [])
    assert archived_keys(app) == sorted([kept["EventKey"], gone["EventKey"]])
