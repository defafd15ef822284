"""What bench.bench_scale measures with: synthetic months of records loaded through the app's
writer, a loopback proxy that counts what storage sends back, the CLI run as a user runs it,
a request hook that counts table entities written, and writer processes run side by side
(bench.scale_worker) with their CPU time.

Records are made cheaply but valid for the writer: each is a copy of one of a few hundred
records the generator made and the normalizer normalized (so every column is there, in the
normalizer's own forms), with its time, resource, caller and correlation id replaced, and its
EventKey computed again by shared.core.eventkey (each event distinct).
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from shared.bootstrap import Runtime, build_runtime
from shared.core.eventkey import event_key
from shared.core.normalize import normalize_input
from shared.core.records import NormalizedRecord
from shared.settings import STORAGE_CONNECTION, STORE_PREFIX, load_settings
from shared.tools.generate import generate_events
from tests.fault_proxy import FaultProxy, _Message

Plant = tuple[str, str, int]  # (record column, value, how many events carry it)
_TICKS = 10_000_000  # a second in .NET ticks: the canonical time's 7 fractional digits
_POOL = 400  # generated records the synthetic ones are copies of
WRITE_EVENTS = 1000  # events a write when loading a month
MONTH = datetime(2025, 3, 1, tzinfo=UTC)  # a past month: every day of it is closed


def open_app(connection: str, prefix: str, **client_options: Any) -> Runtime:
    """The app's runtime over one store prefix (request hooks go to the SDK clients)."""
    settings = load_settings({STORAGE_CONNECTION: connection, STORE_PREFIX: prefix})
    return build_runtime(settings, **client_options)


def _pool(seed: int) -> list[NormalizedRecord]:
    events = generate_events(_POOL, seed=seed)
    records, rejections = normalize_input(orjson.dumps({"records": events}), "bench")
    assert not rejections, rejections[:1]
    return records


