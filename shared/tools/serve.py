"""`python -m shared serve`: the app's HTTP functions on this machine, the search page first.

A stand-in for the Functions host's HTTP front, as shared.tools.local_host is for the other
triggers: requests are dispatched by the routes function_app's registered functions declare
(`api/` + each httpTrigger's route, its methods), as real azure.functions.HttpRequest objects,
to the registered user functions themselves, and their HttpResponse is sent back through the
worker's own response converter. No route, handler or header of the app is written twice here.

Loopback only, and with the page's local access mode (shared.core.access: no sign-in), so the
archive is never served to another machine; requests whose Host is not a loopback name are
refused too, so a web page elsewhere cannot reach it by DNS rebinding. Function keys are not
checked, as Core Tools' `func start` does not check them locally.
"""

from __future__ import annotations

import ipaddress
import json
import re
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func
from azure.functions.http import HttpResponseConverter

from shared import settings as names
from shared.core.access import PageAccessMode
from shared.tools.local_host import app_settings, indexed_functions

ROUTE_PREFIX = "api"  # host.json sets no other (extensions.http.routePrefix)
PAGE_ROUTE = "search"
DEFAULT_PORT = 7071  # Core Tools' own default, so URLs read the same as under `func start`
MAX_BODY = 1024 * 1024  # the page sends none; a bound all the same
_LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True, slots=True)
class Route:
    function: str
    pattern: re.Pattern[str]  # matches the path after /api/, with the route's parameters
    methods: frozenset[str]  # empty: every method
    binding: str  # the name the user function takes the request by
    call: Callable[..., Any]


def _pattern(route: str) -> re.Pattern[str]:
    """A route template (`search/assets/{name}`) as a pattern; a parameter is one segment."""
    parts = re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*(?::[^}]*)?\})", route.strip("/"))
    regex = "".join(
        f"(?P<{part[1:-1].split(':')[0]}>[^/]+)" if part.startswith("{") else re.escape(part)
        for part in parts
    )
    return re.compile(regex, re.IGNORECASE)  # the host matches routes without regard to case


def http_routes() -> list[Route]:
    """Every HTTP function function_app registered, by its declared route and methods."""
    routes = []
    for name, function in indexed_functions().items():
        bindings = json.loads(function.get_function_json())["bindings"]
        for binding in bindings:
            if binding["type"] == "httpTrigger":
                routes.append(
                    Route(
                        name,
                        _pattern(binding.get("route") or name),
                        frozenset(m.upper() for m in binding.get("methods") or ()),
                        binding["name"],
                        function.get_user_function(),
                    )
                )
    # Literal routes before templated ones, as the host prefers the more specific route.
    return sorted(routes, key=lambda route: route.pattern.pattern.count("(?P<"))


