"""The search API of issue 20 measured on Azurite, each figure beside its target.

N events (100,000; --quick 20,000) of one subscription spread over a year (2025) are written
through the app's writer (1,000 a write, in two processes), then compacted as the hourly
timer would have done by now. Then:

(a) the histogram of that subscription over the year (`GET /api/activity/histogram`, by day,
    split by status and by category) in a warm runtime, as the function host runs it:
    seconds (target <= 1 s) and archive blob requests (target 0), counted on the wire;
(b) `python -m shared query --subscription S --format csv` over the year, every record, as a
    user runs it (process start included): records a second (target >= 10,000), and its
    peak RSS beside the same export of N/4 records (target: flat, <= 1.25x);
(c) what the resource group and status postings cost: index bytes per event by posting kind
    (fresh rows and compacted runs, billed size), informational;
(d) the same export of a small tenant's archive written an hour at a time (bench.small_tenant):
    few records a blob, so the rate its blob reads allow, informational.

    .venv/bin/python -m bench.bench_api [--quick]
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import orjson

from bench.bench_storage import Figure, print_figures
from bench.scale_load import WRITE_EVENTS, SyntheticMonth, open_app
from bench.small_tenant import small_tenant_figures
from bench.storage_probe import entity_bytes, index_rows
from functions.query_http import handle_histogram
from shared.bootstrap import Runtime
from shared.core.keys import LEGACY_KINDS, LOOKUP_COLUMNS
from shared.core.runs import RUN_ROW
from shared.services.compaction import compact
from shared.settings import STORAGE_CONNECTION, STORE_PREFIX
from shared.tools.azurite import Azurite

YEAR = datetime(2025, 1, 1, tzinfo=UTC)
YEAR_END = datetime(2026, 1, 1, tzinfo=UTC)
NOW = YEAR_END + timedelta(days=30)  # every day of the year closed, and compacted
HISTOGRAM_SECONDS = 1.0
EXPORT_RATE = 10_000
RSS_FLAT = 1.25
PROCESSES, THREADS = 2, 2


class OneSubscription(SyntheticMonth):
    """A synthetic month whose events are all of one subscription (the pool's first)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions = self._subscriptions[:1]

    @property
    def subscription(self) -> str:
        return str(self._subscriptions[0])


def _months(count: int) -> list[OneSubscription]:
    starts = [YEAR.replace(month=month) for month in range(1, 13)]
    return [
        OneSubscription(count // 12 + (m < count % 12), start) for m, start in enumerate(starts)
    ]


def _write_part(connection: str, prefix: str, count: int, part: int, parts: int) -> int:
    """In a loader process: every `parts`-th write of the year, from `part` on, on threads."""
    writes = [
        (month, start) for month in _months(count) for start in range(0, month.count, WRITE_EVENTS)
    ][part::parts]

    def write(share: list[tuple[OneSubscription, int]]) -> int:
        app = open_app(connection, prefix)
        return sum(
            len(app.writer.write(month.records(start, start + WRITE_EVENTS)).indexed)
            for month, start in share
        )

    with ThreadPoolExecutor(THREADS) as pool:
        return sum(pool.map(write, [writes[n::THREADS] for n in range(THREADS)]))


def _compact_part(connection: str, prefix: str, months: list[str]) -> int:
    return compact(open_app(connection, prefix).tables, as_of=NOW, months=months).units


def load(connection: str, prefix: str, count: int) -> float:
    """Seconds to write and compact the year."""
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
        parts = [
            pool.submit(_write_part, connection, prefix, count, part, PROCESSES)
            for part in range(PROCESSES)
        ]
        assert sum(part.result() for part in parts) == count
        months = [f"2025{month:02d}" for month in range(1, 13)]
        merges = [
            pool.submit(_compact_part, connection, prefix, months[n::PROCESSES])
            for n in range(PROCESSES)
        ]
        assert sum(merge.result() for merge in merges) > 0
    return time.perf_counter() - started


# --- (a) the histogram ----------------------------------------------------------------------


class BlobReads:
    """A `raw_request_hook`: requests to the record archive's container."""

    def __init__(self, container: str) -> None:
        self.count = 0
        self._path = f"/{container}/"
        self._lock = threading.Lock()

    def __call__(self, request: Any) -> None:
        if self._path in str(request.http_request.url):
            with self._lock:
                self.count += 1


def histogram_figures(connection: str, prefix: str, subscription: str) -> list[Figure]:
    reads = BlobReads(f"{prefix}-records")
    app = open_app(connection, prefix, raw_request_hook=reads)
    figures = []
    for split in ("status", "category"):
        params = {
            "subscription": subscription,
            "since": YEAR.isoformat(),
            "until": YEAR_END.isoformat(),
            "bucket": "day",
            "split": split,
        }
        request = func.HttpRequest("GET", "/api/activity/histogram", params=params, body=b"")
        seconds, total = [], 0
        for _ in range(3):
            started = time.perf_counter()
            response = handle_histogram(request, app, NOW)
            seconds.append(time.perf_counter() - started)
            assert response.status_code == 200, response.get_body()[:200]
            total = int(orjson.loads(response.get_body())["total"])
        median = statistics.median(seconds)
        shown = ", ".join(f"{s:.2f}" for s in seconds)
        figures.append(
            Figure(
                f"histogram of a year, by day, split={split}",
                f"{median:.2f} s median of 3 ({shown} s; {total:,} events counted)",
                f"<= {HISTOGRAM_SECONDS:.0f} s",
                "pass" if median <= HISTOGRAM_SECONDS else "FAIL",
            )
        )
    figures.append(
        Figure(
            "archive blob requests by those 6 histograms",
            f"{reads.count}",
            "0",
            "pass" if reads.count == 0 else "FAIL",
        )
    )
    return figures


# --- (b) the CSV export ---------------------------------------------------------------------

_MEASURED = (
    "import atexit, resource, runpy, sys\n"
    "atexit.register(lambda: sys.stderr.write("
    "f'peak-rss-kib {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n'))\n"
    "sys.argv = ['shared', *sys.argv[1:]]\n"
    "runpy.run_module('shared', run_name='__main__')\n"
)


def export(connection: str, prefix: str, subscription: str, limit: int) -> tuple[int, float, int]:
    """(records written, seconds, peak RSS in KiB) of one CSV export by the CLI."""
    env = {**os.environ, STORAGE_CONNECTION: connection, STORE_PREFIX: prefix}
    command = [sys.executable, "-c", _MEASURED, "query", "--subscription", subscription]
    command += ["--since", YEAR.isoformat(), "--until", YEAR_END.isoformat()]
    command += ["--limit", str(limit), "--format", "csv"]
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.PIPE, check=False)
        seconds = time.perf_counter() - started
        out.seek(0)
        rows = sum(1 for _ in out) - 1  # less the header
    errors = done.stderr.decode(errors="replace")
    assert done.returncode == 0, errors[-500:]
    peak = [int(line.split()[1]) for line in errors.splitlines() if line.startswith("peak-rss")]
    return rows, seconds, peak[-1]


def export_figures(connection: str, prefix: str, subscription: str, count: int) -> list[Figure]:
    quarter_rows, _, quarter_rss = export(connection, prefix, subscription, count // 4)
    rows, seconds, rss = export(connection, prefix, subscription, 10_000_000)
    rate = rows / seconds
    ratio = rss / quarter_rss
    return [
        Figure(
            f"CSV export of {rows:,} records, `python -m shared query --format csv`",
            f"{rate:,.0f} records/s ({seconds:.1f} s, process start included)",
            f">= {EXPORT_RATE:,} records/s",
            "pass" if rate >= EXPORT_RATE and rows == count else "FAIL",
        ),
        Figure(
            "peak RSS of that export / of one of N/4",
            f"{ratio:.2f} ({rss / 1024:.0f} MiB / {quarter_rss / 1024:.0f} MiB, "
            f"{quarter_rows:,} records)",
            f"<= {RSS_FLAT}",
            "pass" if ratio <= RSS_FLAT and quarter_rows == count // 4 else "FAIL",
        ),
    ]


# --- (c) what the new posting kinds cost ----------------------------------------------------


def kind_figures(app: Runtime, count: int) -> list[Figure]:
    """Billed index bytes per event of each posting kind: fresh rows (PartitionKey the kind)
    and compacted runs (`y{kind}{DD}`)."""
    by_kind: Counter[str] = Counter()
    total = 0
    for _, row in index_rows(app):
        size = entity_bytes(row)
        total += size
        partition = str(row["PartitionKey"])
        if partition[:1] in LOOKUP_COLUMNS:
            by_kind[partition[0]] += size
        elif partition[:1] == RUN_ROW and partition[1:2] in LOOKUP_COLUMNS:
            by_kind[partition[1]] += size
    new = [kind for kind in LOOKUP_COLUMNS if kind not in LEGACY_KINDS]
    added = sum(by_kind[kind] for kind in new)
    each = ", ".join(f"{kind} {by_kind[kind] / count:.1f}" for kind in LOOKUP_COLUMNS)
    return [
        Figure("index bytes/event, all rows (compacted)", f"{total / count:.1f}", "", "info"),
        Figure(f"of which postings by kind ({each})", "", "", "info"),
        Figure(
            "resource group + status postings",
            f"+{added / count:.1f} B/event ({added / max(1, total - added):.0%} over the rest)",
            "",
            "info",
        ),
    ]


def run(quick: bool = False, azurite: Azurite | None = None) -> list[Figure]:
    if azurite is None:
        with Azurite(in_memory=True) as own:
            return run(quick, own)
    count = 20_000 if quick else 100_000
    connection, prefix = azurite.connection_string, f"bapi{os.getpid()}"
    seconds = load(connection, prefix, count)
    subscription = _months(count)[0].subscription
    figures = [Figure(f"{count:,} events written and compacted", f"{seconds:.0f} s", "", "info")]
    figures += histogram_figures(connection, prefix, subscription)
    figures += export_figures(connection, prefix, subscription, count)
    figures += kind_figures(open_app(connection, prefix), count)
    figures += small_tenant_figures(connection, quick)
    return figures


def main(argv: Sequence[str]) -> int:
    started = time.perf_counter()
    print_figures(run(quick="--quick" in argv))
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
