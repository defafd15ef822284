"""`python -m shared`: a failure that running again cures ends every verb with one line, exit 1.

Storage that cannot be reached or that drops connections ends a verb with `storage unavailable
(cause); every verb is idempotent: run it again`; events another writer holds right now end a
writing verb with the writer's own sentence (which events, held by what, when to retry). Never
a traceback: not from the verb, not from a log record on the way. A programming error still
surfaces with its traceback.

Each verb runs as a child process (`python -c` of `child_main` below: the CLI's own `main`
with few and quick SDK retries, as tests/test_faults.py has them), so what is asserted is the
real standard error, log records and all.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import requests
import urllib3
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.pipeline._base import _SansIOHTTPPolicyRunner
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.core.rest import HttpRequest
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient, LinearRetry

from shared import settings as names
from shared.adapters import storage
from shared.adapters.deadletters import UNDELIVERED, DeadLetter
from shared.adapters.log_analytics import TransientForwardError
from shared.bootstrap import Runtime
from shared.core.pt1h import blob_name
from shared.services.claims import ClaimedElsewhere
from shared.services.delivery import EventBody, RetryableDeliveryError, deliver
from shared.settings import Settings, load_settings
from shared.tools import cli
from shared.tools.azurite import Azurite, _free_port, connection_string
from tests.events import BASE_TIME, SUBSCRIPTION, activity_event, envelope, jsonl
from tests.fault_proxy import RESET, RESET_MID_RESPONSE, FaultProxy, Rule

PROJECT = Path(__file__).resolve().parents[1]
AGAIN = "every verb is idempotent: run it again"
HELD = (
    "12 events are being archived right now by another writer (blob 2024/05/01/a1b2; e.g. "
    "EventKey 0f3e): nothing was written; it may take them over after 2026-12-05T10:15:00Z "
    "at the latest, retry then"
)
RAISE = "TEST_CLI_ERRORS_RAISE"  # the child's writer raises: held | pipeline | bug
CLIENT_TIMEOUT = 2

# Every verb that touches storage, as a user types it (`run` kept small).
VERBS: dict[str, list[str]] = {
    "ingest": ["ingest", "{bodies}"],
    "backfill": ["backfill", "--container", "{archive}"],
    "run": ["run", "--events", "12", "--seed", "7"],
    "deadletter list": ["deadletter", "list"],
    "deadletter replay": ["deadletter", "replay"],
    "query": ["query", "--subscription", SUBSCRIPTION],
    "verify": ["verify"],
    "retention": ["retention", "--dry-run"],
}
WRITING = ("ingest", "backfill", "run", "deadletter replay")


# --- the child process ----------------------------------------------------------------------


def quick_clients(patch: pytest.MonkeyPatch) -> None:
    """The app's own `connect`, with two quick SDK retries and short timeouts."""
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
                **{**options, "connection_timeout": CLIENT_TIMEOUT, "read_timeout": CLIENT_TIMEOUT},
            )

    class QuickTableService:
        @staticmethod
        def from_connection_string(connection: str, **options: Any) -> TableServiceClient:
            return real_table.from_connection_string(
                connection,
                retry_total=2,
                retry_backoff_factor=0.05,
                # The test's own timeouts, over the app's (shared.adapters.storage).
                **{**options, "connection_timeout": CLIENT_TIMEOUT, "read_timeout": CLIENT_TIMEOUT},
            )

    patch.setattr(storage, "BlobServiceClient", QuickBlobService)
    patch.setattr(storage, "TableServiceClient", QuickTableService)


def azure_pipeline_attribute_error() -> None:
    """What azure-core raises when a request meets a pipeline link with no next one."""
    runner: Any = _SansIOHTTPPolicyRunner(SansIOHTTPPolicy())
    runner.send(PipelineRequest(HttpRequest("GET", "http://127.0.0.1/"), PipelineContext(None)))


def failing_write(self: object, records: object) -> None:
    """The archive writer, failing as the child's RAISE setting says (in a worker thread,
    as its uploads and postings run)."""
    kind = os.environ[RAISE]
    if kind == "held":
        raise ClaimedElsewhere(HELD)
    if kind == "pipeline":
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(azure_pipeline_attribute_error).result()
    raise AttributeError("'PlannedBlob' object has no attribute 'owner'")  # a bug of ours


def child_main() -> None:
    """`python -m shared ARGS`, as the tests run it: quick clients; a failing writer if asked."""
    from shared.services.archive_write import ArchiveWriter

    patch = pytest.MonkeyPatch()  # the child's whole life: never undone
    quick_clients(patch)
    if os.environ.get(RAISE):
        patch.setattr(ArchiveWriter, "write", failing_write)
    sys.exit(cli.main(sys.argv[1:]))


