"""The storage layer (issue 13) measured on Azurite, each figure beside its target.

N events (5,000 by default) of one subscription within one hour go in through the Event Hub
path as the host delivers them: `{"records": [...]}` bodies of 1 to 50 records, up to 1,000
bodies a batch (host.json's maxEventBatchSize), into an empty store. Then:

1. storage kept per raw GB-month at LRS list prices (every month-table row sized as Azure
   bills it, plus the archive blobs' bytes; raw = the events as PT1H.json lines): target
   at most a fifth of Log Analytics' long-term retention; with bytes and rows per event;
2. the busiest partition (table, PartitionKey): rows / events, target <= 0.17;
3. HTTP requests per event written (informational);
4. ingest time / normalize time on the same bodies, best of five runs each: target <= 3x
   (issue 19; issue 13 asked for 8x);
5. retention's HTTP requests per event it removes: target <= 0.02;
6. DuckDB reads the downloaded archive as it is: every event once, with its time and
   subscription; and the import time of the app's runtime (informational, cold start);
7. a 1,000-record key lookup with `python -m shared query`, process start included: <= 2.5 s.

    .venv/bin/python -m bench.bench_storage [count] [--quick]
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from bench.storage_probe import (
    RequestCount,
    duckdb_check,
    entity_bytes,
    import_seconds,
    index_rows,
    open_store,
    time_query,
)
from functions.eventhub_trigger import MAX_EVENT_BATCH_SIZE
from shared.adapters.archive_store import COUNT
from shared.bootstrap import Runtime
from shared.core.archive_keys import KEY_ROW, MANIFEST_ROW
from shared.core.normalize import normalize_input
from shared.services.delivery import EventBody, deliver
from shared.tools.azurite import Azurite
from shared.tools.generate import generate_events

SUBSCRIPTION = "3f2b8c1e-5d4a-4e7b-9c61-0a8d2e4f6b13"
START = datetime(2025, 1, 6, 10, tzinfo=UTC)
BATCH_BODIES = MAX_EVENT_BATCH_SIZE  # host.json's maxEventBatchSize
BODY_RECORDS = (1, 50)  # records per Event Hub body: the docs sample sends one, batches send more
TABLE_PRICE_PER_GB = 0.045  # LRS table storage per GB-month, as the storage issue states it
# LRS block blob capacity per GB-month, first 50 TB, US East (2). Not confirmed on
# azure.microsoft.com/pricing/details/storage/blobs/ itself (not reachable from here); matched
# against secondary copies of that page: Hot ~$0.018 (API Evangelist's Azure Blob plans),
# Cool $0.01 and Cold $0.0036 (an AZ-104 tier table, "LRS, East US 2").
TIER_PRICES = {"Hot": 0.018, "Cool": 0.01, "Cold": 0.0036}
LOG_ANALYTICS_LONG_TERM_PER_GB = 0.02  # the yardstick: Log Analytics long-term retention
COST_TARGET = 0.2 * LOG_ANALYTICS_LONG_TERM_PER_GB
BUSIEST_TARGET = 0.17
INGEST_TARGET = 3.0  # issue 19 (issue 13's was 8)
# Runs of each side of that ratio, the best kept: normalize's and ingest's alike, so that a
# noisy machine (one run swings by a third on a shared 2-core VM) biases neither side.
TIMED_RUNS = 5
RETENTION_TARGET = 0.02
QUERY_TARGET_SECONDS = 2.5
QUERY_LIMIT = 1000
_prefixes = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    value: str
    target: str
    result: str  # pass, FAIL, info or error


def _judged(name: str, value: str, target: str, passed: bool) -> Figure:
    return Figure(name, value, target, "pass" if passed else "FAIL")


@dataclass(frozen=True, slots=True)
class Input:
    bodies: list[EventBody]
    expected: dict[str, tuple[str, str]]  # EventKey: (TimeGenerated, SubscriptionId)
    raw_bytes: int  # the events as PT1H.json lines

    @property
    def events(self) -> int:
        return len(self.expected)


def make_input(count: int, seed: int = 13) -> Input:
    events = generate_events(
        count, seed=seed, start=START, span=timedelta(hours=1), subscriptions=[SUBSCRIPTION]
    )
    raw_bytes = sum(len(orjson.dumps(event)) + 1 for event in events)
    sizes = random.Random(seed)  # reproducible body sizes
    bodies: list[EventBody] = []
    start = 0
    while start < len(events):
        end = start + sizes.randint(*BODY_RECORDS)
        envelope = orjson.dumps({"records": events[start:end]})
        bodies.append(EventBody(envelope, "0", len(bodies)))
        start = end
    expected: dict[str, tuple[str, str]] = {}
    for body in bodies:
        records, rejections = normalize_input(body.body, body.source)
        assert not rejections, rejections[:1]
        for record in records:
            expected[record["EventKey"]] = (record["TimeGenerated"], record["SubscriptionId"])
    assert len(expected) == count, "generated events must be distinct"
    return Input(bodies, expected, raw_bytes)


def normalize_seconds(bodies: Sequence[EventBody], runs: int = TIMED_RUNS) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        for body in bodies:
            normalize_input(body.body, body.source)
        best = min(best, time.perf_counter() - started)
    return best


def ingest(app: Runtime, data: Input) -> float:
    """Seconds to deliver every body, batch by batch as the host would."""
    indexed = 0
    started = time.perf_counter()
    for start in range(0, len(data.bodies), BATCH_BODIES):
        batch = data.bodies[start : start + BATCH_BODIES]
        report = deliver(batch, writer=app.writer, deadletters=app.deadletters)
        indexed += report.indexed
    took = time.perf_counter() - started
    assert indexed == data.events, f"indexed {indexed} of {data.events}"
    return took


# --- 1, 2: what is kept --------------------------------------------------------------------


def _rows_by_kind(kinds: Counter[str], events: int) -> str:
    """Rows per event by the PartitionKey's first character: k (claims and forward marks),
    m (manifests), then each posting kind (shared.core.keys.LOOKUP_COLUMNS)."""
    postings = sorted(kind for kind in kinds if kind not in (KEY_ROW, MANIFEST_ROW))
    each = ", ".join(f"{kind} {kinds[kind] / events:.4f}" for kind in postings)
    total = sum(kinds[kind] for kind in postings) / events
    return (
        f"k {kinds[KEY_ROW] / events:.4f}, m {kinds[MANIFEST_ROW] / events:.4f}, "
        f"postings {total:.4f} ({each})"
    )


def layout_figures(app: Runtime, data: Input) -> list[Figure]:
    table_bytes = 0
    kinds: Counter[str] = Counter()
    partitions: Counter[tuple[str, str]] = Counter()
    for month, row in index_rows(app):
        table_bytes += entity_bytes(row)
        kinds[row["PartitionKey"][0]] += 1
        partitions[(month, row["PartitionKey"])] += 1
    blob_bytes = sum(blob.size for blob in app.archive.blobs())
    events, raw = data.events, data.raw_bytes
    figures = [
        Figure("raw bytes/event (PT1H.json line)", f"{raw / events:,.0f}", "", "info"),
        Figure("table bytes/event (billed size)", f"{table_bytes / events:,.1f}", "", "info"),
        Figure("archive bytes/event (gzip JSONL)", f"{blob_bytes / events:,.1f}", "", "info"),
        Figure("rows/event by kind", _rows_by_kind(kinds, events), "", "info"),
    ]
    tables_cost = table_bytes / raw * TABLE_PRICE_PER_GB
    for tier, price in TIER_PRICES.items():
        cost = tables_cost + blob_bytes / raw * price
        figures.append(
            _judged(
                f"$ per raw GB-month, blobs {tier}",
                f"${cost:.5f} (tables ${tables_cost:.5f} + blobs ${blob_bytes / raw * price:.5f})",
                f"<= ${COST_TARGET:.4f} (0.2 x LA long-term ${LOG_ANALYTICS_LONG_TERM_PER_GB})",
                cost <= COST_TARGET,
            )
        )
    (month, partition), rows = partitions.most_common(1)[0]
    figures.append(
        _judged(
            "busiest partition: rows / events",
            f"{rows / events:.4f} ({rows} rows in {month} {partition})",
            f"<= {BUSIEST_TARGET}",
            rows / events <= BUSIEST_TARGET,
        )
    )
    return figures


# --- 5: retention --------------------------------------------------------------------------


def archived_events(app: Runtime) -> int:
    """Events in the archive, by its blobs' own record counts (whatever the index holds)."""
    return sum(int(blob.metadata.get(COUNT, "0")) for blob in app.archive.blobs())