def is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The name in a Host header, without its port (`[::1]:7071` -> `::1`)."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _content_length(value: str | None) -> int | None:
    """A request's body length: 0 when none is said, None when what is said is not one."""
    if value is None:
        return 0
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() else None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds a connection may keep a thread waiting for a request's bytes

    def _dispatch(self) -> None:
        if not is_loopback(_host_name(self.headers.get("Host", ""))):
            self._plain(HTTPStatus.MISDIRECTED_REQUEST, "this server answers loopback names only")
            return
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        page = f"/{ROUTE_PREFIX}/{PAGE_ROUTE}"
        if path != page and path.rstrip("/") in ("", f"/{ROUTE_PREFIX}", page):
            self._redirect(page)  # near the page: sent to it
            return
        prefix = f"/{ROUTE_PREFIX}/"
        for route in self.server.routes if path.startswith(prefix) else ():
            found = route.pattern.fullmatch(path[len(prefix) :])
            if found is None:
                continue
            if route.methods and self.command not in route.methods:
                self._plain(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed")
                return
            self._call(route, found)
            return
        self._plain(HTTPStatus.NOT_FOUND, "not found")

    def _call(self, route: Route, found: re.Match[str]) -> None:
        length = _content_length(self.headers.get("Content-Length"))
        if length is None or length > MAX_BODY:
            self.close_connection = True  # the body, if any, is never read
            if length is None:
                self._plain(HTTPStatus.BAD_REQUEST, "Content-Length must be a whole number")
            else:
                self._plain(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
            return
        try:
            response = route.call(**{route.binding: self._request(found, length)})
        except Exception:  # the host answers a function's exception with a bare 500 too
            traceback.print_exc(file=sys.stderr)
            self._plain(HTTPStatus.INTERNAL_SERVER_ERROR, f"{route.function} failed")
            return
        self._answer(route, response)

    def _request(self, found: re.Match[str], length: int) -> func.HttpRequest:
        body = self.rfile.read(length) if length else b""
        host = self.headers.get("Host", "127.0.0.1")
        return func.HttpRequest(
            self.command,
            f"http://{host}{self.path}",
            headers=dict(self.headers.items()),
            # A repeated parameter: its first value, as the host gives one value a name.
            params=dict(reversed(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))),
            route_params=found.groupdict(),
            body=body,
        )

    def _answer(self, route: Route, response: func.HttpResponse) -> None:
        # The worker's own converter: the Content-Type it derives, the headers as sent.
        value = HttpResponseConverter.encode(response, expected_type=None).value
        assert isinstance(value, dict), route.function
        body: bytes = value["body"].value or b""
        self.send_response(int(value["status_code"].value))
        for name, datum in value["headers"].items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, str(datum.value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(int(HTTPStatus.FOUND))
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _plain(self, status: HTTPStatus, text: str) -> None:
        body = text.encode()
        self.send_response(int(status))
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'none'")
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer has no body, or the next one is read wrong
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a browser's open connections never hold the process at exit
    routes: list[Route]
    verbose: bool

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer (a search replaced by the next, a closed tab)
        is no error of the server's: no traceback for it (one line when verbose)."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):  # BrokenPipeError, ConnectionResetError
            if self.verbose:
                sys.stderr.write(f"{client_address[0]} went away: {type(error).__name__}\n")
            return
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_server(host: str, port: int, *, verbose: bool = False) -> _Server:
    """The HTTP server on host:port (loopback only; port 0 picks a free one)."""
    if not is_loopback(host):
        raise ValueError(f"serve binds to loopback only (127.0.0.1, ::1, localhost); got {host!r}")
    kind = _Server6 if ":" in host else _Server
    server = kind((host.strip("[]"), port), _Handler)
    server.routes, server.verbose = http_routes(), verbose
    return server


def page_url(server: ThreadingHTTPServer) -> str:
    host, port = str(server.server_address[0]), int(server.server_address[1])
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/{ROUTE_PREFIX}/{PAGE_ROUTE}"


def local_settings(connection: str | None) -> dict[str, str]:
    """The app settings a local server runs with: the page without sign-in, and the storage."""
    values = {names.PAGE_ACCESS: PageAccessMode.LOCAL.value}
    if connection:
        values[names.STORAGE_CONNECTION] = connection
    return values


@contextmanager
def serving(host: str = "127.0.0.1", port: int = 0) -> Iterator[ThreadingHTTPServer]:
    """The server answering on a thread of this process until the block ends (the caller
    provides the app settings: `local_settings` under `local_host.app_settings`)."""
    server = make_server(host, port)
    thread = threading.Thread(target=server.serve_forever, name="serve", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _interrupt(number: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(host: str, port: int, say: Callable[[str], None], *, verbose: bool = False) -> None:
    """`python -m shared serve`: storage (Azurite when none is set), the runtime, then the
    server in the foreground until interrupted."""
    from shared.bootstrap import runtime
    from shared.tools.azurite import local_storage

    server = make_server(host, port, verbose=verbose)  # a taken port fails before Azurite starts
    # `kill` (SIGTERM) stops it as Ctrl-C does, so the Azurite it started is stopped too.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with local_storage(say) as connection, app_settings(local_settings(connection)):
            app = runtime()  # built now: bad settings or storage show before the URL does
            app.settings.page_access  # noqa: B018 (raises SettingsError when refused here)
            say(f"serving the app's HTTP functions on {host} (no sign-in: this machine only)")
            sys.stdout.write(f"Search page: {page_url(server)}\n")
            sys.stdout.flush()
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                say("stopped")
    finally:
        server.server_close()
