"""Faults: storage that goes away, answers 500/503, stalls or drops connections; Log Analytics
storms; redelivery; two instances at once; a process killed mid-index; a write stopped at each
of its steps.

Every test ends with the creed checked exactly: the committed archive blobs hold each expected
record once (nothing doubled, nothing missing, records equal), the index knows each of them
(written again, it is a duplicate), each committed blob has exactly the posting rows its
records need, and every rejection is one dead letter with its source, reason and raw text.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient, ContainerClient, LinearRetry

from shared import settings as names
from shared.adapters import log_analytics as forward
from shared.adapters import storage
from shared.adapters.archive_store import ArchiveStore
from shared.adapters.blobs import ArchiveBlob
from shared.adapters.deadletters import NOT_FORWARDED, REJECTED, UNDELIVERED
from shared.adapters.index_tables import IndexTables
from shared.bootstrap import Runtime, build_runtime, runtime
from shared.core.archive_keys import (
    KEY_ROW,
    MANIFEST_ROW,
    STATE,
    BlobRef,
    posting_ref,
    slot_partition,
)
from shared.core.keys import LOOKUP_COLUMNS
from shared.core.normalize import normalize_input
from shared.core.pt1h import BlobPath
from shared.core.records import NormalizedRecord
from shared.core.written import WriteResult
from shared.services.archive_write import ArchiveWriter, ClaimedElsewhere, postings
from shared.services.blob_indexing import BlobIndexer
from shared.services.catchup import catch_up
from shared.services.delivery import EventBody, RetryableDeliveryError, deliver
from shared.services.replay import replay
from shared.settings import Settings, load_settings
from shared.tools.azurite import Azurite
from shared.tools.local_host import Invocation, Retry, app_settings, event_hub_batch, registered
from tests.archive_view import archived_keys, committed_blobs
from tests.events import SUBSCRIPTION, activity_event, envelope
from tests.fault_proxy import (
    APPLIED_THEN_500,
    APPLIED_THEN_RESET,
    APPLIED_THEN_STALL,
    ERROR_500,
    ERROR_503,
    RESET,
    RESET_MID_RESPONSE,
    STALL,
    FaultProxy,
    Rule,
)
from tests.logs_ingestion_server import LogsIngestionServer, StaticTokenCredential

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RULE_ID = "dcr-00000000000000000000000000000000"
STREAM = "Custom-ActivityLog_CL"
MAX_RETRIES = 8  # the Event Hub function's retry policy
CLIENT_READ_TIMEOUT = 1.5  # seconds the SDK waits for an answer; a stall lasts longer
HOUR = datetime(2024, 5, 1, 10, tzinfo=UTC)  # the hour of the test blobs (activity_event's)
BAD_LINES = (b"not an event at all", b'{"time": "yesterday", "category": "Administrative"}')


# --- the expected end state ------------------------------------------------------------------


@dataclass
class Expected:
    """What the index and the dead letters must hold once every input has been delivered."""

    records: dict[str, NormalizedRecord] = field(default_factory=dict)  # by EventKey
    rejections: set[tuple[str, str, str]] = field(default_factory=set)  # (source, reason, raw)
    events: int = 0

    def add(self, data: bytes, source: str, fallback_subscription: str = "") -> Expected:
        records, rejections = normalize_input(data, source, fallback_subscription)
        self.events += len(records) + len(rejections)
        for record in records:
            self.records[record["EventKey"]] = record
        self.rejections |= {(r.source, r.reason, r.raw) for r in rejections}
        return self


def expected_blob(data: bytes, name: str) -> Expected:
    return Expected().add(data, name, BlobPath.parse(name).subscription)


def expected_bodies(bodies: list[bytes], partition: str = "0", first: int = 0) -> Expected:
    expected = Expected()
    for number, body in enumerate(bodies):
        expected.add(body, f"eventhub:partition={partition}:sequence={first + number}")
    return expected


def event_keys_of(app: Runtime) -> list[str]:
    """EventKeys of every archived record (committed blobs), duplicates kept."""
    return archived_keys(app)


def month_rows(app: Runtime) -> Iterator[tuple[str, dict[str, Any]]]:
    """(month, row) of every row of every month table."""
    for month in app.tables.months():
        for row in app.tables.query(month, "PartitionKey ge @low", {"low": "0"}):
            yield month, dict(row)


def assert_index_exact(app: Runtime, blobs: dict[BlobRef, list[NormalizedRecord]]) -> None:
    """Each committed blob has exactly the posting rows its records need, and the index knows
    every archived event: written again, each is a duplicate of what is there."""
    found: dict[tuple[str, str, str], bytes] = {}
    for month, row in month_rows(app):
        # Postings of a blob never committed (a write stopped before its manifest) are never
        # read: a query only follows postings to committed blobs.
        if row["PartitionKey"][0] in LOOKUP_COLUMNS and (
            posting_ref(month, row["RowKey"]) in blobs
        ):
            found[(month, row["PartitionKey"], row["RowKey"])] = bytes(row["E"])
    wanted = {
        (ref.month, posting["PartitionKey"], posting["RowKey"]): bytes(posting["E"])
        for ref, records in blobs.items()
        for posting in postings(ref, records)
    }
    assert found == wanted, "postings differ from what the committed blobs hold"
    archived = [record for records in blobs.values() for record in records]
    # Written late (every claim not committed is stale by then), by an instance of its own.
    again = later_writer(app).write(archived)
    assert (len(again.indexed), len(again.existing)) == (0, len(archived)), "claims lost"


def assert_exact(app: Runtime, expected: Expected, *, other_letters: int = 0) -> None:
    """The creed, exactly: each record in one committed blob, whole, known to the index, with
    the blob's postings; one dead letter per rejection."""
    blobs: dict[BlobRef, list[NormalizedRecord]] = {}
    for ref in committed_blobs(app):
        found = app.reader.blob_records(ref)
        manifest = app.reader.manifest(ref)
        assert isinstance(found, list) and manifest is not None, ref.name
        assert manifest.count == len(found), f"{ref.name}: manifest and blob disagree"
        blobs[ref] = found
    keys = [record["EventKey"] for records in blobs.values() for record in records]
    doubled = sorted(key for key, count in Counter(keys).items() if count > 1)
    assert doubled == [], f"archived twice: {doubled}"
    missing = sorted(set(expected.records) - set(keys))
    extra = sorted(set(keys) - set(expected.records))
    assert (missing, extra) == ([], []), f"missing {len(missing)}, unexpected {len(extra)}"
    for records in blobs.values():
        for record in records:
            assert record == expected.records[record["EventKey"]]
    assert_index_exact(app, blobs)
    letters = list(app.deadletters.list())
    rejected = [letter for letter in letters if letter.kind == REJECTED]
    assert len(rejected) == len(expected.rejections)
    assert {(letter.source, letter.reason, letter.raw) for letter in rejected} == (
        expected.rejections
    )
    assert all(letter.reason for letter in rejected)
    assert len(letters) - len(rejected) == other_letters, [letter.kind for letter in letters]
    assert len(set(keys)) + len(rejected) == len(expected.records) + len(expected.rejections)


