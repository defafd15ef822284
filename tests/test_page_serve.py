"""`python -m shared serve`: the registered HTTP functions on loopback, dispatched by the routes
they declare, refusing any other address or Host, stopped cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path

import pytest

from shared import settings as names
from shared.settings import Settings
from shared.tools import cli
from shared.tools.azurite import Azurite
from shared.tools.local_host import app_settings
from shared.tools.serve import http_routes, local_settings, make_server, serving

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server(azurite: Azurite, settings: Settings) -> Iterator[tuple[str, int]]:
    values = {
        **local_settings(azurite.connection_string),
        names.STORE_PREFIX: settings.store_prefix,
    }
    with app_settings(values), serving() as running:
        host, port = running.server_address[:2]
        yield str(host), int(port)


def fetch(
    address: tuple[str, int], path: str, method: str = "GET", host: str = ""
) -> tuple[int, bytes]:
    connection = HTTPConnection(*address, timeout=30)
    headers = {"Host": host} if host else {}
    connection.request(method, path, headers=headers)
    answer = connection.getresponse()
    body = answer.read()
    connection.close()
    return answer.status, body


def test_it_serves_every_registered_http_function_by_its_declared_route() -> None:
    routes = {route.function: route for route in http_routes()}
    assert set(routes) == {
        "activity",
        "activity_histogram",
        "search",
        "search_assets",
        "search_activity",
        "search_histogram",
    }
    found = routes["search_assets"].pattern.fullmatch("search/assets/app.js")
    assert found is not None and found.groupdict() == {"name": "app.js"}
    assert routes["search"].pattern.fullmatch("search/assets/app.js") is None
    assert routes["activity"].methods == frozenset({"GET"})


def test_it_answers_on_loopback_names_only(server: tuple[str, int]) -> None:
    status, body = fetch(server, "/api/search")
    assert status == 200 and b"search/assets/app.js" in body
    assert fetch(server, "/api/search", host=f"localhost:{server[1]}")[0] == 200
    # A page elsewhere reaching it through a name that resolves here (DNS rebinding):
    assert fetch(server, "/api/search", host=f"attacker.example:{server[1]}")[0] == 421
    assert fetch(server, "/api/search", method="POST")[0] == 405
    assert fetch(server, "/api/nothing")[0] == 404
    assert fetch(server, "/search")[0] == 404
    assert fetch(server, "/api/activity?since=2d")[0] == 200  # keys unchecked, as `func start`


def raw_exchange(address: tuple[str, int], data: bytes) -> bytes:
    """Bytes sent on one connection, and everything answered until the server closes it."""
    with socket.create_connection(address, timeout=30) as connection:
        connection.sendall(data)
        answered = b""
        while chunk := connection.recv(65536):
            answered += chunk
    return answered


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", " "])
def test_a_bad_content_length_is_a_400_at_once(server: tuple[str, int], length: str) -> None:
    request = "GET /api/activity?since=2d HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    answered = raw_exchange(server, f"{request}Content-Length: {length}\r\n\r\n".encode())
    assert answered.startswith(b"HTTP/1.1 400"), answered[:80]


def test_a_head_answer_carries_no_body_and_the_next_answer_is_whole(
    server: tuple[str, int],
) -> None:
    connection = HTTPConnection(*server, timeout=30)
    connection.request("HEAD", "/api/search/nothing")
    head = connection.getresponse()
    assert head.status == 404 and head.read() == b""
    connection.request("GET", "/api/search")
    answer = connection.getresponse()
    assert answer.status == 200 and b"search/assets/app.js" in answer.read()
    connection.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.com"])
def test_it_refuses_to_listen_beyond_loopback(
    host: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="loopback only"):
        make_server(host, 0)
    assert cli.main(["serve", "--host", host, "--port", "0"]) == cli.EXIT_USAGE
    assert "loopback only" in capsys.readouterr().err


def test_a_port_in_use_is_a_usage_error_that_names_it_and_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert cli.main(["serve", "--port", str(port)]) == cli.EXIT_USAGE
    error = capsys.readouterr().err
    assert f"127.0.0.1:{port} is in use" in error, error
    assert "--port" in error, error


def test_the_command_prints_the_page_url_and_stops_on_sigterm(
    azurite: Azurite, settings: Settings
) -> None:
    env = {
        **os.environ,
        names.STORAGE_CONNECTION: azurite.connection_string,
        names.STORE_PREFIX: settings.store_prefix,
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "shared", "serve", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("Search page: http://127.0.0.1:"), line
        url = line.split(": ", 1)[1].strip()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert url == f"http://127.0.0.1:{port}/api/search"
        assert fetch(("127.0.0.1", port), "/api/search")[0] == 200
    finally:
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert "stopped" in err


_WRITE_THEN_WAIT = """
import sys, time
from azure.data.tables import TableServiceClient
from shared.tools.azurite import Azurite
az = Azurite(__import__("pathlib").Path(sys.argv[1])).start()
try:
    table = TableServiceClient.from_connection_string(az.connection_string).create_table("kept")
    for n in range(200):
        table.create_entity({"PartitionKey": "p", "RowKey": f"{n:04d}"})
    print("written", flush=True)
    time.sleep(60)
finally:
    az.stop()
"""


def test_ctrl_c_in_a_terminal_stops_local_azurite_without_losing_what_was_written(
    tmp_path: Path,
) -> None:
    # Found from outside: Ctrl-C on `serve` reached Azurite twice (the terminal signals the
    # whole foreground group, and the command stopped it too), and writes made a second
    # before were gone on the next start.
    child = subprocess.Popen(  # as a terminal runs a command: its own process group
        [sys.executable, "-c", _WRITE_THEN_WAIT, str(tmp_path)],
        stdout=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == b"written"
    os.killpg(child.pid, signal.SIGINT)  # Ctrl-C: the terminal's foreground group
    assert child.wait(timeout=60) != 0
    with Azurite(tmp_path) as again:
        from azure.data.tables import TableServiceClient

        table = TableServiceClient.from_connection_string(again.connection_string)
        rows = list(table.get_table_client("kept").list_entities())
        assert len(rows) == 200


def test_a_client_that_goes_away_mid_answer_leaves_no_traceback(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Found from outside: each search the page replaced (or a closed tab) printed a
    # BrokenPipeError traceback of some 20 lines in the terminal.
    server = make_server("127.0.0.1", 0)
    try:
        for gone in (BrokenPipeError(32, "Broken pipe"), ConnectionResetError(104, "reset")):
            try:
                raise gone
            except ConnectionError:
                server.handle_error(None, ("127.0.0.1", 5))
        try:
            raise ValueError("a real failure")
        except ValueError:
            server.handle_error(None, ("127.0.0.1", 5))
    finally:
        server.server_close()
    err = capfd.readouterr().err
    assert "Broken pipe" not in err and "reset" not in err
    assert "ValueError: a real failure" in err  # anything else still shows


def test_addresses_near_the_page_lead_to_it(server: tuple[str, int]) -> None:
    # Found from outside: `/` and `/api/search/` answered a bare 404.
    for path in ("/", "/api", "/api/", "/api/search/"):
        connection = HTTPConnection(*server, timeout=30)
        connection.request("GET", path, headers={"Host": "127.0.0.1"})
        answer = connection.getresponse()
        answer.read()
        assert (answer.status, answer.getheader("Location")) == (302, "/api/search"), path
    assert fetch(server, "/api/search")[0] == 200
    assert fetch(server, "/elsewhere")[0] == 404
