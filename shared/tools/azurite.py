"""Starts Azurite, Azure's own storage emulator, on loopback for local runs and tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from shared.settings import STORAGE_CONNECTION

# Azurite's published development account; its key is public and only works on Azurite.
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Where `UseDevelopmentStorage=true` points: Azurite's default ports on loopback.
DEFAULT_PORTS = (10000, 10001, 10002)
LOCAL_DATA = _PROJECT_ROOT / ".azurite"
# How long Azurite may take to save and exit when asked (seconds): it writes its metadata on
# the way out, which took up to 7 s on a busy 2-core machine; killed sooner, that is lost.
STOP_SECONDS = 30


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        # As a server binds: a port a stopped Azurite left in TIME_WAIT is free to use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _azurite_command() -> str:
    local = _PROJECT_ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if found:
        return found
    raise RuntimeError("Azurite is not installed: run `npm ci` in the project folder")


def connection_string(blob_port: int, queue_port: int, table_port: int) -> str:
    base = "http://127.0.0.1"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
        f"BlobEndpoint={base}:{blob_port}/{DEV_ACCOUNT};"
        f"QueueEndpoint={base}:{queue_port}/{DEV_ACCOUNT};"
        f"TableEndpoint={base}:{table_port}/{DEV_ACCOUNT};"
    )


class Azurite:
    """One Azurite process on free loopback ports; data in `location` (a temp folder if None).

    Restartable on the same ports and folder, so tests can take storage away and bring it back.
    """

    def __init__(self, location: Path | None = None, *, in_memory: bool = False) -> None:
        # In memory is faster; on disk survives a restart (what fault tests need).
        self.in_memory = in_memory
        self._own_location = location is None
        self.location = location or Path(tempfile.mkdtemp(prefix="azurite-"))
        self.blob_port, self.queue_port, self.table_port = (_free_port() for _ in range(3))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_port, self.queue_port, self.table_port)

    def start(self, timeout: float = 30.0) -> Azurite:
        self.location.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(  # noqa: S603 (our own fixed argument list)
            [
                _azurite_command(),
                "--silent",
                "--skipApiVersionCheck",
                "--disableProductStyleUrl",
                *(
                    ["--inMemoryPersistence"]
                    if self.in_memory
                    else ["--location", str(self.location)]
                ),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.blob_port),
                "--queueHost",
                "127.0.0.1",
                "--queuePort",
                str(self.queue_port),
                "--tableHost",
                "127.0.0.1",
                "--tablePort",
                str(self.table_port),
            ],
            cwd=self.location,  # whatever Azurite writes stays in its own folder
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Its own session: a terminal's Ctrl-C goes to its foreground group, and reached
            # Azurite beside stop()'s own signal; stopped twice at once, it exited before
            # saving what was written in its last seconds (found from outside).
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        for port in (self.blob_port, self.queue_port, self.table_port):
            while True:
                if self._process.poll() is not None:
                    error = self._process.stderr.read().decode() if self._process.stderr else ""
                    raise RuntimeError(f"Azurite exited at start: {error.strip()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError("Azurite did not open its ports in time") from None
                    time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # Azurite shuts down cleanly on Ctrl-C
            try:
                self._process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def close(self) -> None:
        self.stop()
        if self._own_location:
            shutil.rmtree(self.location, ignore_errors=True)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


@contextmanager
def local_storage(
    say: Callable[[str], None], env: Mapping[str, str] = os.environ
) -> Iterator[str | None]:
    """The storage a local command uses: the configured one, else Azurite on loopback.

    Yields the connection string to use, or None when the settings name storage themselves
    (`AzureWebJobsStorage`, or its identity-based `__` settings). Otherwise the default is
    Azure's development storage: an Azurite already listening on the default ports is used
    as it is; when none is, one is started on them for this command, its data kept in
    `.azurite/` so that the next command (a query after an ingest) finds it.
    """
    if any(name.startswith(STORAGE_CONNECTION) and value for name, value in env.items()):
        yield None
        return
    if all(_listening(port) for port in DEFAULT_PORTS):
        yield connection_string(*DEFAULT_PORTS)
        return
    emulator = Azurite(LOCAL_DATA)
    if all(_port_free(port) for port in DEFAULT_PORTS):
        emulator.blob_port, emulator.queue_port, emulator.table_port = DEFAULT_PORTS
    emulator.start()
    say(f"Azurite started on 127.0.0.1:{emulator.blob_port} (data in .azurite/)")
    try:
        yield emulator.connection_string
    finally:
        emulator.stop()