def retention_figure(app: Runtime, count: RequestCount) -> Figure:
    """Retention as of ten years on: everything ingested has expired. Requests are counted
    on the wire; what the job itself reports is shown beside them."""
    name, target = "retention requests / event removed", f"<= {RETENTION_TARGET}"
    before, requests = archived_events(app), count.value
    try:
        from shared.core.retention_policy import RetentionPolicy
        from shared.services.retention import Budget, RetentionJob

        job = RetentionJob(
            app.stores,
            RetentionPolicy(default_days=90),
            as_of=START + timedelta(days=3650),
            dry_run=False,
            budget=Budget(600),
        )
        report = job.run()
    except Exception as error:  # being rewritten: report, keep measuring the rest
        return Figure(name, f"failed: {type(error).__name__}: {error}"[:100], target, "error")
    requests = count.value - requests
    removed = before - archived_events(app)
    rows_left = sum(1 for _ in index_rows(app))
    if removed <= 0:
        return Figure(name, f"nothing removed ({requests} requests)", target, "FAIL")
    ratio = requests / removed
    reported = getattr(report, "requests", None)
    value = (
        f"{ratio:.4f} ({requests} requests{'' if reported is None else f', job says {reported}'}"
        f", {removed} removed, {rows_left} index rows left)"
    )
    return _judged(name, value, target, ratio <= RETENTION_TARGET)


