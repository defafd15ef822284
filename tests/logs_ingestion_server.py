"""A loopback stand-in for the Logs Ingestion API that enforces its documented contract.

`POST {endpoint}/dataCollectionRules/{rule}/streams/Custom-...?api-version=2023-01-01` with
`Authorization: Bearer <token>`, `Content-Type: application/json`, optionally
`Content-Encoding: gzip`, and a JSON array of objects of at most 1 MB (compressed and
uncompressed) -> 204. It keeps every accepted record and every request, and can be scripted to
fail: `script([429, 500, None])` answers the next requests with those statuses (None: handle
normally), `fail_persistently(500)` answers every request after the script with 500.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from azure.core.credentials import AccessToken

API_VERSION = "2023-01-01"
MAX_BODY_BYTES = 1_000_000  # "1 MB per call", read strictly; see shared/adapters/log_analytics.py
TEST_TOKEN = "test-token"


class StaticTokenCredential:
    """A TokenCredential test double for Entra ID: always the same, never-expiring token."""

    def __init__(self, token: str = TEST_TOKEN) -> None:
        self.token = token

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 24 * 3600)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    status: int
    at: float  # time.monotonic() when the request arrived
    wire_bytes: int  # body as sent (compressed if gzip)
    json_bytes: int | None  # body after decompression; None if not decompressed
    records: int  # records accepted from it (0 unless 204)


class _Reject(Exception):
    """An answer other than 204, raised from the checks to the handler."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class LogsIngestionServer:
    """Run with `with LogsIngestionServer(rule_id, stream) as server:`; `.endpoint` is its URL."""

    def __init__(
        self,
        rule_id: str = "dcr-00000000000000000000000000000000",
        stream_name: str | None = None,
        *,
        token: str = TEST_TOKEN,
        retry_after_seconds: int = 1,
    ) -> None:
        if stream_name is not None and not stream_name.startswith("Custom-"):
            raise ValueError("custom streams are named Custom-...")
        self.rule_id = rule_id
        self.stream_name = stream_name  # None: any Custom-... stream
        self.token = token
        self.retry_after_seconds = retry_after_seconds
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        self._requests: list[RecordedRequest] = []
        self._script: deque[int | None] = deque()
        self._persistent_status: int | None = None
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        cast(Any, self._httpd).ingestion = self  # the handler reaches the state through its server
        # A short poll interval: shutdown() waits up to one interval.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._records)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def script(self, statuses: list[int | None]) -> None:
        with self._lock:
            self._script.extend(statuses)

    def fail_persistently(self, status: int | None) -> None:
        with self._lock:
            self._persistent_status = status

    def __enter__(self) -> LogsIngestionServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _next_fault(self) -> int | None:
        with self._lock:
            if self._script:
                return self._script.popleft()
            return self._persistent_status

    def _record(self, request: RecordedRequest, accepted: list[dict[str, Any]]) -> None:
        with self._lock:
            self._requests.append(request)
            self._records.extend(accepted)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the SDK's connection pool expects

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def _handle(self) -> None:
        state: LogsIngestionServer = cast(Any, self.server).ingestion
        arrived = time.monotonic()
        # Read the whole body first so the connection stays usable whatever the answer.
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        json_bytes: int | None = None
        records: list[dict[str, Any]] = []
        try:
            fault = state._next_fault()
            if fault is not None:
                raise _Reject(fault, "ScriptedFault", f"scripted {fault}")
            self._check_request(state)
            if len(body) > MAX_BODY_BYTES:
                raise _Reject(413, "ContentLengthLimitExceeded", "body over 1 MB")
            payload = self._decoded(body)
            json_bytes = len(payload)
            records = _parse_records(payload)
        except _Reject as reject:
            rejection: _Reject | None = reject
        else:
            rejection = None
        # Recorded before answering, so a client that has its answer sees the record too.
        status = 204 if rejection is None else rejection.status
        state._record(
            RecordedRequest(
                self.command, self.path, status, arrived, len(body), json_bytes, len(records)
            ),
            records,
        )
        if rejection is None:
            self.send_response(204)
            self.end_headers()
        else:
            self._send_error(rejection, state.retry_after_seconds)

    def _check_request(self, state: LogsIngestionServer) -> None:
        url = urlsplit(self.path)
        if self.command != "POST":
            raise _Reject(405, "MethodNotAllowed", "only POST")
        parts = url.path.split("/")
        # ['', 'dataCollectionRules', rule, 'streams', stream]
        if (
            len(parts) != 5
            or parts[1] != "dataCollectionRules"
            or parts[2] != state.rule_id
            or parts[3] != "streams"
            or not parts[4].startswith("Custom-")
            or parts[4] != (state.stream_name or parts[4])
        ):
            raise _Reject(404, "NotFound", "no such data collection rule or stream")
        if parse_qs(url.query).get("api-version") != [API_VERSION]:
            raise _Reject(400, "UnsupportedApiVersion", f"api-version must be {API_VERSION}")
        if self.headers.get("Authorization") != f"Bearer {state.token}":
            raise _Reject(401, "InvalidToken", "missing or invalid bearer token")
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type != "application/json":
            raise _Reject(415, "UnsupportedMediaType", "Content-Type must be application/json")
        if self.headers.get("Content-Encoding") not in (None, "gzip"):
            raise _Reject(415, "UnsupportedMediaType", "Content-Encoding must be gzip or absent")

    def _decoded(self, body: bytes) -> bytes:
        if self.headers.get("Content-Encoding") != "gzip":
            payload = body
        else:
            # Bounded: a small gzip can expand to far more than 1 MB.
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            try:
                payload = inflater.decompress(body, MAX_BODY_BYTES + 1)
            except zlib.error as error:
                raise _Reject(400, "InvalidContent", f"not gzip: {error}") from error
        if len(payload) > MAX_BODY_BYTES:
            raise _Reject(413, "ContentLengthLimitExceeded", "uncompressed body over 1 MB")
        return payload

    def _send_error(self, reject: _Reject, retry_after_seconds: int) -> None:
        content = json.dumps({"error": {"code": reject.code, "message": reject.message}}).encode()
        self.send_response(reject.status)
        if reject.status == 429:
            self.send_header("Retry-After", str(retry_after_seconds))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)


def _parse_records(payload: bytes) -> list[dict[str, Any]]:
    try:
        parsed = json.loads(payload)
    except ValueError as error:  # includes UnicodeDecodeError
        raise _Reject(400, "InvalidJson", f"body is not JSON: {error}") from error
    if not isinstance(parsed, list) or not all(isinstance(item, dict) for item in parsed):
        raise _Reject(400, "InvalidContent", "body must be a JSON array of objects")
    return cast(list[dict[str, Any]], parsed)


def gzip_json(value: Any) -> bytes:
    """Helper for raw requests in tests."""
    return gzip.compress(json.dumps(value).encode())