# --- building blocks ---------------------------------------------------------------------------


def pt1h_name(subscription: str = SUBSCRIPTION, hour: datetime = HOUR) -> str:
    return (
        f"resourceId=/SUBSCRIPTIONS/{subscription.upper()}/y={hour:%Y}/m={hour:%m}/d={hour:%d}"
        f"/h={hour:%H}/m=00/PT1H.json"
    )


def with_archive(app: Runtime) -> Runtime:
    """The app with an archive container of its own store (created if missing)."""
    container = app.stores.blob_service.get_container_client(f"{app.settings.store_prefix}-archive")
    object.__setattr__(app.stores, "archive", container)
    if not container.exists():
        container.create_container()
    return app


def blob_lines(count: int, first: int = 0, bad_every: int = 0) -> bytes:
    """JSON Lines of `count` events, with a bad line after every `bad_every` events."""
    data = b""
    for number in range(first, first + count):
        data += orjson.dumps(activity_event(number)) + b"\n"
        if bad_every and (number - first) % bad_every == bad_every - 1:
            data += BAD_LINES[number % 2] + b"\n"
    return data


def hub_bodies(count: int, per_body: int = 20, first: int = 0) -> list[bytes]:
    events = [activity_event(n) for n in range(first, first + count)]
    bodies = [envelope(events[i : i + per_body]) for i in range(0, count, per_body)]
    # A poison body and a body with one unusable event: dead-lettered, never retried.
    return [*bodies, b"{not json", envelope([activity_event(first + count), {"no": "time"}])]


