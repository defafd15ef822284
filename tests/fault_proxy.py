"""A loopback HTTP proxy in front of Azurite's blob and table ports that injects faults.

Each listener (one per service) accepts the SDK's keep-alive connections, reads one HTTP/1.1
request at a time and either relays it to Azurite (a fresh upstream connection per request, so
the proxy itself never makes an outcome ambiguous) or injects a fault:

* `error`: answer 500 or 503 with the service's own error body, without (or, with
  `after_forward`, after) letting the request reach storage. The second is the nastiest case
  Azure has: `OperationTimedOut` for an operation that was in fact applied.
* `stall`: hold the request (or, with `after_forward`, its applied response) for `seconds`,
  longer than the client's read timeout, then drop the connection.
* `reset`: abort the connection with a TCP RST, before forwarding, after forwarding (the
  operation applied, the answer lost), or with `partial` mid-response (headers and part of the
  body sent, then RST).

Faults come from a per-service script (the next requests, in order) and from rules (match on
service, method, path and body; skip the first matches, then fault every n-th, at most
`times`).
Everything is bounded: faults by their counts, stalls by `max_stall`, connections by
`max_connections`, and the whole proxy by `lifetime`, after which it stops by itself. It binds
127.0.0.1 only and forwards to 127.0.0.1 only. Standard library and threads only.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import BinaryIO, Literal

from shared.tools.azurite import Azurite, connection_string

LOOPBACK = "127.0.0.1"
SERVICES = ("blob", "table")
FaultKind = Literal["pass", "error", "stall", "reset"]

_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024  # the tests here send a few MB at most
_UPSTREAM_TIMEOUT = 30.0
_IDLE_TIMEOUT = 60.0
_ERROR_CODES = {500: "OperationTimedOut", 503: "ServerBusy"}


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    status: int = 503  # error: the status answered
    after_forward: bool = False  # the request reaches storage first; only its answer is lost
    partial: bool = False  # reset: headers and part of the body go out before the RST
    seconds: float = 3.0  # stall: how long the connection is held (bounded by max_stall)

    def describe(self) -> str:
        name = f"{self.kind}{self.status}" if self.kind == "error" else self.kind
        if self.partial:
            name += "-partial"
        if self.after_forward:
            name += "-after-forward"
        return name


PASS = Fault("pass")
ERROR_500 = Fault("error", 500)
ERROR_503 = Fault("error", 503)
APPLIED_THEN_500 = Fault("error", 500, after_forward=True)
STALL = Fault("stall")
APPLIED_THEN_STALL = Fault("stall", after_forward=True)
RESET = Fault("reset")
APPLIED_THEN_RESET = Fault("reset", after_forward=True)
RESET_MID_RESPONSE = Fault("reset", after_forward=True, partial=True)


@dataclass
class Rule:
    """Fault matching requests: skip `skip` of them, then every `every`-th, at most `times`."""

    fault: Fault
    service: str | None = None  # "blob", "table", or None for both
    method: str | None = None  # e.g. "POST"; None for any
    path: str | None = None  # a regular expression searched in the request target
    body: str | None = None  # a regular expression searched in the body (read as latin-1)
    skip: int = 0
    every: int = 1
    times: int = 1
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def matches(self, service: str, method: str, target: str, body: bytes) -> bool:
        return (
            (self.service is None or self.service == service)
            and (self.method is None or self.method == method)
            and (self.path is None or re.search(self.path, target) is not None)
            and (self.body is None or re.search(self.body, body.decode("latin-1")) is not None)
        )

    def take(self) -> bool:
        """Count one matching request; True when it is to be faulted."""
        self.seen += 1
        if self.fired >= self.times or self.seen <= self.skip:
            return False
        if (self.seen - self.skip - 1) % max(self.every, 1):
            return False
        self.fired += 1
        return True


@dataclass(frozen=True)
class Event:
    """One request the proxy saw, and what it did with it."""

    service: str
    method: str
    target: str
    action: str  # Fault.describe(), or "pass"
    status: int | None  # the status the client got, if it got one
    at: float


@dataclass
class _Message:
    head: bytes
    body: bytes
    start_line: str
    headers: dict[str, str]

    @property
    def raw(self) -> bytes:
        return self.head + self.body


class _Closed(Exception):
    """The peer closed the connection between messages."""


def _read_head(stream: BinaryIO) -> tuple[bytes, str, dict[str, str]]:
    lines: list[bytes] = []
    size = 0
    while True:
        line = stream.readline(_MAX_HEAD + 1)
        if not line:
            if lines:
                raise ConnectionError("connection closed inside a message head")
            raise _Closed
        if not lines and line in (b"\r\n", b"\n"):
            continue  # tolerated blank lines between messages
        size += len(line)
        if size > _MAX_HEAD:
            raise ValueError("message head too large")
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            break
    start = lines[0].decode("latin-1").strip()
    headers: dict[str, str] = {}
    for line in lines[1:-1]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return b"".join(lines), start, headers


def _read_exact(stream: BinaryIO, count: int) -> bytes:
    if count > _MAX_BODY:
        raise ValueError("message body too large")
    data = stream.read(count)
    if len(data) != count:
        raise ConnectionError("connection closed inside a message body")
    return data


def _read_chunked(stream: BinaryIO) -> bytes:
    """A chunked body, raw (sizes, extensions and trailers as they came)."""
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = stream.readline(1024)
        if not size_line:
            raise ConnectionError("connection closed inside a chunked body")
        parts.append(size_line)
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        total += size
        if total > _MAX_BODY:
            raise ValueError("message body too large")
        if size == 0:
            while True:  # trailers, then the blank line
                trailer = stream.readline(_MAX_HEAD)
                if not trailer:
                    raise ConnectionError("connection closed inside chunk trailers")
                parts.append(trailer)
                if trailer in (b"\r\n", b"\n"):
                    return b"".join(parts)
        parts.append(_read_exact(stream, size + 2))  # the data and its CRLF


def _read_body(stream: BinaryIO, headers: dict[str, str], *, until_close: bool) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _read_chunked(stream)
    if "content-length" in headers:
        return _read_exact(stream, int(headers["content-length"]))
    if until_close:
        data = stream.read(_MAX_BODY + 1)
        if len(data) > _MAX_BODY:
            raise ValueError("message body too large")
        return data
    return b""


def _read_request(stream: BinaryIO) -> _Message:
    head, start, headers = _read_head(stream)
    body = _read_body(stream, headers, until_close=False)
    return _Message(head, body, start, headers)


def _read_response(stream: BinaryIO, method: str) -> _Message:
    while True:
        head, start, headers = _read_head(stream)
        status = _status_of(start)
        if 100 <= status < 200:
            continue  # interim answers are not relayed (the SDK never asks for them)
        if method == "HEAD" or status in (204, 304):
            return _Message(head, b"", start, headers)
        return _Message(head, _read_body(stream, headers, until_close=True), start, headers)


def _status_of(start_line: str) -> int:
    parts = start_line.split(" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _error_response(service: str, status: int) -> bytes:
    code = _ERROR_CODES.get(status, "InternalError")
    message = f"Injected by the test fault proxy: {code}."
    if service == "table":
        error = {"odata.error": {"code": code, "message": {"lang": "en-US", "value": message}}}
        body = json.dumps(error).encode()
        content_type = "application/json;odata=minimalmetadata;streaming=true;charset=utf-8"
    else:
        body = (
            f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>"
        ).encode()
        content_type = "application/xml"
    reason = {500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"x-ms-error-code: {code}\r\n"
        "x-ms-request-id: 00000000-0000-0000-0000-00000000fa17\r\n"
        "Connection: keep-alive\r\n\r\n"
    ).encode()
    return head + body


def _abort(connection: socket.socket) -> None:
    """Close with a TCP RST rather than an orderly FIN."""
    with contextlib.suppress(OSError):
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


class FaultProxy:
    """`with FaultProxy(azurite) as proxy:` then point the SDK at `proxy.connection_string`."""

    def __init__(
        self,
        azurite: Azurite,
        *,
        lifetime: float = 180.0,
        max_stall: float = 10.0,
        max_connections: int = 2000,
    ) -> None:
        self._azurite = azurite
        self._lifetime = lifetime
        self._max_stall = max_stall
        self._max_connections = max_connections
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._rules: list[Rule] = []
        self._scripts: dict[str, deque[Fault]] = {service: deque() for service in SERVICES}
        self._events: list[Event] = []
        self._accepted = 0
        self._clients: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listeners: dict[str, socket.socket] = {}
        for service in SERVICES:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind((LOOPBACK, 0))
            listener.listen(64)
            listener.settimeout(0.1)
            self._listeners[service] = listener
        self._deadline_timer = threading.Timer(lifetime, self.close)
        self._deadline_timer.daemon = True

    # --- configuration ---------------------------------------------------------------

    @property
    def blob_port(self) -> int:
        return int(self._listeners["blob"].getsockname()[1])

    @property
    def table_port(self) -> int:
        return int(self._listeners["table"].getsockname()[1])

    @property
    def connection_string(self) -> str:
        """Azurite's, with blob and table through the proxy (queues go straight to Azurite)."""
        return connection_string(self.blob_port, self._azurite.queue_port, self.table_port)

    def add_rule(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def script(self, service: str, faults: Iterable[Fault]) -> None:
        """Answer the next requests to `service` with these faults, in order (PASS relays)."""
        if service not in SERVICES:
            raise ValueError(f"service must be one of {SERVICES}")
        with self._lock:
            self._scripts[service].extend(faults)

    def clear(self) -> None:
        """No more faults: every request is relayed from now on."""
        with self._lock:
            self._rules.clear()
            for script in self._scripts.values():
                script.clear()

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def injected(self) -> list[Event]:
        return [event for event in self.events if event.action != "pass"]

    # --- running ---------------------------------------------------------------------

    def start(self) -> FaultProxy:
        for service, listener in self._listeners.items():
            self._spawn(self._accept_loop, service, listener)
        self._deadline_timer.start()
        return self

    def close(self) -> None:
        self._stopped.set()
        self._deadline_timer.cancel()
        for listener in self._listeners.values():
            listener.close()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        current = threading.current_thread()
        for thread in list(self._threads):
            if thread is not current:
                thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self, service: str, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, address = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            if address[0] != LOOPBACK:
                _abort(client)
                continue
            with self._lock:
                self._accepted += 1
                over = self._accepted > self._max_connections
                if not over:
                    self._clients.add(client)
            if over:
                _abort(client)
                continue
            self._spawn(self._serve, service, client)

    def _choose(self, service: str, method: str, target: str, body: bytes) -> Fault:
        with self._lock:
            if self._scripts[service]:
                return self._scripts[service].popleft()
            for rule in self._rules:
                if rule.matches(service, method, target, body) and rule.take():
                    return rule.fault
        return PASS

    def _log(self, service: str, request: _Message, action: str, status: int | None) -> None:
        method, _, rest = request.start_line.partition(" ")
        target = rest.rsplit(" ", 1)[0]
        with self._lock:
            self._events.append(Event(service, method, target, action, status, time.monotonic()))

    def _serve(self, service: str, client: socket.socket) -> None:
        client.settimeout(_IDLE_TIMEOUT)
        stream = client.makefile("rb")
        aborted = False
        try:
            while not self._stopped.is_set():
                try:
                    request = _read_request(stream)
                except _Closed:
                    break
                method, _, rest = request.start_line.partition(" ")
                fault = self._choose(service, method, rest.rsplit(" ", 1)[0], request.body)
                keep, aborted = self._answer(service, client, request, fault)
                if not keep or request.headers.get("connection", "").lower() == "close":
                    break
        except (OSError, ValueError):
            pass  # the client went away, or sent what the proxy does not relay
        finally:
            stream.close()
            with self._lock:
                self._clients.discard(client)
            if aborted:
                _abort(client)
            else:
                client.close()

    def _answer(
        self, service: str, client: socket.socket, request: _Message, fault: Fault
    ) -> tuple[bool, bool]:
        """Handle one request; (keep the connection, abort it with RST)."""
        action = fault.describe()
        if fault.kind == "error" and not fault.after_forward:
            self._log(service, request, action, fault.status)
            client.sendall(_error_response(service, fault.status))
            return True, False
        if fault.kind == "reset" and not fault.after_forward:
            self._log(service, request, action, None)
            return False, True
        if fault.kind == "stall" and not fault.after_forward:
            self._log(service, request, action, None)
            self._stopped.wait(min(fault.seconds, self._max_stall))
            return False, False

        try:
            response = self._forward(service, request)
        except (OSError, ValueError):
            # Storage is not there (stopped, restarting): the client sees its connection drop.
            self._log(service, request, "upstream-unavailable", None)
            return False, True
        status = _status_of(response.start_line)
        if fault.kind == "pass":
            self._log(service, request, action, status)
            client.sendall(response.raw)
            return response.headers.get("connection", "").lower() != "close", False
        if fault.kind == "error":
            self._log(service, request, action, fault.status)
            client.sendall(_error_response(service, fault.status))
            return True, False
        if fault.kind == "stall":
            self._log(service, request, action, None)
            self._stopped.wait(min(fault.seconds, self._max_stall))
            return False, False
        # reset after forwarding: nothing, or part of the answer, then RST
        self._log(service, request, action, status if fault.partial else None)
        if fault.partial:
            if response.body:
                client.sendall(response.head + response.body[: max(1, len(response.body) // 2)])
            else:
                client.sendall(response.head[: len(response.head) // 2])
        return False, True

    def _forward(self, service: str, request: _Message) -> _Message:
        port = self._azurite.blob_port if service == "blob" else self._azurite.table_port
        method = request.start_line.split(" ", 1)[0]
        with socket.create_connection((LOOPBACK, port), timeout=_UPSTREAM_TIMEOUT) as upstream:
            upstream.sendall(request.raw)
            with upstream.makefile("rb") as stream:
                return _read_response(stream, method)