# --- the run -------------------------------------------------------------------------------


def _store(azurite: Azurite) -> tuple[Runtime, RequestCount, str]:
    prefix = f"bst{os.getpid()}n{next(_prefixes)}"
    count = RequestCount()
    return open_store(azurite.connection_string, prefix, count), count, prefix


def ingest_figures(azurite: Azurite, data: Input) -> tuple[list[Figure], Runtime, RequestCount]:
    """Figures 3 and 4; the store of the first ingest and its count, for the others."""
    warm, _, _ = _store(azurite)  # so that no timed run pays for the emulator's own warm-up
    ingest(warm, make_input(300, seed=99))
    normalizing = normalize_seconds(data.bodies)
    app, count, _ = _store(azurite)
    before = count.value
    best = ingest(app, data)
    requests = count.value - before
    for _ in range(TIMED_RUNS - 1):  # each into a new store, as the first
        best = min(best, ingest(_store(azurite)[0], data))
    ratio = best / normalizing
    return (
        [
            Figure(
                "HTTP requests / event written",
                f"{requests / data.events:.4f} ({requests} requests)",
                "",
                "info",
            ),
            _judged(
                "ingest time / normalize time",
                f"{ratio:.1f}x (ingest {best:.2f} s, normalize {normalizing:.3f} s)",
                f"<= {INGEST_TARGET:.0f}x",
                ratio <= INGEST_TARGET,
            ),
        ],
        app,
        count,
    )


def outside_figures(azurite: Azurite, app: Runtime, data: Input, quick: bool) -> list[Figure]:
    """Figures 6 and 7: engines and the CLI read what the app wrote."""
    check = duckdb_check(app, data.expected)
    value = (
        f"{check.rows} rows for {check.expected} events: {check.missing} missing, "
        f"{check.repeated} repeated, {check.wrong} wrong"
    )
    target = "each event once, same time and subscription"
    figures = [_judged("DuckDB read_json over the archive", value, target, check.passed)]
    seconds, error = import_seconds()
    imports = f"failed: {error}"[:100] if error else f"{seconds * 1000:.0f} ms"
    name = "import shared.bootstrap (cold start)"
    figures.append(Figure(name, imports, "", "error" if error else "info"))
    prefix = app.settings.store_prefix
    timing = time_query(azurite.connection_string, prefix, SUBSCRIPTION, 1 if quick else 3)
    name, limit = f"CLI key lookup of {QUERY_LIMIT:,} records", f"<= {QUERY_TARGET_SECONDS} s"
    if timing.error:
        figures.append(Figure(name, f"failed: {timing.error}"[:100], limit, "error"))
    else:
        wanted = min(QUERY_LIMIT, data.events)
        value = f"{timing.seconds:.2f} s ({timing.records} records)"
        passed = timing.seconds <= QUERY_TARGET_SECONDS and timing.records == wanted
        figures.append(_judged(name, value, limit, passed))
    return figures


def run(count: int = 5000, quick: bool = False, azurite: Azurite | None = None) -> list[Figure]:
    """Every figure, on the given Azurite or on one of its own."""
    if azurite is None:
        with Azurite(in_memory=True) as own:
            return run(count, quick, own)
    data = make_input(count)
    figures, app, requests = ingest_figures(azurite, data)
    figures = layout_figures(app, data) + figures
    figures += outside_figures(azurite, app, data, quick)
    figures.append(retention_figure(app, requests))
    return figures


def print_figures(
    figures: Iterable[Figure], heading: tuple[str, str] = ("storage figure", "target")
) -> None:
    """The figures as a table; `heading`: the first and third columns' titles."""
    table = [(heading[0], "value", heading[1], "result")]
    table += [(f.name, f.value, f.target, f.result) for f in figures]
    widths = [max(len(line[column]) for line in table) for column in range(4)]
    for line in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


def main(argv: Sequence[str]) -> int:
    numbers = [int(arg) for arg in argv if arg.isdigit()]
    started = time.perf_counter()
    print_figures(run(numbers[0] if numbers else 5000, quick="--quick" in argv))
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