def quick_storage_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's own `connect`, with few and quick SDK retries and a short read timeout.

    The SDK's defaults (exponential retries from 15 s, 300 s timeouts) would turn each injected
    fault into minutes; the app's code paths are the same either way.
    """
    real_blob, real_table = BlobServiceClient, TableServiceClient

    class QuickBlobService:
        @staticmethod
        def from_connection_string(connection: str, **options: Any) -> BlobServiceClient:
            return real_blob.from_connection_string(
                connection,
                # Typed int, used as a float (random.uniform): a twentieth of a second.
                retry_policy=LinearRetry(
                    backoff=cast(int, 0.05), random_jitter_range=0, retry_total=2
                ),
                # The test's own timeouts, over the app's (shared.adapters.storage).
                **{**options, "connection_timeout": 2, "read_timeout": CLIENT_READ_TIMEOUT},
            )

    class QuickTableService:
        @staticmethod
        def from_connection_string(connection: str, **options: Any) -> TableServiceClient:
            return real_table.from_connection_string(
                connection,
                retry_total=2,
                retry_backoff_factor=0.05,
                # The test's own timeouts, over the app's (shared.adapters.storage).
                **{**options, "connection_timeout": 2, "read_timeout": CLIENT_READ_TIMEOUT},
            )

    monkeypatch.setattr(storage, "BlobServiceClient", QuickBlobService)
    monkeypatch.setattr(storage, "TableServiceClient", QuickTableService)


def store_settings(settings: Settings, connection: str) -> dict[str, str]:
    return {names.STORAGE_CONNECTION: connection, names.STORE_PREFIX: settings.store_prefix}


def drive_event_hub(
    bodies: list[bytes], *, attempts: int = MAX_RETRIES, first_sequence: int = 0
) -> int:
    """Invoke `activity_events` as the host would under its retry policy: again after each
    exception, the same batch, until an attempt returns. Returns the attempt that returned."""
    function = registered("activity_events")
    batch = event_hub_batch(bodies, first_sequence=first_sequence)
    for attempt in range(attempts + 1):
        try:
            function(batch, Invocation("activity_events", Retry(attempt, MAX_RETRIES)))
        except Exception:
            continue
        return attempt
    raise AssertionError("the batch never went through")


def drive_blob(
    indexer: BlobIndexer, container: ContainerClient, name: str, attempts: int = 12
) -> int:
    """Index a blob again after each failure (the blob trigger's retries, then catch-up)."""
    for attempt in range(attempts):
        try:
            indexer.index(ArchiveBlob(container, name))
        except Exception:
            continue
        return attempt
    raise AssertionError("the blob was never indexed")


@pytest.fixture
def proxy(azurite: Azurite) -> Iterator[FaultProxy]:
    with FaultProxy(azurite, lifetime=120, max_stall=5) as running:
        yield running


class DiskAzurite(Azurite):
    """Azurite on disk whose stop does not wait out a process that has already closed.

    On SIGINT Azurite closes its services, which saves its Loki databases (those with unsaved
    changes) at once; here the node process then sometimes lingers (sockets the sandbox's
    loopback never drains) until `Azurite.stop` kills it after 5 s. Nothing is lost by killing
    it once the databases are saved, so this stop waits for that, for the process's exit, or
    1.5 s (ample for a close's save of these small databases), whichever comes first.
    """

    DATABASES = ("__azurite_db_table__.json", "__azurite_db_blob__.json")

    def stop(self) -> None:
        process = self._process
        self._process = None
        if process is None or process.poll() is not None:
            return
        signalled = time.time()
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        while process.poll() is None and time.monotonic() < started + 5:
            if all(self._saved_after(name, signalled) for name in self.DATABASES):
                time.sleep(0.2)  # the save that changed the time stamp has finished writing
                break
            if time.monotonic() > started + 1.5:
                break  # a database with nothing unsaved is not written again on close
            time.sleep(0.02)
        if process.poll() is None:
            process.kill()
        process.wait()

    def _saved_after(self, name: str, moment: float) -> bool:
        try:
            return (self.location / name).stat().st_mtime >= moment
        except OSError:
            return False


@pytest.fixture
def disk_azurite(tmp_path: Path) -> Iterator[Azurite]:
    """Azurite of this test's own, persisting to disk: it can be stopped and started again."""
    emulator = DiskAzurite(tmp_path / "az").start()
    try:
        yield emulator
    finally:
        emulator.close()


@pytest.fixture
def disk_app(disk_azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    quick_storage_clients(monkeypatch)
    settings = load_settings(
        {names.STORAGE_CONNECTION: disk_azurite.connection_string, names.STORE_PREFIX: "faults"}
    )
    return with_archive(build_runtime(settings))


# --- storage unavailable: a real Azurite stopped and started again ---------------------------


def test_storage_stopped_after_the_first_piece_of_a_blob_then_restarted(
    disk_azurite: Azurite, disk_app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = disk_app
    name = pt1h_name()
    data = blob_lines(60, bad_every=20)
    app.stores.archive.get_blob_client(name).upload_blob(data, blob_type="AppendBlob")
    indexer = BlobIndexer(app.writer, app.cursors, app.deadletters, chunk_bytes=6000)

    # A thread takes storage away once the first piece's cursor is saved; the indexer is held
    # until storage is down, then goes on against nothing.
    first_saved, down = threading.Event(), threading.Event()
    real_save = app.cursors.save

    def save(cursor: Any) -> bool:
        moved = real_save(cursor)
        if not first_saved.is_set():
            first_saved.set()
            assert down.wait(30)
        return moved

    def stop_storage() -> None:
        if first_saved.wait(30):
            disk_azurite.stop()
        down.set()

    monkeypatch.setattr(app.cursors, "save", save)
    stopper = threading.Thread(target=stop_storage)
    stopper.start()
    with pytest.raises(Exception):  # noqa: B017 - whatever the SDK raises for no storage
        indexer.index(ArchiveBlob(app.stores.archive, name))
    stopper.join()

    disk_azurite.start()  # same ports, same folder: what was written is still there
    cursor = app.cursors.load(name, BlobPath.parse(name).hour)
    assert 0 < cursor.offset < len(data)  # it really stopped in the middle of the blob
    done_before = cursor.events
    report = indexer.index(ArchiveBlob(app.stores.archive, name))
    assert report.events == expected_blob(data, name).events - done_before
    assert report.indexed + report.duplicates + report.deadlettered == report.events
    assert_exact(app, expected_blob(data, name))
    cursor = app.cursors.load(name, BlobPath.parse(name).hour)
    assert (cursor.offset, cursor.events) == (len(data), expected_blob(data, name).events)


def test_storage_stopping_at_arbitrary_moments_of_a_growing_blob(
    disk_azurite: Azurite, disk_app: Runtime
) -> None:
    app = disk_app
    name = pt1h_name()
    blob = app.stores.archive.get_blob_client(name)
    blob.create_append_blob()
    indexer = BlobIndexer(app.writer, app.cursors, app.deadletters, chunk_bytes=10_000)
    data = b""
    interrupted = 0
    for round_number, delay in enumerate((0.02, 0.1, 0.25)):
        part = blob_lines(50, first=100 * round_number, bad_every=25)
        blob.append_block(part)
        data += part
        stopper = threading.Timer(delay, disk_azurite.stop)
        stopper.start()
        try:
            indexer.index(ArchiveBlob(app.stores.archive, name))
        except Exception:  # storage went away mid-run: expected
            interrupted += 1
        stopper.join()
        disk_azurite.start()
        # The catch-up timer's next run goes on from the cursor.
        report = catch_up(
            indexer,
            app.stores.archive,
            now=HOUR,
            hours=2,
        )
        assert report.failed == []
    assert interrupted > 0  # the stops did land in the middle of runs
    assert_exact(app, expected_blob(data, name))
    cursor = app.cursors.load(name, BlobPath.parse(name).hour)
    assert (cursor.offset, cursor.events) == (len(data), expected_blob(data, name).events)


def test_storage_stopped_mid_event_hub_batch_then_the_retry_policy_redrives_it(
    disk_azurite: Azurite, disk_app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = hub_bodies(120)
    settings = store_settings(disk_app.settings, disk_azurite.connection_string)
    function = registered("activity_events")
    batch = event_hub_batch(bodies)
    with app_settings(settings):
        app = runtime()
        # Storage goes away once the batch's blob is uploaded: claimed and uploaded, neither
        # posted nor committed.
        real_put = app.archive.put
        calls = Counter[str]()

        def put(name: str, blob: Any) -> None:
            real_put(name, blob)
            calls["put"] += 1
            if calls["put"] == 1:
                disk_azurite.stop()

        monkeypatch.setattr(app.archive, "put", put)
        with pytest.raises(RetryableDeliveryError):
            function(batch, Invocation("activity_events", Retry(0, MAX_RETRIES)))
        # Still down for the first retry: it raises again (whatever fails first), nothing is
        # given up while retries remain.
        with pytest.raises(Exception):  # noqa: B017
            function(batch, Invocation("activity_events", Retry(1, MAX_RETRIES)))
        disk_azurite.start()
        function(batch, Invocation("activity_events", Retry(2, MAX_RETRIES)))
        # The host's at-least-once delivery may bring it once more: nothing changes.
        function(batch, Invocation("activity_events", Retry(0, MAX_RETRIES)))
    assert_exact(app, expected_bodies(bodies))  # and no `undelivered` letter: none was due


# --- storage misbehaving: the fault proxy ------------------------------------------------------

EVENT_HUB_FAULTS: dict[str, list[Rule]] = {
    "table-500s": [Rule(ERROR_500, service="table", every=2, times=8)],
    "503s-on-both": [
        Rule(ERROR_503, service="table", method="POST", times=5),
        Rule(ERROR_503, service="blob", times=4),
    ],
    "stalls": [
        Rule(STALL, service="table", method="POST", skip=1, times=1),
        Rule(APPLIED_THEN_STALL, service="table", method="POST", skip=4, times=1),
        Rule(STALL, service="blob", method="PUT", times=1),
    ],
    "resets": [
        Rule(RESET, service="table", skip=1, every=3, times=3),
        Rule(APPLIED_THEN_RESET, service="table", method="POST", skip=2, every=4, times=3),
        Rule(RESET, service="blob", times=2),
        Rule(APPLIED_THEN_RESET, service="blob", skip=1, times=1),
    ],
    "cut-responses": [
        Rule(RESET_MID_RESPONSE, service="table", method="POST", skip=1, every=3, times=4),
        Rule(RESET_MID_RESPONSE, service="blob", times=2),
    ],
    "applied-then-500": [
        Rule(APPLIED_THEN_500, service="table", method="POST", every=2, times=6),
        Rule(APPLIED_THEN_500, service="blob", times=2),
    ],
}


@pytest.mark.parametrize("scenario", sorted(EVENT_HUB_FAULTS))
def test_event_hub_delivery_through_storage_faults(
    scenario: str,
    settings: Settings,
    proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    quick_storage_clients(monkeypatch)
    build_runtime(settings)  # tables and containers exist before the faults start
    bodies = hub_bodies(150, per_body=30)
    with app_settings(store_settings(settings, proxy.connection_string)):
        app = runtime()
        for rule in EVENT_HUB_FAULTS[scenario]:
            proxy.add_rule(rule)
        attempt = drive_event_hub(bodies)
        proxy.clear()
        assert attempt < MAX_RETRIES  # went through while retries remained
        assert proxy.injected(), "no fault was injected"
        drive_event_hub(bodies)  # redelivered after the outage: nothing changes
    assert_exact(app, expected_bodies(bodies))


BLOB_FAULTS: dict[str, list[Rule]] = {
    "503s-on-both": [
        Rule(ERROR_503, service="blob", method="GET", every=2, times=5),
        Rule(ERROR_503, service="table", every=3, times=6),
    ],
    "read-stalls-and-cuts": [
        Rule(STALL, service="blob", method="GET", path="PT1H", skip=1, times=1),
        Rule(
            RESET_MID_RESPONSE, service="blob", method="GET", path="PT1H", skip=2, every=2, times=4
        ),
    ],
    "cursor-faults": [
        Rule(APPLIED_THEN_RESET, service="table", path="cursors", skip=1, every=2, times=3),
        Rule(APPLIED_THEN_500, service="table", path="cursors", skip=2, every=3, times=2),
        Rule(APPLIED_THEN_STALL, service="table", path="cursors", skip=3, times=1),
    ],
    "index-faults": [
        Rule(RESET_MID_RESPONSE, service="table", path=r"\$batch", skip=1, every=4, times=3),
        Rule(APPLIED_THEN_RESET, service="table", path=r"\$batch", skip=3, every=5, times=3),
        Rule(ERROR_500, service="table", path=r"\$batch", every=7, times=3),
        Rule(RESET, service="blob", method="PUT", times=2),
    ],
}


@pytest.mark.parametrize("scenario", sorted(BLOB_FAULTS))
def test_blob_indexing_through_storage_faults(
    scenario: str,
    settings: Settings,
    proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    quick_storage_clients(monkeypatch)
    direct = with_archive(build_runtime(settings))
    app = with_archive(build_runtime(replace(settings, storage_connection=proxy.connection_string)))
    name = pt1h_name()
    blob = direct.stores.archive.get_blob_client(name)
    blob.create_append_blob()
    indexer = BlobIndexer(app.writer, app.cursors, app.deadletters, chunk_bytes=8000)
    for rule in BLOB_FAULTS[scenario]:
        proxy.add_rule(rule)
    data = b""
    for round_number in range(2):
        part = blob_lines(40, first=100 * round_number, bad_every=17)
        cut = len(part) // 2 + 7  # an append that ends mid-line
        for piece in (part[:cut], part[cut:]):
            blob.append_block(piece)
            data += piece
            drive_blob(indexer, app.stores.archive, name)
    proxy.clear()
    assert proxy.injected(), "no fault was injected"
    drive_blob(indexer, app.stores.archive, name)
    assert_exact(app, expected_blob(data, name))
    cursor = app.cursors.load(name, BlobPath.parse(name).hour)
    assert (cursor.offset, cursor.events) == (len(data), expected_blob(data, name).events)


def test_the_last_attempt_dead_letters_when_a_transaction_answer_is_cut_off(
    settings: Settings, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    quick_storage_clients(monkeypatch)
    build_runtime(settings)
    bodies = hub_bodies(60, per_body=30)
    with app_settings(store_settings(settings, proxy.connection_string)):
        app = runtime()
        # Every transaction is applied, but its answer is cut off mid-body: the lookups land,
        # the writer raises before any record row is created.
        proxy.add_rule(Rule(RESET_MID_RESPONSE, service="table", path=r"\$batch", times=1000))
        raised = ""
        try:
            registered("activity_events")(
                event_hub_batch(bodies), Invocation("activity_events", Retry(8, MAX_RETRIES))
            )
        except Exception as error:  # the host would checkpoint past the batch now
            raised = f"{type(error).__module__}.{type(error).__name__}"
        proxy.clear()
    # On its last attempt the function must return (the host checkpoints either way) with
    # every record indexed or kept whole in an `undelivered` dead letter.
    indexed = set(event_keys_of(app))
    undelivered = list(app.deadletters.list(UNDELIVERED))
    kept = {
        record["EventKey"]
        for letter in undelivered
        for record in normalize_input(letter.raw, letter.source)[0]
    }
    lost = set(expected_bodies(bodies).records) - indexed - kept
    assert (raised, sorted(lost)) == ("", [])


# --- Log Analytics storms ----------------------------------------------------------------------


@pytest.fixture
def logs_ingestion() -> Iterator[LogsIngestionServer]:
    with LogsIngestionServer(RULE_ID, STREAM, retry_after_seconds=1) as server:
        yield server


@pytest.fixture
def forwarding(
    settings: Settings, logs_ingestion: LogsIngestionServer, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """App settings that forward to the loopback endpoint, with a static test token and a
    client whose own retries are few and quick (429 still waits its Retry-After)."""
    monkeypatch.setattr(
        "shared.adapters.storage.credential_for", lambda _settings: StaticTokenCredential()
    )
    quick = functools.partial(forward.build_client, retry_total=2, retry_backoff_factor=0.05)
    monkeypatch.setattr("shared.adapters.log_analytics.build_client", quick)
    return {
        **store_settings(settings, settings.storage_connection),
        names.LOGS_INGESTION_ENDPOINT: logs_ingestion.endpoint,
        names.LOGS_INGESTION_RULE_ID: RULE_ID,
        names.LOGS_INGESTION_STREAM: STREAM,
    }


def padded_bodies(count: int, pad: int = 150_000) -> list[bytes]:
    """Records big enough that a batch takes several calls (about six per 1 MB call)."""
    events = [
        activity_event(n, properties={"statusCode": "OK", "pad": f"{n}" + "p" * pad})
        for n in range(count)
    ]
    return [envelope(events[i : i + 10]) for i in range(0, count, 10)]


def assert_forwarded_once_or_dead_lettered(
    app: Runtime, server: LogsIngestionServer, expected: Expected
) -> tuple[set[str], set[str]]:
    """Each record in Log Analytics exactly once, or (not both) in a not-forwarded letter."""
    sent = Counter(str(record["EventKey"]) for record in server.records)
    twice = sorted(key for key, count in sent.items() if count > 1)
    assert twice == [], f"sent twice: {twice}"
    letters = list(app.deadletters.list(NOT_FORWARDED))
    unsent = Counter(str(orjson.loads(letter.raw)["EventKey"]) for letter in letters)
    assert max(unsent.values(), default=0) <= 1
    assert all(letter.reason for letter in letters)
    assert set(sent) & set(unsent) == set(), "in Log Analytics and dead-lettered as not sent"
    assert set(sent) | set(unsent) == set(expected.records)
    # No mark on a key row means not forwarded (new rows carry none).
    unmarked = app.marks.unforwarded(expected.records.values())
    assert set(expected.records) - unmarked == set(sent), "marks differ from what was sent"
    return set(sent), set(unsent)


@pytest.mark.parametrize(
    ("storm", "script"),
    [
        ("429", [429] * 4),  # each waits its Retry-After of 1 s
        ("500", [500] * 7),
        ("429-and-500", [None, 429, 500, 500, 429, None, 500, 500, 500]),
    ],
)
def test_log_analytics_storms_during_forwarding(
    storm: str,
    script: list[int | None],
    forwarding: dict[str, str],
    logs_ingestion: LogsIngestionServer,
) -> None:
    bodies = padded_bodies(30)
    expected = expected_bodies(bodies)
    with app_settings(forwarding):
        logs_ingestion.script(script)
        attempt = drive_event_hub(bodies)
        assert 0 < attempt < MAX_RETRIES  # the storm cost retries, and they sufficed
        app = runtime()
    sent, unsent = assert_forwarded_once_or_dead_lettered(app, logs_ingestion, expected)
    assert (len(sent), unsent) == (len(expected.records), set())
    assert_exact(app, expected)


def test_a_413_storm_dead_letters_what_was_refused_and_replay_sends_it_once(
    forwarding: dict[str, str], logs_ingestion: LogsIngestionServer
) -> None:
    bodies = padded_bodies(20)
    expected = expected_bodies(bodies)
    with app_settings(forwarding):
        # The first call (about six records) is refused as too large, and so is every half of
        # it: its records are refused for themselves. The other calls pass.
        logs_ingestion.script([413] * 11)
        assert drive_event_hub(bodies) == 0
        app = runtime()
        sent, unsent = assert_forwarded_once_or_dead_lettered(app, logs_ingestion, expected)
        assert unsent and sent
        assert replay(app, kind=NOT_FORWARDED) == {"replayed": len(unsent), "still_failing": 0}
    sent, unsent = assert_forwarded_once_or_dead_lettered(app, logs_ingestion, expected)
    assert (len(sent), unsent) == (len(expected.records), set())
    assert_exact(app, expected)


def test_a_storm_outlasting_the_retries_dead_letters_the_rest_then_replay_sends_it_once(
    forwarding: dict[str, str], logs_ingestion: LogsIngestionServer
) -> None:
    bodies = padded_bodies(20)
    expected = expected_bodies(bodies)
    function = registered("activity_events")
    batch = event_hub_batch(bodies)
    with app_settings(forwarding):
        logs_ingestion.script([None])  # one call lands, then nothing does
        logs_ingestion.fail_persistently(500)
        for attempt in range(MAX_RETRIES):
            with pytest.raises(RetryableDeliveryError):
                function(batch, Invocation("activity_events", Retry(attempt, MAX_RETRIES)))
        function(batch, Invocation("activity_events", Retry(MAX_RETRIES, MAX_RETRIES)))
        app = runtime()
        sent, unsent = assert_forwarded_once_or_dead_lettered(app, logs_ingestion, expected)
        assert sent and unsent
        logs_ingestion.fail_persistently(None)
        assert replay(app) == {"replayed": len(unsent), "still_failing": 0}
    sent, unsent = assert_forwarded_once_or_dead_lettered(app, logs_ingestion, expected)
    assert (len(sent), unsent) == (len(expected.records), set())
    assert_exact(app, expected)


def test_a_413_then_a_500_storm_leaves_each_record_sent_once_or_dead_lettered(
    forwarding: dict[str, str], logs_ingestion: LogsIngestionServer
) -> None:
    bodies = padded_bodies(20)
    expected = expected_bodies(bodies)
    with app_settings(forwarding):
        # First call refused (and its halves, down to single records), the second call's
        # attempts fail with 500 until the client gives up: the invocation is retried.
        logs_ingestion.script([*[413] * 11, *[500] * 3])
        assert drive_event_hub(bodies) == 1
        app = runtime()
        replay(app, kind=NOT_FORWARDED)
    assert_forwarded_once_or_dead_lettered(app, logs_ingestion, expected)


def test_a_storage_error_on_the_forwarded_mark_sends_nothing_twice(
    forwarding: dict[str, str],
    logs_ingestion: LogsIngestionServer,
    proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    quick_storage_clients(monkeypatch)
    bodies = padded_bodies(10)
    expected = expected_bodies(bodies)
    with app_settings({**forwarding, names.STORAGE_CONNECTION: proxy.connection_string}):
        # The marks are the only transactions that update rows `f…` with `If-Match: *`.
        marks = r"(PATCH|PUT|MERGE) [^\n]*RowKey='f[\s\S]*?If-Match: \*"
        proxy.add_rule(Rule(ERROR_503, service="table", path=r"\$batch", body=marks, times=3))
        # The mark is tried again within the invocation: no redelivery, nothing sent twice.
        assert drive_event_hub(bodies) == 0
        app = runtime()
    assert_exact(app, expected)
    assert_forwarded_once_or_dead_lettered(app, logs_ingestion, expected)


# --- redelivery and concurrency ----------------------------------------------------------------


def test_one_batch_delivered_three_times_is_one_row_each(settings: Settings) -> None:
    bodies = hub_bodies(90, per_body=30)
    function = registered("activity_events")
    with app_settings(store_settings(settings, settings.storage_connection)):
        app = runtime()
        for delivery in range(3):
            # Same events, same hub coordinates, as the host redelivers after a lost checkpoint.
            function(
                event_hub_batch(bodies, partition="0"),
                Invocation("activity_events", Retry(delivery, MAX_RETRIES)),
            )
    assert_exact(app, expected_bodies(bodies))


def test_two_instances_on_one_growing_blob(settings: Settings, app: Runtime) -> None:
    app = with_archive(app)
    name = pt1h_name()
    blob = app.stores.archive.get_blob_client(name)
    blob.create_append_blob()
    data = blob_lines(150, bad_every=40)
    writers = [CountingWriter(app.tables, app.archive) for _ in range(2)]
    instances = [
        BlobIndexer(writer, app.cursors, app.deadletters, chunk_bytes=size)
        for writer, size in zip(writers, (9_000, 20_480), strict=True)
    ]
    appended = threading.Event()
    errors: list[BaseException] = []

    def append() -> None:
        generator = random.Random(11)
        position = 0
        while position < len(data):
            step = generator.randint(700, 9000)  # appends end anywhere, mid-line included
            blob.append_block(data[position : position + step])
            position += step
            time.sleep(generator.uniform(0, 0.03))
        appended.set()

    def run(indexer: BlobIndexer) -> None:
        deadline = time.monotonic() + 60
        try:
            while True:
                finished = appended.is_set()
                try:
                    indexer.index(ArchiveBlob(app.stores.archive, name))
                except ClaimedElsewhere:
                    # The other instance is archiving some of the same events: a next trigger
                    # or catch-up run goes on once it has committed them.
                    assert time.monotonic() < deadline, HELD_FOR_GOOD
                    time.sleep(0.05)
                    continue
                if finished:
                    return
                time.sleep(0.02)  # a next trigger or catch-up run, not a busy loop
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=append)] + [
        threading.Thread(target=run, args=(indexer,)) for indexer in instances
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    expected = expected_blob(data, name)
    assert_exact(app, expected)
    # Each record archived by exactly one of them; the cursor counted each line once.
    assert sum(writer.archived for writer in writers) == len(expected.records)
    cursor = app.cursors.load(name, BlobPath.parse(name).hour)
    assert (cursor.offset, cursor.lines) == (len(data), data.count(b"\n"))
    assert cursor.events == expected.events
    assert cursor.indexed + cursor.duplicates + cursor.deadlettered == cursor.events


# --- a write stopped at each of its steps, then recovered ----------------------------------------

HELD_FOR_GOOD = (
    "BUG: writers of overlapping batches keep raising ClaimedElsewhere until CLAIM_TIMEOUT: each "
    "one's cached claim log (shared/services/claim_log.py) still holds the other's claims after "
    "they were taken back (deleted)"
)


class CountingWriter(ArchiveWriter):
    """The archive writer, counting the records its writes archived (committed) themselves."""

    def __init__(self, tables: IndexTables, archive: ArchiveStore) -> None:
        super().__init__(tables, archive)
        self.archived = 0
        self._count_lock = threading.Lock()

    def write(self, records: Sequence[NormalizedRecord]) -> WriteResult:
        result = super().write(records)
        with self._count_lock:
            self.archived += len(result.indexed)
        return result


def later_writer(app: Runtime) -> ArchiveWriter:
    """A writer whose clock is past CLAIM_TIMEOUT: every claim it finds uncommitted is stale."""
    return ArchiveWriter(
        app.tables, app.archive, clock=lambda: datetime.now(UTC) + timedelta(hours=1)
    )


def write_at_once(writers: list[CountingWriter], batches: list[list[NormalizedRecord]]) -> None:
    """Each writer writes its batch, all released together, again after ClaimedElsewhere (the
    caller's retry, as Event Hub's retry policy or the next blob trigger does)."""
    start = threading.Barrier(len(writers))
    errors: list[BaseException] = []

    def run(writer: ArchiveWriter, batch: list[NormalizedRecord]) -> None:
        deadline = time.monotonic() + 30
        try:
            start.wait()
            while True:
                try:
                    writer.write(batch)
                    return
                except ClaimedElsewhere:
                    assert time.monotonic() < deadline, HELD_FOR_GOOD
                    time.sleep(random.uniform(0.05, 0.2))
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [
        threading.Thread(target=run, args=pair) for pair in zip(writers, batches, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []


def slot_time(round_number: int, n: int) -> str:
    moment = HOUR + timedelta(hours=2 * round_number, minutes=4 * n)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.0000000Z"


def test_two_writers_at_once_on_overlapping_batches_archive_each_event_once(
    app: Runtime,
) -> None:
    expected = Expected()
    for round_number in range(3):
        # Four minutes apart: the batches span several claim slots, claimed side by side, so
        # each writer may win some slots of the overlap and lose others.
        events = [
            activity_event(1000 * round_number + n, time=f"{slot_time(round_number, n)}")
            for n in range(90)
        ]
        expected.add(envelope(events), "x")
        records = normalize_input(envelope(events), "x")[0]
        # Two instances, each with clients of its own, on batches sharing 30 events.
        writers = [CountingWriter(build_runtime(app.settings).tables, app.archive) for _ in "ab"]
        write_at_once(writers, [records[:60], records[30:]])
        assert sum(writer.archived for writer in writers) == len(records)
    assert archived_keys(app) == sorted(expected.records)
    assert_exact(app, expected)


def claim_logs(instance: Runtime) -> Any:
    """An instance's claim logs (shared.services.claim_log.ClaimLogs): `append` is its claim
    insert, a transaction of its lane's claim rows and registry row in one slot."""
    return instance.writer._claims.logs


def hold_append(
    instance: Runtime, slot: str, until: threading.Event, done: threading.Event | None = None
) -> None:
    """Hold an instance's first claim append to `slot` until `until` is set; set `done` after
    it. Other slots' appends go on (they run side by side)."""
    logs = claim_logs(instance)
    real = logs.append
    held = threading.Event()

    def append(month: str, entities: Any, etag: str | None) -> Any:
        first = bool(entities) and entities[0]["PartitionKey"] == slot and not held.is_set()
        if first:
            held.set()
            until.wait(10)
        try:
            return real(month, entities, etag)
        finally:
            if first and done is not None:
                done.set()

    object.__setattr__(logs, "append", append)


def test_two_writers_each_winning_a_slot_of_the_overlap_archive_each_event_once(
    app: Runtime,
) -> None:
    events = [activity_event(n, time=slot_time(0, n)) for n in range(90)]
    records = normalize_input(envelope(events), "x")[0]
    first, last = (
        slot_partition(records[30]["TimeGenerated"]),
        slot_partition(records[59]["TimeGenerated"]),
    )
    assert first != last  # the overlap spans two claim slots
    first_by_a, last_by_b, now = threading.Event(), threading.Event(), threading.Event()
    now.set()
    a, b = build_runtime(app.settings), build_runtime(app.settings)
    # A claims the overlap's first slot before B does, B the last slot before A does.
    hold_append(a, first, until=now, done=first_by_a)
    hold_append(a, last, until=last_by_b)
    hold_append(b, first, until=first_by_a)
    hold_append(b, last, until=now, done=last_by_b)
    writers = [CountingWriter(instance.tables, instance.archive) for instance in (a, b)]
    write_at_once(writers, [records[:60], records[30:]])
    assert sum(writer.archived for writer in writers) == len(records)
    assert_exact(app, Expected().add(envelope(events), "x"))


TAKEN_BACK_CACHED = (
    "BUG: a writer's cached claim log (shared/services/claim_log.py) still holds claims that "
    "their writer took back (deleted), and reads only RowKeys past the last one it saw: it "
    "misses the claim appended again at that sequence number"
)


def test_a_claim_taken_back_does_not_hide_the_next_claim_at_its_number(app: Runtime) -> None:
    """One event in an hour held by a stalled writer; five in the next hour that B claims and
    takes back (one of its events is held), while W reads that hour and caches B's claim."""
    times = [f"2024-05-01T{10 + (n > 0)}:00:{n:02d}.0000000Z" for n in range(8)]
    events = [activity_event(n, time=times[n]) for n in range(8)]
    records = normalize_input(envelope(events), "x")[0]
    by_number = {int(r["DurationMs"]) - 100: r for r in records}  # durationMs = 100 + n
    stalled = build_runtime(app.settings)
    with pytest.MonkeyPatch.context() as patch:
        fail_step(patch, stalled, "manifests", 1, applied=False)
        with pytest.raises(StepFailed):
            stalled.writer.write([by_number[0]])  # its claim is young: held for minutes
    b = build_runtime(app.settings)
    at_delete, go = threading.Event(), threading.Event()
    real_fence = b.tables.replace_if

    def fence(month: str, entity: Any, etag: str) -> Any:
        if entity.get(STATE) == "f":  # B takes back: it fences its own blob
            at_delete.set()
            assert go.wait(30)
        return real_fence(month, entity, etag)

    object.__setattr__(b.tables, "replace_if", fence)
    taking_back = threading.Thread(
        target=_write_quietly, args=(b.writer, [by_number[n] for n in range(6)])
    )
    taking_back.start()
    watcher = build_runtime(app.settings).writer  # one process's writer, across its writes
    try:
        assert at_delete.wait(30)  # B appended its claim of events 1-5, and takes it back...
        with pytest.raises(ClaimedElsewhere):
            watcher.write([by_number[1]])  # ...after W read it
    finally:
        go.set()
        taking_back.join(timeout=30)
    c = build_runtime(app.settings).writer
    assert len(c.write([by_number[6]]).indexed) == 1  # appended at the number B's claim had
    again = watcher.write([by_number[6], by_number[7]])  # another grouping: another blob
    indexed = [record["EventKey"] for record in again.indexed]
    assert indexed == [by_number[7]["EventKey"]], f"{TAKEN_BACK_CACHED}: event 6 archived twice"
    assert archived_keys(app).count(by_number[6]["EventKey"]) == 1


def _write_quietly(writer: ArchiveWriter, records: list[NormalizedRecord]) -> None:
    with contextlib.suppress(ClaimedElsewhere):
        writer.write(records)


STALE_CLAIM_DOUBLED = (
    "BUG: a stale claim's own writer (its batch redelivered) and a writer taking the claim over "
    "both archived the events: shared/services/claims.py Claimer._owners counts a claim of "
    "this write's own blob as live however old it is, while other writers count it as stale"
)


def quick_timeout_writer(instance: Runtime) -> ArchiveWriter:
    """An instance's writer for which a claim goes stale after seconds."""
    return ArchiveWriter(instance.tables, instance.archive, claim_timeout=QUICK_CLAIM_TIMEOUT)


QUICK_CLAIM_TIMEOUT = timedelta(seconds=3)


def test_a_stale_claims_own_writer_and_its_taker_at_once_archive_each_event_once(
    app: Runtime,
) -> None:
    records = normalize_input(envelope([activity_event(n) for n in range(10)]), "x")[0]
    with pytest.MonkeyPatch.context() as patch:
        fail_step(patch, app, "manifests", 1, applied=False)
        with pytest.raises(StepFailed):
            app.writer.write(records)  # claimed and uploaded, never committed
    time.sleep(QUICK_CLAIM_TIMEOUT.total_seconds() + 1)  # its claim is stale now, for everyone
    # Another path brings five of the events (another grouping: another blob); it takes them
    # over, and is held between its claims and its upload...
    taker_instance = build_runtime(app.settings)
    claimed, go = threading.Event(), threading.Event()
    real_put = taker_instance.archive.put

    def put(name: str, blob: Any) -> None:
        claimed.set()
        assert go.wait(60)
        real_put(name, blob)

    errors: list[BaseException] = []

    def take() -> None:
        try:
            taker.write(records[:5])
        except BaseException as error:  # surfaced below
            errors.append(error)

    object.__setattr__(taker_instance.archive, "put", put)  # its uploads only
    taker = quick_timeout_writer(taker_instance)
    thread = threading.Thread(target=take)
    thread.start()
    try:
        assert claimed.wait(60)
        # ...while the first batch is redelivered (same batch, same blob, its claim stale).
        with contextlib.suppress(ClaimedElsewhere):
            quick_timeout_writer(build_runtime(app.settings)).write(records)
    finally:
        go.set()
        thread.join(timeout=60)
    assert errors == []
    keys = archived_keys(app)
    doubled = sorted(key for key, count in Counter(keys).items() if count > 1)
    assert doubled == [], f"{STALE_CLAIM_DOUBLED}: {len(doubled)} events archived twice"
    quick_timeout_writer(app).write(records)  # the redelivery's retry, once the taker committed
    assert archived_keys(app) == sorted(record["EventKey"] for record in records)


STALE_POSTINGS = (
    "BUG: a blob finished by a retry with fewer events than its first attempt keeps that "
    "attempt's posting rows (ArchiveWriter upserts only the rows the new contents need)"
)


def test_a_blob_finished_with_fewer_events_after_a_takeover_keeps_exact_postings(
    app: Runtime,
) -> None:
    # A hundred distinct resources and correlations: posted a bucket a row; forty of them
    # (not over SINGLE_ROW_VALUES) would be posted in one row a kind.
    events = [activity_event(n) for n in range(100)]
    records = normalize_input(envelope(events), "x")[0]
    with pytest.MonkeyPatch.context() as patch:
        fail_step(patch, app, "manifests", 1, applied=False)
        with pytest.raises(StepFailed):
            app.writer.write(records)  # uploaded and posted with all of them, never committed
    time.sleep(QUICK_CLAIM_TIMEOUT.total_seconds() + 1)
    # Another path takes sixty of them over and commits them in a blob of its own...
    taken = quick_timeout_writer(build_runtime(app.settings)).write(records[:60])
    assert len(taken.indexed) == 60
    # ...then the first batch comes back: its blob (the same name) now holds the other forty.
    again = quick_timeout_writer(app).write(records)
    assert (len(again.indexed), len(again.existing)) == (40, 60)
    # The first attempt's postings must not outlive it: they would point into the committed
    # blob at records that are not theirs, or past its end (read back as unreadable).
    try:
        assert_exact(app, Expected().add(envelope(events), "x"))
    except AssertionError as error:
        raise AssertionError(f"{STALE_POSTINGS}: {error}") from None


class StepFailed(Exception):
    """A step of a write stopped by the test."""


# A write's steps, in order, then forwarding's marks: the index-table methods that may serve a
# step, and the PartitionKey kinds of the rows it writes (one method can serve several steps).
# Uploads are the archive store's `put`.
TABLE_STEPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "claims": (("append",), (KEY_ROW,)),  # of the claim logs (claim_logs), not the tables
    "postings": (("upsert",), tuple(LOOKUP_COLUMNS)),
    # The commit, pending row -> manifest: a day's blobs together, or one alone.
    "manifests": (("replace_all_if", "replace_if"), (MANIFEST_ROW,)),
    "marks": (("upsert",), (KEY_ROW,)),
}
# (step, which call of it fails, whether that call was applied before it failed: a lost answer)
STEP_FAULTS = [
    ("claims", 1, False),
    ("claims", 2, True),
    ("uploads", 1, False),
    ("uploads", 3, True),
    ("postings", 1, False),
    ("postings", 2, True),
    ("manifests", 1, False),
    ("manifests", 2, True),
    ("marks", 1, False),
    ("marks", 1, True),
]
# How the batch comes back: redelivered as it was; its events in other batches, to a writer
# past CLAIM_TIMEOUT; dead-lettered on the last attempt, then replayed past CLAIM_TIMEOUT.
RECOVERIES = ("same-batch", "regrouped-later", "replayed-later")


def fail_step(
    patch: pytest.MonkeyPatch, app: Runtime, step: str, nth: int, *, applied: bool
) -> list[int]:
    """Make the `nth` call of a write step raise; the calls of that step seen (a list, live)."""
    seen = [0]
    lock = threading.Lock()  # uploads and slots' claims run side by side

    def failing(real: Any, kinds: tuple[str, ...]) -> Any:
        def call(*args: Any) -> Any:
            if kinds:
                first = args[1] if isinstance(args[1], dict) else (args[1] or [{}])[0]
                first = first[0] if isinstance(first, tuple) else first  # (row, ETag)
                fencing = isinstance(args[1], dict) and STATE in args[1]  # replace_if fences too
                if fencing or not str(first.get("PartitionKey", "")).startswith(kinds):
                    return real(*args)  # the same method serving another step
            with lock:
                seen[0] += 1
                hit = seen[0] == nth
            if not hit:
                return real(*args)
            if applied:
                real(*args)
            raise StepFailed(f"{step} call {nth} stopped ({'applied' if applied else 'not sent'})")

        return call

    if step == "uploads":
        patch.setattr(app.archive, "put", failing(app.archive.put, ()))
        return seen
    methods, kinds = TABLE_STEPS[step]
    if step == "claims":
        logs = claim_logs(app)
        patch.setattr(logs, "append", failing(logs.append, kinds))
        return seen
    for method in methods:
        if hasattr(app.tables, method):
            patch.setattr(app.tables, method, failing(getattr(app.tables, method), kinds))
    return seen


def step_bodies() -> list[EventBody]:
    """Four bodies of ten events: two classes, two days in two months, so four blobs (claims,
    postings and manifests go a month at a time, uploads a blob at a time)."""
    start = datetime(2024, 5, 31, 23, 59, 40, tzinfo=UTC)
    events = [
        activity_event(
            n,
            time=f"{start + timedelta(seconds=n):%Y-%m-%dT%H:%M:%S}.0000000Z",
            category=("Administrative", "Policy")[n % 2],
        )
        for n in range(40)
    ]
    return [EventBody(envelope(events[i : i + 10]), "0", i) for i in range(0, 40, 10)]


def recover(app: Runtime, bodies: list[EventBody], recovery: str) -> None:
    if recovery == "same-batch":
        deliver(
            bodies,
            writer=app.writer,
            deadletters=app.deadletters,
            forwarding=app.forwarding,
            final_attempt=False,
        )
    elif recovery == "regrouped-later":
        later = later_writer(app)
        for group in ([bodies[0], bodies[2]], [bodies[1], bodies[3]]):
            deliver(
                group,
                writer=later,
                deadletters=app.deadletters,
                forwarding=app.forwarding,
                final_attempt=False,
            )
    else:
        object.__setattr__(app, "writer", later_writer(app))
        assert replay(app)["still_failing"] == 0


@pytest.mark.parametrize("recovery", RECOVERIES)
@pytest.mark.parametrize(("step", "nth", "applied"), STEP_FAULTS)
def test_a_write_stopped_at_each_step_then_recovered_archives_and_forwards_once(
    step: str,
    nth: int,
    applied: bool,
    recovery: str,
    forwarding: dict[str, str],
    logs_ingestion: LogsIngestionServer,
) -> None:
    app = build_runtime(load_settings(forwarding))
    bodies = step_bodies()
    expected = Expected()
    for body in bodies:
        expected.add(body.body, body.source)
    final = recovery == "replayed-later"
    with pytest.MonkeyPatch.context() as patch:
        seen = fail_step(patch, app, step, nth, applied=applied)
        raised = False
        try:
            report = deliver(
                bodies,
                writer=app.writer,
                deadletters=app.deadletters,
                forwarding=app.forwarding,
                final_attempt=final,
            )
        except RetryableDeliveryError:
            raised = True
        assert seen[0] >= nth, f"the write made {seen[0]} {step} calls"
    # Only the marks are tried again within the invocation; any other step stops it.
    assert raised == (step != "marks" and not final)
    if final and step != "marks":
        assert report.deadlettered == len(expected.records)
        assert len(list(app.deadletters.list(UNDELIVERED))) == len(bodies)
    recover(app, bodies, recovery)
    assert_exact(app, expected)  # and no letter left: nothing archived stays dead-lettered
    sent, unsent = assert_forwarded_once_or_dead_lettered(app, logs_ingestion, expected)
    assert (sent, unsent) == (set(expected.records), set())


# --- a process killed mid-index ------------------------------------------------------------------

KILLED_INDEXER = """
import os, signal, sys
from azure.data.tables import TableClient
from shared.adapters.blobs import ArchiveBlob
from shared.adapters.cursors import CursorStore
from shared.services.blob_indexing import BlobIndexer
from shared.bootstrap import build_runtime
from shared.settings import load_settings

app = build_runtime(load_settings(os.environ))
mode = os.environ["KILL_AT"]
counts = {"save": 0, "manifests": 0}
real_save, real_update = CursorStore.save, TableClient.update_entity

def save(self, cursor):
    counts["save"] += 1
    if mode == "before-cursor" and counts["save"] == 2:
        # The second piece is archived and committed; its cursor move never happens.
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(self, cursor)

def update(self, entity, **options):
    commit = entity["PartitionKey"].startswith("m") and "S" not in entity  # not a fence
    if self.table_name.startswith(app.settings.index_table_prefix) and commit:
        counts["manifests"] += 1
        if mode == "before-commit" and counts["manifests"] == 2:
            # The second piece is claimed, uploaded and posted; its manifest never is.
            os.kill(os.getpid(), signal.SIGKILL)
    return real_update(self, entity, **options)

CursorStore.save, TableClient.update_entity = save, update
container = app.stores.blob_service.get_container_client(os.environ["ARCHIVE"])
indexer = BlobIndexer(app.writer, app.cursors, app.deadletters, chunk_bytes=6000)
indexer.index(ArchiveBlob(container, os.environ["BLOB"]))
sys.exit(0)
"""


@pytest.mark.parametrize("kill_at", ["before-cursor", "before-commit"])
def test_a_process_killed_between_index_writes_and_the_cursor_move(
    kill_at: str, settings: Settings, app: Runtime
) -> None:
    app = with_archive(app)
    name = pt1h_name()
    data = blob_lines(120, bad_every=30)
    app.stores.archive.get_blob_client(name).upload_blob(data, blob_type="AppendBlob")
    environment = {
        **os.environ,
        **store_settings(settings, settings.storage_connection),
        "ARCHIVE": app.stores.archive.container_name,
        "BLOB": name,
        "KILL_AT": kill_at,
    }
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_INDEXER],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]

    cursor = app.cursors.load(name, BlobPath.parse(name).hour)
    rows_before = len(event_keys_of(app))
    assert 0 < cursor.offset < len(data)
    if kill_at == "before-cursor":
        assert rows_before > cursor.indexed  # archived past the cursor: the crash window was hit
    else:
        assert rows_before == cursor.indexed  # the second piece is not committed...
        uploaded = [blob.name for blob in app.archive.blobs()]
        assert len(uploaded) > len(committed_blobs(app))  # ...though its blob is uploaded

    # The next run (the catch-up timer) in this process, reading the same pieces (the chunk
    # size is the deployment's): exact, nothing archived twice.
    indexer = BlobIndexer(app.writer, app.cursors, app.deadletters, chunk_bytes=6000)
    report = indexer.index(ArchiveBlob(app.stores.archive, name))
    expected = expected_blob(data, name)
    assert report.events == expected.events - cursor.events
    assert report.duplicates == rows_before - cursor.indexed
    assert report.indexed == len(expected.records) - rows_before
    assert_exact(app, expected)
    cursor = app.cursors.load(name, BlobPath.parse(name).hour)
    assert (cursor.offset, cursor.events) == (len(data), expected.events)
