"""Log Analytics from the archive path: each record sent once, whichever path delivered it.

The blob trigger, the catch-up timer and `python -m shared backfill` (all through BlobIndexer)
forward what they index, as the Event Hub path does: the forward marks on the index rows
decide what is sent, so a record indexed by Event Hub and then read from a blob is not sent
again. The registered functions and the CLI run on Azurite, with Log Analytics as the loopback
Logs Ingestion endpoint.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobClient, ContainerClient

from shared import settings as names
from shared.adapters.blobs import ArchiveBlob
from shared.adapters.deadletters import NOT_FORWARDED
from shared.bootstrap import Runtime, runtime
from shared.core.normalize import normalize_input
from shared.services.delivery import RetryableDeliveryError
from shared.services.replay import replay
from shared.settings import Settings
from shared.tools import cli
from shared.tools.local_host import Invocation, Retry, app_settings, event_hub_batch, registered
from tests.archive_view import archived_keys, forwarded_keys
from tests.events import SUBSCRIPTION, activity_event, envelope, jsonl
from tests.logs_ingestion_server import LogsIngestionServer
from tests.test_blobindex import pt1h_name
from tests.test_eventhub import RULE_ID, STREAM, _credential_for_tests

OTHER_SUBSCRIPTION = "1f3c2a51-1d2e-4b8a-9c7d-0e1f2a3b4c5d"


@pytest.fixture
def logs_ingestion() -> Iterator[LogsIngestionServer]:
    with LogsIngestionServer(RULE_ID, STREAM) as server:
        yield server


@pytest.fixture
def app_env(
    settings: Settings, logs_ingestion: LogsIngestionServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """The app's settings on this test's store and archive container, forwarding to the
    loopback endpoint (with the static test token)."""
    _credential_for_tests(monkeypatch)
    values = {
        names.STORAGE_CONNECTION: settings.storage_connection,
        names.STORE_PREFIX: settings.store_prefix,
        names.ARCHIVE_CONTAINER: f"{settings.store_prefix}-archive",
        names.LOGS_INGESTION_ENDPOINT: logs_ingestion.endpoint,
        names.LOGS_INGESTION_RULE_ID: RULE_ID,
        names.LOGS_INGESTION_STREAM: STREAM,
    }
    with app_settings(values):
        runtime().stores.archive.create_container()
        yield values


def archive() -> ContainerClient:
    return runtime().stores.archive


def this_hour() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def append_blob(name: str, data: bytes) -> BlobClient:
    blob = archive().get_blob_client(name)
    if not blob.exists():
        blob.create_append_blob()
    for start in range(0, len(data), 4 * 1024 * 1024):  # an append block holds 4 MiB at most
        blob.append_block(data[start : start + 4 * 1024 * 1024])
    return blob


def keys_of(data: bytes) -> set[str]:
    return {record["EventKey"] for record in normalize_input(data, "x")[0]}


def indexed_keys(app: Runtime) -> set[str]:
    """EventKeys in the archive, each there once (a duplicate fails here)."""
    keys = archived_keys(app)
    assert len(keys) == len(set(keys)), "an event is archived twice"
    return set(keys)


def marked_keys(app: Runtime) -> set[str]:
    """EventKeys of archived records marked as accepted by Log Analytics."""
    return forwarded_keys(app)


def sent_counts(server: LogsIngestionServer) -> Counter[str]:
    return Counter(str(record["EventKey"]) for record in server.records)


def assert_sent_once(server: LogsIngestionServer, expected: set[str]) -> None:
    sent = sent_counts(server)
    assert sorted(key for key, count in sent.items() if count > 1) == []  # nothing twice
    assert set(sent) == expected  # nothing lost, nothing else


def events(first: int, count: int, **overrides: Any) -> list[dict[str, Any]]:
    return [activity_event(n, **overrides) for n in range(first, first + count)]


# --- (a) each blob path forwards every record once -------------------------------------------


def test_the_blob_trigger_forwards_what_it_indexes_once(
    app_env: dict[str, str], logs_ingestion: LogsIngestionServer
) -> None:
    data = jsonl(events(0, 30)) + b"not an event\n"
    blob = append_blob(pt1h_name(this_hour()), data)
    function = registered("archive_blob")
    function(blob)
    assert_sent_once(logs_ingestion, keys_of(data))
    function(blob)  # announced again: nothing new, nothing sent again
    more = jsonl(events(30, 5))
    append_blob(blob.blob_name, more)
    function(blob)  # grown since: only the new lines are sent
    app = runtime()
    assert_sent_once(logs_ingestion, keys_of(data + more))
    assert indexed_keys(app) == marked_keys(app) == keys_of(data + more)
    assert list(app.deadletters.list(NOT_FORWARDED)) == []


def test_the_catch_up_forwards_every_blob_of_its_hours_once(
    app_env: dict[str, str], logs_ingestion: LogsIngestionServer
) -> None:
    first = jsonl(events(0, 20))
    second = jsonl(events(100, 15, resourceId=f"/SUBSCRIPTIONS/{OTHER_SUBSCRIPTION.upper()}/X"))
    growing = append_blob(pt1h_name(this_hour()), first)
    append_blob(pt1h_name(this_hour(), OTHER_SUBSCRIPTION), second)
    timer = registered("archive_catchup")
    timer(TimerRequest(past_due=False))
    assert_sent_once(logs_ingestion, keys_of(first + second))
    appended = jsonl(events(20, 7))
    append_blob(growing.blob_name, appended)
    timer(TimerRequest(past_due=False))
    timer(TimerRequest(past_due=False))
    app = runtime()
    assert_sent_once(logs_ingestion, keys_of(first + second + appended))
    assert marked_keys(app) == indexed_keys(app)


def test_backfill_forwards_the_archive_once_and_says_so_at_the_end_of_its_summary(
    app_env: dict[str, str],
    logs_ingestion: LogsIngestionServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hours = [datetime(2024, 5, 1, hour, tzinfo=UTC) for hour in range(3)]
    blobs = [jsonl(events(100 * n, 12)) for n in range(3)]
    for hour, data in zip(hours, blobs, strict=True):
        append_blob(pt1h_name(hour), data)
    container = app_env[names.ARCHIVE_CONTAINER]
    capsys.readouterr()
    assert cli.main(["backfill", "--container", container, "--json"]) == 0
    summary = orjson.loads(capsys.readouterr().out)
    assert (summary["blobs"], summary["indexed"], summary["forwarded"]) == (3, 36, 36)
    assert summary["not_forwarded"] == 0
    # The summary's contract: what it held before, in the same order, then the new counts.
    assert list(summary)[-2:] == ["forwarded", "not_forwarded"]
    assert list(summary)[:10] == [
        "blobs",
        "events",
        "indexed",
        "duplicates",
        "deadlettered",
        "bytes_read",
        "failed",
        "outside_layout",
        "behind",
        "lag_seconds",
    ]
    assert_sent_once(logs_ingestion, keys_of(b"".join(blobs)))
    assert cli.main(["backfill", "--container", container, "--json"]) == 0
    again = orjson.loads(capsys.readouterr().out)
    assert (again["indexed"], again["forwarded"]) == (0, 0)
    assert_sent_once(logs_ingestion, keys_of(b"".join(blobs)))


# --- (b) both paths, one copy ---------------------------------------------------------------


def test_events_by_event_hub_then_by_blob_are_sent_once_in_all(
    app_env: dict[str, str], logs_ingestion: LogsIngestionServer
) -> None:
    shared_events = events(0, 25)
    registered("activity_events")(
        event_hub_batch([envelope(shared_events)]), Invocation("activity_events", Retry(0, 8))
    )
    assert len(logs_ingestion.records) == 25
    # The archive holds the same events, and some the hub never delivered.
    data = jsonl(shared_events) + jsonl(events(500, 5))
    blob = append_blob(pt1h_name(this_hour()), data)
    registered("archive_blob")(blob)
    registered("archive_catchup")(TimerRequest(past_due=False))
    assert_sent_once(logs_ingestion, keys_of(data))
    app = runtime()
    assert marked_keys(app) == indexed_keys(app) == keys_of(data)


def test_events_by_blob_then_by_event_hub_are_sent_once_in_all(
    app_env: dict[str, str], logs_ingestion: LogsIngestionServer
) -> None:
    shared_events = events(0, 25)
    registered("archive_blob")(append_blob(pt1h_name(this_hour()), jsonl(shared_events)))
    registered("activity_events")(
        event_hub_batch([envelope([*shared_events, *events(700, 3)])]),
        Invocation("activity_events", Retry(0, 8)),
    )
    assert_sent_once(logs_ingestion, keys_of(envelope([*shared_events, *events(700, 3)])))


def test_a_record_refused_by_both_paths_has_one_letter_and_is_sent_once_by_its_replays(
    app_env: dict[str, str], logs_ingestion: LogsIngestionServer
) -> None:
    # Found from outside: a letter was named by its path (and by the record's JSON, which the
    # blob path's subscription can fill), so each path that met a refusal wrote its own, and
    # two replays at once each claimed one and both sent the record.
    event = activity_event(1)
    logs_ingestion.script([400])  # the Event Hub path: refused
    registered("activity_events")(
        event_hub_batch([envelope([event])]), Invocation("activity_events", Retry(0, 8))
    )
    logs_ingestion.script([400])  # the same event in its PT1H blob: refused again
    registered("archive_blob")(append_blob(pt1h_name(this_hour()), jsonl([event])))
    app = runtime()
    [letter] = app.deadletters.list(NOT_FORWARDED)
    assert orjson.loads(letter.raw)["EventKey"] in keys_of(jsonl([event]))
    replays = [replay(runtime()) for _ in range(2)]
    assert [r["replayed"] for r in replays] == [1, 0]
    assert_sent_once(logs_ingestion, keys_of(jsonl([event])))


# --- (c) Log Analytics down during a blob run -----------------------------------------------


def big_events(first: int, count: int) -> list[dict[str, Any]]:
    """Events of about 20 KB: a 1 MiB piece holds some 50, a Logs Ingestion call about 45."""
    return [
        activity_event(n, properties={"statusCode": "OK", "pad": f"{n}" + "p" * 20_000})
        for n in range(first, first + count)
    ]


def test_log_analytics_down_during_a_blob_run_loses_nothing_and_doubles_nothing(
    app_env: dict[str, str], logs_ingestion: LogsIngestionServer
) -> None:
    data = jsonl(big_events(0, 160))  # about 3.2 MB: four pieces, several calls each
    expected = keys_of(data)
    blob = append_blob(pt1h_name(this_hour()), data)
    logs_ingestion.script([None, None])  # two calls land, then Log Analytics is down
    logs_ingestion.fail_persistently(503)
    with pytest.raises(RetryableDeliveryError):
        registered("archive_blob")(blob)
    app = runtime()
    sent_before = set(sent_counts(logs_ingestion))
    assert 0 < len(sent_before) < len(expected)
    assert marked_keys(app) == sent_before  # what was accepted is marked, nothing else
    cursor = app.cursors.load(blob.blob_name, this_hour())
    assert cursor.offset < len(data)  # the cursor did not move past what was not forwarded
    # Still down: the catch-up fails on the blob (reported, the watermark held), sends nothing.
    registered("archive_catchup")(TimerRequest(past_due=False))
    assert set(sent_counts(logs_ingestion)) == sent_before
    logs_ingestion.fail_persistently(None)  # back
    registered("archive_catchup")(TimerRequest(past_due=False))
    registered("archive_catchup")(TimerRequest(past_due=False))
    registered("archive_blob")(blob)
    assert_sent_once(logs_ingestion, expected)
    assert indexed_keys(app) == marked_keys(app) == expected
    assert list(app.deadletters.list()) == []
    assert app.cursors.load(blob.blob_name, this_hour()).offset == len(data)


def test_a_sealed_blob_is_indexed_whole_while_log_analytics_refuses_the_app(
    app_env: dict[str, str], logs_ingestion: LogsIngestionServer
) -> None:
    # Found from outside: a revoked role or a wrong rule or stream (401, 403, 404) never ends
    # by itself, and the blob path retried it forever: the archive index stopped at the
    # blob's first piece. A blob that can no longer grow is its own last attempt: what Log
    # Analytics will not take becomes not-forwarded letters, and the cursor moves on.
    hour = this_hour() - timedelta(hours=5)
    data = jsonl(events(0, 20))
    blob = append_blob(pt1h_name(hour), data)
    logs_ingestion.fail_persistently(401)
    app = runtime()
    later = datetime.now(UTC) + timedelta(hours=3)  # the blob has been still long enough
    report = app.blob_indexer.index(ArchiveBlob(archive(), blob.blob_name), now=later)
    assert report.indexed == len(keys_of(data))
    assert indexed_keys(app) == keys_of(data)
    assert app.cursors.load(blob.blob_name, hour).offset == len(data)
    letters = list(app.deadletters.list(NOT_FORWARDED))
    assert {orjson.loads(letter.raw)["EventKey"] for letter in letters} == keys_of(data)
    assert "401" in letters[0].reason
    logs_ingestion.fail_persistently(None)  # the role is granted again
    assert replay(runtime())["replayed"] == len(keys_of(data))
    assert_sent_once(logs_ingestion, keys_of(data))


def test_a_record_log_analytics_refuses_for_itself_is_dead_lettered_and_the_blob_goes_on(
    app_env: dict[str, str], logs_ingestion: LogsIngestionServer
) -> None:
    huge = activity_event(0, properties={"statusCode": "OK", "big": "z" * 1_100_000})
    data = jsonl([huge, *events(1, 5)])
    registered("archive_blob")(append_blob(pt1h_name(this_hour()), data))
    app = runtime()
    (letter,) = app.deadletters.list(NOT_FORWARDED)
    assert letter.path == "blob"
    assert orjson.loads(letter.raw)["EventKey"] in indexed_keys(app)
    assert_sent_once(logs_ingestion, keys_of(data) - {orjson.loads(letter.raw)["EventKey"]})
    assert app.cursors.load(pt1h_name(this_hour()), this_hour()).offset == len(data)


def test_without_forwarding_settings_the_blob_path_indexes_alone(
    settings: Settings, logs_ingestion: LogsIngestionServer
) -> None:
    values = {
        names.STORAGE_CONNECTION: settings.storage_connection,
        names.STORE_PREFIX: settings.store_prefix,
        names.ARCHIVE_CONTAINER: f"{settings.store_prefix}-archive",
    }
    with app_settings(values):
        archive().create_container()
        data = jsonl(events(0, 4))
        registered("archive_blob")(append_blob(pt1h_name(this_hour(), SUBSCRIPTION), data))
        assert indexed_keys(runtime()) == keys_of(data)
    assert logs_ingestion.records == []
