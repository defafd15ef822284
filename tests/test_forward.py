"""The forwarder over the real LogsIngestionClient, against a loopback Logs Ingestion endpoint."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from azure.core.exceptions import HttpResponseError
from azure.monitor.ingestion import LogsIngestionClient

from shared.adapters.log_analytics import (
    CHUNK_TARGET_BYTES,
    MAX_CALL_BYTES,
    LogAnalyticsForwarder,
    TransientForwardError,
    build_client,
)
from shared.core.records import NormalizedRecord
from tests.logs_ingestion_server import (
    API_VERSION,
    MAX_BODY_BYTES,
    LogsIngestionServer,
    StaticTokenCredential,
    gzip_json,
)

RULE_ID = "dcr-0123456789abcdef0123456789abcdef"
STREAM = "Custom-ActivityLogArchive_CL"
RETRY_TOTAL = 3


def make_record(index: int, size: int = 1_000) -> NormalizedRecord:
    """A record whose JSON is about `size` bytes, with non-ASCII text in it."""
    unit = "résumé "
    filler = unit * max(1, size // len(unit.encode()))
    return {
        "EventKey": f"key-{index:06d}",
        "TimeGenerated": "2024-05-01T12:00:00.0000000Z",
        "OperationNameValue": "MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE",
        "Description": filler,
        "DurationMs": index,
        "Properties_d": {"index": index, "tags": ["a", "b"]},
    }


def keys(records: list[NormalizedRecord] | list[dict[str, Any]]) -> list[str]:
    return [str(record["EventKey"]) for record in records]


@pytest.fixture
def server() -> Iterator[LogsIngestionServer]:
    with LogsIngestionServer(RULE_ID, STREAM, retry_after_seconds=1) as running:
        yield running


@pytest.fixture
def client(server: LogsIngestionServer) -> Iterator[LogsIngestionClient]:
    # Tiny backoff: the tests check behaviour, not timing (Retry-After excepted).
    with build_client(
        server.endpoint,
        StaticTokenCredential(),
        retry_total=RETRY_TOTAL,
        retry_backoff_factor=0.01,
        retry_backoff_max=0.05,
    ) as built:
        yield built


@pytest.fixture
def forwarder(client: LogsIngestionClient) -> LogAnalyticsForwarder:
    return LogAnalyticsForwarder(client, RULE_ID, STREAM, enforce_https=False)


def statuses(server: LogsIngestionServer) -> list[int]:
    return [request.status for request in server.requests]


# --- delivery and chunking -------------------------------------------------------------------


def test_small_batch_is_delivered_once_in_one_call(
    server: LogsIngestionServer, forwarder: LogAnalyticsForwarder
) -> None:
    records = [make_record(i) for i in range(50)]

    result = forwarder.forward(records)

    assert result.forwarded == keys(records)
    assert result.rejected == []
    assert statuses(server) == [204]
    assert server.records == records  # whole and unchanged, non-ASCII included


def test_five_megabytes_split_into_calls_under_the_limit_and_arrive_whole(
    server: LogsIngestionServer, forwarder: LogAnalyticsForwarder
) -> None:
    records = [make_record(i, size=500 + (i * 37) % 4_000) for i in range(2_200)]
    total = sum(len(orjson.dumps(record)) for record in records)
    assert total > 5_000_000

    result = forwarder.forward(records)

    assert result.forwarded == keys(records)
    assert result.rejected == []
    requests = server.requests
    assert len(requests) >= total // CHUNK_TARGET_BYTES + 1
    assert all(request.status == 204 for request in requests)
    for request in requests:
        assert request.json_bytes is not None
        assert request.json_bytes <= CHUNK_TARGET_BYTES < MAX_CALL_BYTES
        assert request.wire_bytes <= request.json_bytes
    assert sum(request.records for request in requests) == len(records)
    assert server.records == records


def test_record_over_the_call_limit_is_rejected_and_its_neighbours_delivered(
    server: LogsIngestionServer, forwarder: LogAnalyticsForwarder
) -> None:
    huge = make_record(1, size=MAX_CALL_BYTES + 10_000)
    records = [make_record(0), huge, make_record(2)]

    result = forwarder.forward(records)

    assert result.forwarded == ["key-000000", "key-000002"]
    assert len(result.rejected) == 1
    rejected, reason = result.rejected[0]
    assert rejected is huge
    assert "limited to 1000000 bytes" in reason
    assert keys(server.records) == ["key-000000", "key-000002"]  # never sent


def test_record_just_under_the_limit_goes_alone(
    server: LogsIngestionServer, forwarder: LogAnalyticsForwarder
) -> None:
    big = make_record(1, size=MAX_CALL_BYTES - 2_000)
    assert CHUNK_TARGET_BYTES < len(orjson.dumps(big)) <= MAX_CALL_BYTES - 2

    result = forwarder.forward([make_record(0), big, make_record(2)])

    assert result.forwarded == ["key-000000", "key-000001", "key-000002"]
    assert [request.records for request in server.requests] == [1, 1, 1]


def test_unserializable_record_is_rejected_and_the_rest_delivered(
    server: LogsIngestionServer, forwarder: LogAnalyticsForwarder
) -> None:
    odd = make_record(1) | {"Claims_d": {1, 2}}  # a set has no JSON form

    result = forwarder.forward([make_record(0), odd, make_record(2)])

    assert result.forwarded == ["key-000000", "key-000002"]
    assert [(record["EventKey"], "JSON" in reason) for record, reason in result.rejected] == [
        ("key-000001", True)
    ]


def test_no_records_no_calls(server: LogsIngestionServer, forwarder: LogAnalyticsForwarder) -> None:
    assert forwarder.forward([]).forwarded == []
    assert server.requests == []


# --- retries by the client's pipeline --------------------------------------------------------


def test_429_is_retried_after_the_retry_after_delay(
    server: LogsIngestionServer, forwarder: LogAnalyticsForwarder
) -> None:
    server.script([429])
    records = [make_record(i) for i in range(3)]

    started = time.monotonic()
    result = forwarder.forward(records)
    elapsed = time.monotonic() - started

    assert result.forwarded == keys(records)
    assert statuses(server) == [429, 204]
    first, second = server.requests
    assert second.at - first.at >= 1.0  # Retry-After: 1, not the 0.01 s backoff
    assert elapsed >= 1.0
    assert keys(server.records) == keys(records)  # delivered once


def test_a_retry_after_longer_than_the_cap_waits_only_the_cap() -> None:
    # A 429 asking for 15 minutes would hold an invocation past host.json's functionTimeout
    # (10 minutes) before its last attempt could dead-letter anything.
    with LogsIngestionServer(RULE_ID, STREAM, retry_after_seconds=900) as server:
        server.fail_persistently(429)
        with build_client(
            server.endpoint,
            StaticTokenCredential(),
            retry_total=2,
            retry_backoff_factor=0.01,
            retry_after_max=0.2,
        ) as capped:
            forwarder = LogAnalyticsForwarder(capped, RULE_ID, STREAM, enforce_https=False)
            outcome: list[BaseException] = []

            def forward() -> None:
                try:
                    forwarder.forward([make_record(1)])
                except TransientForwardError as error:
                    outcome.append(error)

            running = threading.Thread(target=forward, daemon=True)
            started = time.monotonic()
            running.start()
            running.join(20)
            assert not running.is_alive(), "waited as long as Retry-After asked"
            assert time.monotonic() - started < 10
            assert len(outcome) == 1
            assert statuses(server) == [429, 429, 429]  # the retries still happened
            first, *_, last = server.requests
            assert last.at - first.at >= 0.4  # the capped wait, twice


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_error_then_success_recovers(
    server: LogsIngestionServer, forwarder: LogAnalyticsForwarder, status: int
) -> None:
    server.script([status, status])
    records = [make_record(i) for i in range(3)]

    result = forwarder.forward(records)

    assert result.forwarded == keys(records)
    assert statuses(server) == [status, status, 204]
    assert keys(server.records) == keys(records)


def test_default_client_would_not_retry_a_502_on_post(server: LogsIngestionServer) -> None:
    # Why build_client installs its own retry policy: azure-core's default skips 502 for POST.
    server.script([502])
    default_client = LogsIngestionClient(server.endpoint, StaticTokenCredential())
    with default_client, pytest.raises(HttpResponseError) as raised:
        default_client.upload(RULE_ID, STREAM, [make_record(0)], enforce_https=False)
    assert raised.value.status_code == 502
    assert statuses(server) == [502]


def test_persistent_500_raises_with_exactly_the_chunks_that_made_it(
    server: LogsIngestionServer, forwarder: LogAnalyticsForwarder
) -> None:
    records = [make_record(i, size=100_000) for i in range(40)]  # 9 per call: 5 calls
    server.script([None, None])  # the first two calls go through...
    server.fail_persistently(500)  # ...then the service is down

    with pytest.raises(TransientForwardError) as raised:
        forwarder.forward(records)

    error = raised.value
    assert error.status == 500
    assert "HTTP 500" in str(error)
    delivered = keys(server.records)
    assert error.forwarded_so_far == delivered == keys(records)[: len(delivered)]
    assert [request.records for request in server.requests[:2]] == [9, 9]
    assert statuses(server) == [204, 204] + [500] * (RETRY_TOTAL + 1)  # 3rd call, retried, gave up


def test_connection_refused_raises_transient_error_after_retries() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = build_client(
        f"http://127.0.0.1:{port}",
        StaticTokenCredential(),
        retry_total=2,
        retry_backoff_factor=0.01,
    )
    with client:
        forwarder = LogAnalyticsForwarder(client, RULE_ID, STREAM, enforce_https=False)
        with pytest.raises(TransientForwardError) as raised:
            forwarder.forward([make_record(0)])
    assert raised.value.status is None
    assert raised.value.forwarded_so_far == []


def test_wrong_stream_is_not_blamed_on_the_records(
    server: LogsIngestionServer, client: LogsIngestionClient
) -> None:
    # 404 (like 401/403) is about the call's target, not its records: retry, never reject.
    forwarder = LogAnalyticsForwarder(client, RULE_ID, "Custom-Missing_CL", enforce_https=False)
    wrong_rule = LogAnalyticsForwarder(client, "dcr-other", STREAM, enforce_https=False)

    for misconfigured in (forwarder, wrong_rule):
        with pytest.raises(TransientForwardError) as raised:
            misconfigured.forward([make_record(0)])
        assert raised.value.status == 404
        assert raised.value.rejected_so_far == []


def test_https_is_enforced_by_default(server: LogsIngestionServer) -> None:
    with build_client(
        server.endpoint, StaticTokenCredential(), retry_total=1, retry_backoff_factor=0.01
    ) as client:
        forwarder = LogAnalyticsForwarder(client, RULE_ID, STREAM)  # enforce_https=True
        with pytest.raises(TransientForwardError, match="non-TLS"):
            forwarder.forward([make_record(0)])
    assert server.requests == []  # the token never left over plain HTTP


# --- 413 from the service and permanent 4xx --------------------------------------------------


def test_server_413_splits_the_call_and_delivers_everything(
    server: LogsIngestionServer, forwarder: LogAnalyticsForwarder
) -> None:
    server.script([413])
    records = [make_record(i) for i in range(10)]

    result = forwarder.forward(records)

    assert result.forwarded == keys(records)
    assert [(r.status, r.records) for r in server.requests] == [(413, 0), (204, 5), (204, 5)]
    assert keys(server.records) == keys(records)


def test_single_record_still_413_is_rejected_with_the_reason(
    server: LogsIngestionServer, forwarder: LogAnalyticsForwarder
) -> None:
    server.script([413, 413])  # the pair, then its first half alone
    records = [make_record(0), make_record(1)]

    result = forwarder.forward(records)

    assert result.forwarded == ["key-000001"]
    [(rejected, reason)] = result.rejected
    assert rejected["EventKey"] == "key-000000"
    assert reason.startswith("HTTP 413")
    assert "ScriptedFault" in reason  # the service's error code travels in the reason


def test_permanent_400_rejects_the_chunk_and_continues(
    server: LogsIngestionServer, forwarder: LogAnalyticsForwarder
) -> None:
    records = [make_record(i, size=100_000) for i in range(20)]  # 9 + 9 + 2
    server.script([None, 400])

    result = forwarder.forward(records)

    assert result.forwarded == keys(records[:9]) + keys(records[18:])
    assert [record["EventKey"] for record, _ in result.rejected] == keys(records[9:18])
    assert all(reason.startswith("HTTP 400") for _, reason in result.rejected)
    assert statuses(server) == [204, 400, 204]  # a 400 is not retried


def test_nothing_logged_carries_record_content_or_the_token(
    server: LogsIngestionServer,
    forwarder: LogAnalyticsForwarder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "do-not-log-this-value"
    records = [make_record(0) | {"Caller": secret}, make_record(1, size=MAX_CALL_BYTES)]
    server.script([500, 400])
    caplog.set_level(logging.DEBUG)  # every logger, the SDK's and azure-core's included

    result = forwarder.forward(records)

    assert len(result.rejected) == 2
    assert caplog.records  # something was logged...
    assert secret not in caplog.text  # ...but no record content
    assert "test-token" not in caplog.text
    assert "résumé" not in caplog.text


# --- the test endpoint enforces the contract -------------------------------------------------


def raw_request(
    server: LogsIngestionServer,
    body: bytes | None = b"[]",
    *,
    method: str = "POST",
    path: str | None = None,
    api_version: str = API_VERSION,
    token: str | None = "test-token",
    headers: dict[str, str] | None = None,
) -> int:
    url = server.endpoint + (path or f"/dataCollectionRules/{RULE_ID}/streams/{STREAM}")
    url += f"?api-version={api_version}"
    sent = {"Content-Type": "application/json"} | (headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            return error.code


def test_server_accepts_plain_and_gzip_json(server: LogsIngestionServer) -> None:
    assert raw_request(server, json.dumps([{"EventKey": "a"}]).encode()) == 204
    gzipped = gzip_json([{"EventKey": "b"}])
    assert raw_request(server, gzipped, headers={"Content-Encoding": "gzip"}) == 204
    assert keys(server.records) == ["a", "b"]


def test_server_requires_a_bearer_token(server: LogsIngestionServer) -> None:
    body = json.dumps([{"EventKey": "a"}]).encode()
    assert raw_request(server, body, token=None) == 401
    assert raw_request(server, body, token="someone-else") == 401
    assert server.records == []


def test_server_checks_method_path_and_api_version(server: LogsIngestionServer) -> None:
    assert raw_request(server, None, method="GET") == 405
    assert raw_request(server, api_version="2021-11-01-preview") == 400
    assert raw_request(server, path=f"/dataCollectionRules/{RULE_ID}/streams/Microsoft-X") == 404
    assert raw_request(server, path=f"/dataCollectionRules/dcr-other/streams/{STREAM}") == 404
    assert raw_request(server, headers={"Content-Type": "text/plain"}) == 415


def test_server_wants_a_json_array_of_objects(server: LogsIngestionServer) -> None:
    assert raw_request(server, b'{"EventKey": "a"}') == 400
    assert raw_request(server, b"[1, 2]") == 400
    assert raw_request(server, b"[{") == 400
    assert raw_request(server, b"[]") == 204


def test_server_refuses_bodies_over_one_megabyte(server: LogsIngestionServer) -> None:
    too_big = json.dumps([{"Description": "x" * MAX_BODY_BYTES}]).encode()
    assert raw_request(server, too_big) == 413
    # Compresses to a few KB, but is still over 1 MB once decompressed.
    expands = gzip_json([{"Description": "x" * MAX_BODY_BYTES}])
    assert raw_request(server, expands, headers={"Content-Encoding": "gzip"}) == 413
    # Over 1 MB as sent: refused before it is even decompressed.
    incompressible = bytes(range(256)) * (MAX_BODY_BYTES // 256 + 8)
    assert raw_request(server, incompressible, headers={"Content-Encoding": "gzip"}) == 413
    assert server.records == []


def test_wrong_api_version_through_the_sdk_is_refused(server: LogsIngestionServer) -> None:
    old_client = LogsIngestionClient(
        server.endpoint, StaticTokenCredential(), api_version="2021-11-01-preview"
    )
    with old_client, pytest.raises(HttpResponseError) as raised:
        old_client.upload(RULE_ID, STREAM, [make_record(0)], enforce_https=False)
    assert raised.value.status_code == 400