def shared_cli(
    verb: str, places: dict[str, str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    args = [arg.format(**places) for arg in VERBS[verb]]
    return subprocess.run(
        [sys.executable, "-c", "from tests.test_cli_errors import child_main; child_main()", *args],
        cwd=PROJECT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def one_line(result: subprocess.CompletedProcess[str], verb: str) -> str:
    """The one line on standard error (exit 1, no traceback), without the verb's prefix."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    prefix = f"python -m shared {verb}: "
    assert result.stderr.startswith(prefix), result.stderr
    return result.stderr[len(prefix) : -1]


# --- a store with something in it, and what the verbs read --------------------------------


def storage_env(settings: Settings, connection: str) -> dict[str, str]:
    return {
        names.STORAGE_CONNECTION: connection,
        names.STORE_PREFIX: settings.store_prefix,
        names.ARCHIVE_CONTAINER: f"{settings.store_prefix}-archive",
    }


@pytest.fixture
def places(tmp_path: Path, settings: Settings) -> dict[str, str]:
    bodies = tmp_path / "bodies.json"
    bodies.write_bytes(envelope([activity_event(n) for n in range(100, 105)]))
    return {"bodies": str(bodies), "archive": f"{settings.store_prefix}-archive"}


@pytest.fixture
def stocked(app: Runtime, places: dict[str, str]) -> Runtime:
    """Records indexed and archived, a PT1H.json to backfill, an undelivered dead letter."""
    bodies = [EventBody(envelope([activity_event(n) for n in range(5)]), origin="seed")]
    deliver(bodies, writer=app.writer, deadletters=app.deadletters, path="cli")
    archive = app.stores.blob_service.get_container_client(places["archive"])
    archive.create_container()
    hour = BASE_TIME.replace(minute=0, second=0) - timedelta(hours=1)
    events = [activity_event(n, time=f"{hour:%Y-%m-%dT%H}:{n:02d}:00Z") for n in range(3)]
    archive.upload_blob(blob_name(SUBSCRIPTION, hour), jsonl(events))
    body = envelope([activity_event(n) for n in range(200, 203)])
    letter = DeadLetter(UNDELIVERED, "index unavailable after retries", "seed:1", body.decode())
    app.deadletters.put(letter)
    return app


@pytest.fixture
def proxy(azurite: Azurite) -> Iterator[FaultProxy]:
    with FaultProxy(azurite, lifetime=120) as running:
        yield running


def drop_connections_past_setup(proxy: FaultProxy) -> None:
    """Every request to an entity or a blob loses its connection; tables and containers
    themselves (what the runtime ensures when it starts) answer as ever."""
    many = 10_000
    entities = r"^/devstoreaccount1/(?!Tables)"  # $batch, a month table's rows: not /Tables
    proxy.add_rule(Rule(RESET_MID_RESPONSE, service="table", path=entities, times=many))
    proxy.add_rule(Rule(RESET, service="blob", path=r"^/devstoreaccount1/[^/?]+/", times=many))


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", list(VERBS))
def test_storage_that_cannot_be_reached_ends_the_verb_with_one_line(
    verb: str, settings: Settings, places: dict[str, str]
) -> None:
    closed = _free_port()  # nothing listens there
    env = storage_env(settings, connection_string(closed, closed, closed))
    line = one_line(shared_cli(verb, places, env), verb)
    assert line == f"storage unavailable (ServiceRequestError: Connection refused); {AGAIN}"


@pytest.mark.parametrize(
    "flags",
    [
        ["query", "--limit", "0"],
        ["query", "--since", "bad"],
        ["query", "--category", "nope"],
        ["query", "--caller", ""],
        ["verify", "--since", ""],
        ["verify", "--until", ""],
        ["forward", "--since", ""],
        ["normalize", ""],
        ["ingest", ""],
        ["run", "--source", ""],
        ["backfill", ""],
        ["backfill", "--container", ""],
        ["backfill", "--subscription", " "],
        ["serve", "--host", ""],
    ],
)
def test_bad_flags_are_usage_errors_while_storage_is_down(
    flags: list[str], settings: Settings
) -> None:
    # Found from outside: `query` read its flags after reaching storage (exit 1, "storage
    # unavailable", for a bad --limit), and `verify`/`forward` took an empty time as none.
    closed = _free_port()
    env = {
        **os.environ,
        **storage_env(settings, connection_string(closed, closed, closed)),
        names.LOGS_INGESTION_ENDPOINT: f"https://127.0.0.1:{closed}",
        names.LOGS_INGESTION_RULE_ID: "dcr-00000000000000000000000000000000",
        names.LOGS_INGESTION_STREAM: "Custom-ActivityLog_CL",
    }
    command = [sys.executable, "-m", "shared", *flags]
    done = subprocess.run(
        command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2, (done.returncode, done.stderr[-300:])
    assert "storage unavailable" not in done.stderr and "Traceback" not in done.stderr
    if "" in flags or " " in flags:  # an empty value is said to be one, and where
        assert "empty" in done.stderr, done.stderr
        assert not any(f.startswith("-") and f not in done.stderr for f in flags[1:]), done.stderr


@pytest.mark.parametrize("verb", list(VERBS))
def test_connections_dropped_mid_verb_end_it_with_one_line(
    verb: str, stocked: Runtime, settings: Settings, proxy: FaultProxy, places: dict[str, str]
) -> None:
    drop_connections_past_setup(proxy)
    line = one_line(shared_cli(verb, places, storage_env(settings, proxy.connection_string)), verb)
    assert line.startswith("storage unavailable (") and line.endswith(f"); {AGAIN}"), line
    assert "Connection reset by peer" in line or "Connection broken" in line, line
    assert proxy.injected(), "no request met a fault"


@pytest.mark.parametrize("verb", WRITING)
def test_events_another_writer_holds_end_a_writing_verb_with_its_sentence(
    verb: str, stocked: Runtime, settings: Settings, places: dict[str, str]
) -> None:
    env = {**storage_env(settings, settings.storage_connection), RAISE: "held"}
    assert one_line(shared_cli(verb, places, env), verb) == HELD


@pytest.mark.parametrize("verb", ["ingest", "backfill"])
def test_an_attribute_error_from_azure_cores_pipeline_is_storage_unavailable(
    verb: str, stocked: Runtime, settings: Settings, places: dict[str, str]
) -> None:
    env = {**storage_env(settings, settings.storage_connection), RAISE: "pipeline"}
    line = one_line(shared_cli(verb, places, env), verb)
    cause = "AttributeError: '_SansIOHTTPPolicyRunner' object has no attribute 'next'"
    assert line == f"storage unavailable ({cause}); {AGAIN}"


@pytest.mark.parametrize("verb", ["ingest", "backfill"])
def test_a_programming_error_still_surfaces_with_its_traceback(
    verb: str, stocked: Runtime, settings: Settings, places: dict[str, str]
) -> None:
    env = {**storage_env(settings, settings.storage_connection), RAISE: "bug"}
    result = shared_cli(verb, places, env)
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "AttributeError: 'PlannedBlob' object has no attribute 'owner'" in result.stderr
    assert "storage unavailable" not in result.stderr


def raised(error: BaseException, cause: BaseException | None = None) -> BaseException:
    """`error`, raised (from `cause`) and caught: with its traceback, as a verb meets it."""
    try:
        raise error from cause
    except BaseException as caught:
        return caught


def test_each_transient_failure_has_its_line() -> None:
    reset = "('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))"
    timeout = "HTTPConnectionPool(host='127.0.0.1', port=1): Read timed out. (read timeout=2)"
    peer = "Connection reset by peer"
    cases: list[tuple[BaseException, str]] = [  # the error, and what the line says of it
        (ServiceResponseError(reset), peer),
        (ServiceResponseError(timeout), "Read timed out. (read timeout=2)"),
        (requests.ConnectionError(reset), peer),
        (requests.exceptions.ChunkedEncodingError(reset), peer),
        (urllib3.exceptions.ProtocolError(reset), peer),
        (http.client.IncompleteRead(b"ab", 10), "IncompleteRead(2 bytes read, 10 more expected)"),
        (ConnectionResetError(104, peer), peer),
        (HttpResponseError("The server is busy.\nRequestId:1"), "The server is busy."),
    ]
    for error, said in cases:
        cause = f"{type(error).__name__}: {said}"
        assert cli.failure_line(raised(error)) == f"storage unavailable ({cause}); {AGAIN}"
    wrapped = raised(RetryableDeliveryError("index unavailable"), raised(ServiceRequestError("x")))
    assert cli.failure_line(wrapped) == f"storage unavailable (ServiceRequestError: x); {AGAIN}"


class HeldWriter:
    """Events held by another writer still after the writer's tries within seconds."""

    def write_when_free(self, records: object) -> None:
        raise ClaimedElsewhere(HELD)


def test_what_another_writer_holds_is_its_own_sentence_however_wrapped() -> None:
    assert cli.failure_line(raised(ClaimedElsewhere(HELD))) == HELD
    body = EventBody(envelope([activity_event(1)]), origin="test")
    with pytest.raises(RetryableDeliveryError) as wrapped:
        deliver(
            [body], writer=cast(Any, HeldWriter()), deadletters=cast(Any, None), final_attempt=False
        )
    assert HELD in str(wrapped.value)  # the wrapping keeps the sentence (the host logs it)
    assert cli.failure_line(wrapped.value) == HELD


def test_log_analytics_unavailable_says_so() -> None:
    sink = TransientForwardError(
        "Log Analytics upload failed after retries: HTTP 503: busy",
        status=503,
        forwarded_so_far=[],
        rejected_so_far=[],
    )
    wrapped = raised(
        RetryableDeliveryError(f"Log Analytics unavailable: {sink}"),
        raised(sink, raised(HttpResponseError("busy"))),
    )
    assert cli.failure_line(wrapped) == f"{sink}; {AGAIN}"


def test_only_azure_cores_own_attribute_errors_are_storage_failures() -> None:
    with ThreadPoolExecutor(max_workers=1) as pool, pytest.raises(AttributeError) as caught:
        pool.submit(azure_pipeline_attribute_error).result()  # re-raised from a worker thread
    assert cli.failure_line(caught.value) is not None
    assert cli.failure_line(raised(AttributeError("'X' object has no attribute 'next'"))) is None
    assert cli.failure_line(raised(KeyError("EventKey"))) is None
    assert cli.failure_line(raised(ValueError("bad"))) is None


def test_table_clients_are_built_without_relinking_the_service_pipeline() -> None:
    """The SDK's own `get_table_client` re-links the service's shared policies to new links
    before linking those on: a request on another thread meanwhile fails with
    `'_SansIOHTTPPolicyRunner' object has no attribute 'next'` (seen under load)."""
    closed = _free_port()
    settings = load_settings({names.STORAGE_CONNECTION: connection_string(closed, closed, closed)})
    service = storage.connect(settings).table_service
    links = service._client._client._pipeline._impl_policies
    before = [link.next for link in links]
    for name in ("a", "b", "c"):
        client = service.get_table_client(name)
        assert client.table_name == name
    assert all(link.next is was for link, was in zip(links[:-1], before, strict=False))
    assert all(hasattr(link, "next") for link in client._client._client._pipeline._impl_policies)


def test_a_reader_that_stops_reading_ends_the_verb_quietly(tmp_path: Path) -> None:
    """`python -m shared normalize big.jsonl | head -1`: the pipe closing is no storage
    failure and no traceback; the verb ends as a writer killed by SIGPIPE does (141)."""
    from tests.events import activity_event, jsonl

    source = tmp_path / "big.jsonl"
    source.write_bytes(jsonl([activity_event(n) for n in range(3000)]))
    command = [sys.executable, "-m", "shared", "normalize", str(source)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as verb:
        assert verb.stdout is not None and verb.stderr is not None
        assert verb.stdout.readline().startswith(b"{")
        verb.stdout.close()  # as `head -1` does once it has its line
        errors = verb.stderr.read()
        code = verb.wait(timeout=120)
    assert errors == b"", errors.decode(errors="replace")
    assert code == 141  # 128 + SIGPIPE, as the shell reports such a writer


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("run", "--events", "0"), b"--events must be 1 or more"),
        (("run", "--events", "-5"), b"--events must be 1 or more"),
        (("backfill", "--since", "2024-05-02", "--until", "2024-05-01"), b"--since must be"),
        (("backfill", "--parallel", "0"), b"--parallel must be 1 or more"),
        (("backfill", "--container", "nosuchcontainer"), b"nosuchcontainer"),
    ],
)
def test_values_no_run_could_use_are_usage_errors(
    settings: Settings, args: tuple[str, ...], said: bytes
) -> None:
    from tests.test_cli import shared_cli

    result = shared_cli(*args, settings=settings)
    assert result.returncode == cli.EXIT_USAGE, result.stderr
    assert said in result.stderr and result.stdout == b""
    assert b"Traceback" not in result.stderr and b"run it again" not in result.stderr


def test_compaction_as_of_the_first_day_of_year_one_has_nothing_to_merge(
    settings: Settings,
) -> None:
    from tests.test_cli import shared_cli

    result = shared_cli("compact", "--as-of", "0001-01-01", "--json", settings=settings)
    assert result.returncode == 0, result.stderr


def test_urllib3_closing_a_connection_past_its_pool_is_not_shown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Found from outside: "Connection pool is full, discarding connection" flooded standard
    error during `forward` and `deadletter replay`: noise, nothing lost or to be done."""
    import logging

    log = cli._VerbLog()
    full = logging.LogRecord(
        "urllib3.connectionpool", logging.WARNING, __file__, 1,
        "Connection pool is full, discarding connection: %s. Connection pool size: %s",
        ("127.0.0.1", 10), None,
    )  # fmt: skip
    log.emit(full)
    other = logging.LogRecord("shared.x", logging.WARNING, __file__, 1, "said", None, None)
    log.emit(other)
    assert capsys.readouterr().err == "said\n"