class SyntheticMonth:
    """`count` events spread evenly over one month, in time order, made on demand (a million
    records are never held at once). Resources, callers and correlation ids come from pools
    the size of a busy tenant's; `plants` give chosen values to exactly that many events,
    spread over the month (so over different days), values the pools never make."""

    def __init__(
        self,
        count: int,
        month: datetime,
        plants: Sequence[Plant] = (),
        seed: int = 19,
        days: int | None = None,  # only the month's first days (a test's tiny month)
    ) -> None:
        self.count = count
        self.start = month
        following = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
        self.end = month + timedelta(days=days) if days else following
        self._span = int((self.end - month).total_seconds()) * _TICKS
        self._pool = _pool(seed)
        self._subscriptions = sorted({record["SubscriptionId"] for record in self._pool})
        self._seed = seed
        self.spec = (count, month, tuple(plants), seed, days)  # what makes the same month again
        self._planted: dict[int, dict[str, str]] = {}
        for number, (column, value, times) in enumerate(plants):
            step = count // times
            for k in range(times):
                at = k * step + step // 2 + number  # mid-step: one event a step, days apart
                self._planted.setdefault(at, {})[column] = value

    def time_of(self, index: int) -> str:
        ticks = index * self._span // self.count + (index * 7919) % max(1, self._span // self.count)
        moment = self.start + timedelta(seconds=ticks // _TICKS)
        return f"{moment:%Y-%m-%dT%H:%M:%S}.{ticks % _TICKS:07d}Z"

    def record(self, index: int) -> NormalizedRecord:
        record = dict(self._pool[index % len(self._pool)])  # nested values shared, never changed
        subscription = self._subscriptions[index % len(self._subscriptions)]
        resource = index * 2_654_435_761 % 5_000  # 5,000 resources, scattered over time
        record["TimeGenerated"] = self.time_of(index)
        record["SubscriptionId"] = subscription
        record["ResourceGroup"] = f"rg-{resource % 40:02d}"
        record["ResourceId"] = (
            f"/subscriptions/{subscription}/resourcegroups/rg-{resource % 40:02d}/providers/"
            f"microsoft.compute/virtualmachines/vm-{resource:05d}"
        )
        record["Caller"] = f"user{index * 40_503 % 400:03d}@contoso.example"
        record["CorrelationId"] = f"{index // 2:08x}-0000-4000-8000-{self._seed:012x}"
        record.update(self._planted.get(index, {}))
        record["EventKey"] = event_key(record)
        return record

    def records(self, start: int, end: int) -> list[NormalizedRecord]:
        return [self.record(index) for index in range(start, min(end, self.count))]


@dataclass(frozen=True, slots=True)
class Loaded:
    events: int
    writes: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def _write_stretches(
    connection: str, prefix: str, spec: tuple[Any, ...], stretches: list[list[tuple[int, int]]]
) -> int:
    """In a loader process: each stretch of writes on a thread with a runtime of its own."""
    month = SyntheticMonth(*spec)

    def write(stretch: list[tuple[int, int]]) -> int:
        app = open_app(connection, prefix)
        return sum(len(app.writer.write(month.records(*span)).indexed) for span in stretch)

    with ThreadPoolExecutor(max_workers=len(stretches)) as pool:
        return sum(pool.map(write, stretches))


def load_month(
    connection: str, prefix: str, month: SyntheticMonth, processes: int = 2, threads: int = 2
) -> Loaded:
    """Every event of the month through `ArchiveWriter.write`, 1,000 events a write, in
    `processes` x `threads` writers (the writer is CPU-bound in the SDK, so one process alone
    is held to one core by the GIL), each a contiguous stretch of the month, as instances
    reading different Event Hub partitions would: they seldom share a claim slot. The time
    includes starting the processes (about a second)."""
    writes = [(start, start + WRITE_EVENTS) for start in range(0, month.count, WRITE_EVENTS)]
    share = -(-len(writes) // (processes * threads))
    stretches = [writes[n * share : (n + 1) * share] for n in range(processes * threads)]
    started = time.perf_counter()
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = [stretches[p * threads : (p + 1) * threads] for p in range(processes)]
        done = [
            pool.submit(_write_stretches, connection, prefix, month.spec, part) for part in parts
        ]
        indexed = sum(future.result() for future in done)
    seconds = time.perf_counter() - started
    assert indexed == month.count, f"indexed {indexed} of {month.count}"
    return Loaded(month.count, len(writes), seconds)


# --- what storage answers: a counting proxy ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Traffic:
    requests: int = 0
    body_bytes: int = 0  # response bodies, tables and blobs
    table_bytes: int = 0  # of which, table answers

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(
            self.requests + other.requests,
            self.body_bytes + other.body_bytes,
            self.table_bytes + other.table_bytes,
        )

    def __sub__(self, other: Traffic) -> Traffic:
        return self + Traffic(-other.requests, -other.body_bytes, -other.table_bytes)


class CountingProxy(FaultProxy):
    """The tests' loopback proxy (tests/fault_proxy.py), never faulting, counting each relayed
    request and the bytes of its response body."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, lifetime=3600.0, max_connections=1_000_000, **kwargs)
        self._counted = Traffic()
        self._count_lock = threading.Lock()

    def _forward(self, service: str, request: _Message) -> _Message:
        response = super()._forward(service, request)
        with self._count_lock:
            size = len(response.body)
            self._counted += Traffic(1, size, size if service == "table" else 0)
        return response

    def __enter__(self) -> CountingProxy:
        self.start()
        return self

    @property
    def traffic(self) -> Traffic:
        with self._count_lock:
            return self._counted


# --- the command line, as a user runs it ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class CliRun:
    seconds: float
    code: int
    out: bytes
    err: str

    @property
    def lines(self) -> list[bytes]:
        return [line for line in self.out.splitlines() if line.strip()]

    @property
    def last_error(self) -> str:
        lines = self.err.strip().splitlines()
        return lines[-1] if lines else f"exit code {self.code}"


class Cli:
    """`python -m shared ARGS` against one store prefix, started now; `done()` waits for it
    (process start included in its time)."""

    def __init__(self, connection: str, prefix: str, args: Sequence[str]) -> None:
        env = {**os.environ, STORAGE_CONNECTION: connection, STORE_PREFIX: prefix}
        self._started = time.perf_counter()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "shared", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def done(self, timeout: float = 1800) -> CliRun:
        out, err = self._process.communicate(timeout=timeout)
        took = time.perf_counter() - self._started
        return CliRun(took, self._process.returncode, out, err.decode(errors="replace"))


def run_cli(connection: str, prefix: str, args: Sequence[str]) -> CliRun:
    return Cli(connection, prefix, args).done()


def compacted(compaction: Cli) -> tuple[str, bool]:
    """What `python -m shared compact` said, and whether it ran. A CLI without the verb says
    so: the lookups after it are then measured on uncompacted postings."""
    done = compaction.done()
    if done.code == 2 and "invalid choice" in done.err:  # argparse: no such verb
        return "error: compact verb missing", False
    if done.code != 0:
        return f"error: exit {done.code}: {done.last_error}"[:160], False
    summary = " ".join(done.out.decode(errors="replace").split())  # its summary on one line
    return f"{done.seconds:.1f} s: {summary}"[:200], True


# --- what a write sends: requests and entity operations -------------------------------------


class WireCount:
    """A `raw_request_hook`: every HTTP request (each retry too), and the table entity
    operations among them (a transaction's each; single inserts, replaces, deletes)."""

    _WRITES = frozenset(("POST", "PUT", "PATCH", "MERGE", "DELETE"))

    def __init__(self, table_endpoint: str) -> None:
        self.requests = 0
        self.entities = 0
        self._tables = table_endpoint.rstrip("/")
        self._lock = threading.Lock()

    def __call__(self, request: Any) -> None:
        http = request.http_request
        entities = 0
        url = str(http.url)
        if url.startswith(self._tables):
            if "/$batch" in url:
                entities = sum(len(part.multipart_mixed_info[0]) for part in _parts(http))
            elif http.method in self._WRITES and not url[len(self._tables) :].startswith("/Tables"):
                entities = 1
        with self._lock:
            self.requests += 1
            self.entities += entities

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.requests, self.entities


def _parts(http: Any) -> list[Any]:
    """The change sets of a $batch request (azure-data-tables nests one in the batch)."""
    info = getattr(http, "multipart_mixed_info", None)
    return [part for part in (info[0] if info else ()) if getattr(part, "multipart_mixed_info", 0)]


def table_endpoint(connection: str) -> str:
    fields = dict(part.split("=", 1) for part in connection.split(";") if "=" in part)
    return fields["TableEndpoint"]


def month_bounds(month: datetime) -> tuple[str, str]:
    end = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
    return f"{month:%Y-%m-%dT%H:%M:%SZ}", f"{end:%Y-%m-%dT%H:%M:%SZ}"


def best_of(runs: int, once: Callable[[], CliRun]) -> CliRun:
    """The fastest of `runs` successful runs, else the last failure."""
    best: CliRun | None = None
    for _ in range(runs):
        done = once()
        if done.code != 0:
            return done
        if best is None or done.seconds < best.seconds:
            best = done
    assert best is not None
    return best


# --- writer processes (bench.scale_worker) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriterRun:
    writers: int
    writes: int
    indexed: int
    seconds: float  # first write started to last write ended, over all workers
    lost: int  # claim appends lost to other writers (bench.scale_worker says how counted)
    lost_how: str  # where the count comes from, and the other counts
    gave_up: int  # workers that exited non-zero
    cpu: float  # the workers' CPU seconds, idle starts not taken off
    verified: str  # "clean", or what `verify` said
    error: str


def _worker(connection: str, prefix: str, path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, STORAGE_CONNECTION: connection, STORE_PREFIX: prefix}
    command = [sys.executable, "-m", "bench.scale_worker", str(path)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)  # children waited for, all so far
    return used.ru_utime + used.ru_stime


def _summary(out: bytes, err: bytes) -> dict[str, Any]:
    """A worker's JSON line; {"error": ...} when it printed none (it crashed)."""
    lines = out.strip().splitlines()
    try:
        value = orjson.loads(lines[-1]) if lines else None
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        return value
    return {"error": err.decode(errors="replace").strip()[-300:] or "no summary"}


def run_writers(
    connection: str, prefix: str, bodies: Sequence[bytes], writers: int, folder: Path
) -> WriterRun:
    """`writers` worker processes at once, the bodies dealt out in turn, into a fresh store;
    then `python -m shared verify` on it."""
    open_app(connection, prefix)  # the store exists before the clock starts, as in Azure
    paths = [folder / f"{prefix}-{k}.jsonl" for k in range(writers)]
    for k, path in enumerate(paths):
        path.write_bytes(b"".join(body + b"\n" for body in bodies[k::writers]))
    cpu = _children_cpu()
    processes = [_worker(connection, prefix, path) for path in paths]
    summaries = [_summary(*process.communicate(timeout=1800)) for process in processes]
    cpu = _children_cpu() - cpu
    verify = run_cli(connection, prefix, ["verify"])
    sources = sorted({str(summary.get("source")) for summary in summaries if "source" in summary})
    logged = sum(int(summary.get("lost_logged", 0)) for summary in summaries)
    refused = sum(int(summary.get("lost_refused", 0)) for summary in summaries)
    how = f"{'/'.join(sources) or 'none'}; log lines {logged}, refused here {refused}"
    errors = [str(summary["error"]) for summary in summaries if summary.get("error")]
    return WriterRun(
        writers=writers,
        writes=sum(int(summary.get("writes", 0)) for summary in summaries),
        indexed=sum(int(summary.get("indexed", 0)) for summary in summaries),
        seconds=max(float(summary.get("last", 0)) for summary in summaries)
        - min(float(summary.get("first", 0)) for summary in summaries),
        lost=sum(int(summary.get("lost", 0)) for summary in summaries),
        lost_how=how,
        gave_up=sum(1 for process in processes if process.returncode != 0),
        cpu=cpu,
        verified="clean" if verify.code == 0 else f"exit {verify.code}: {verify.last_error}",
        error=errors[0] if errors else "",
    )


def idle_cpu(connection: str, prefix: str, folder: Path, runs: int = 3) -> float:
    """CPU seconds of a worker that starts, builds its runtime and writes nothing (median)."""
    open_app(connection, prefix)
    path = folder / "idle.jsonl"
    path.write_bytes(b"")
    used = []
    for _ in range(runs):
        cpu = _children_cpu()
        _worker(connection, prefix, path).communicate(timeout=300)
        used.append(_children_cpu() - cpu)
    return statistics.median(used)
