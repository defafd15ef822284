"""What bench.bench_storage measures with: request-counting clients over Azurite, the billed
size of a table entity, and the outside checks (DuckDB, the CLI, import time).

Table entities are sized by the formula Azure bills (4 + 2·len(PartitionKey + RowKey) + Σ over
properties (8 + 2·len(name) + the value's size); Microsoft Learn archive, "How the size of an
entity is calculated in Windows Azure table storage", https://learn.microsoft.com/en-us/
archive/blogs/avkashchauhan/how-the-size-of-an-entity-is-caclulated-in-windows-azure-table-storage).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from azure.data.tables import EntityProperty

from shared.bootstrap import Runtime, build_runtime
from shared.settings import STORAGE_CONNECTION, STORE_PREFIX, load_settings


class RequestCount:
    """HTTP requests sent by the clients built with it (each retry too: each is billed)."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()  # the index writes from a thread pool

    def __call__(self, request: Any) -> None:
        with self._lock:
            self.value += 1


def open_store(connection: str, prefix: str, count: RequestCount) -> Runtime:
    """The app's runtime (as shared.bootstrap builds it) over clients that count requests.

    The clients' pipelines call `raw_request_hook` on every attempt, after their retry
    policy: a hook given to the service client is shared by the table and container clients.
    """
    settings = load_settings({STORAGE_CONNECTION: connection, STORE_PREFIX: prefix})
    return build_runtime(settings, raw_request_hook=count)


# --- billed sizes ------------------------------------------------------------------------


def _value_size(value: object) -> int:
    if isinstance(value, EntityProperty):
        value = value.value
    if isinstance(value, bytes):
        return len(value) + 4
    if isinstance(value, bool):
        return 1
    if isinstance(value, int | float | datetime):
        return 8
    return len(str(value)) * 2 + 4


def entity_bytes(entity: Mapping[str, Any]) -> int:
    """Billed size of one table entity (the formula in the module's docstring)."""
    keys = len(entity["PartitionKey"]) + len(entity["RowKey"])
    properties = sum(
        8 + len(name) * 2 + _value_size(value)
        for name, value in entity.items()
        if name not in ("PartitionKey", "RowKey")
    )
    return 4 + keys * 2 + properties


def index_rows(app: Runtime) -> Iterator[tuple[str, dict[str, Any]]]:
    """(month, row) for every row of every month table."""
    for month in app.tables.months():
        for row in app.tables.table(month).list_entities():
            yield month, dict(row)


# --- outside checks ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EngineCheck:
    rows: int
    expected: int
    missing: int
    repeated: int
    wrong: int  # present once, with another TimeGenerated or SubscriptionId

    @property
    def passed(self) -> bool:
        return self.rows == self.expected and not (self.missing or self.repeated or self.wrong)


def duckdb_check(app: Runtime, expected: Mapping[str, tuple[str, str]]) -> EngineCheck:
    """Every archive blob downloaded under its own name, then read by DuckDB as any engine
    user would: `expected` is {EventKey: (TimeGenerated, SubscriptionId)}."""
    import duckdb  # bench and tests only: never shipped

    with tempfile.TemporaryDirectory(prefix="bench-archive-") as folder:
        for blob in app.archive.blobs():
            data = app.archive.read(blob.name)
            path = Path(folder, blob.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data or b"")
        # Columns as text: the canonical time keeps its 7 fractional digits.
        rows = (
            duckdb.connect()
            .execute(
                "SELECT EventKey, TimeGenerated, SubscriptionId FROM read_json(?, "
                "format='newline_delimited', columns={'EventKey': 'VARCHAR', "
                "'TimeGenerated': 'VARCHAR', 'SubscriptionId': 'VARCHAR'})",
                [f"{folder}/**/*.jsonl.gz"],
            )
            .fetchall()
        )
    seen: dict[str, int] = {}
    wrong = 0
    for key, time_generated, subscription in rows:
        seen[key] = seen.get(key, 0) + 1
        if expected.get(key, (time_generated, subscription)) != (time_generated, subscription):
            wrong += 1
    return EngineCheck(
        rows=len(rows),
        expected=len(expected),
        missing=sum(1 for key in expected if key not in seen),
        repeated=sum(1 for times in seen.values() if times > 1),
        wrong=wrong,
    )


@dataclass(frozen=True, slots=True)
class QueryTiming:
    seconds: float  # best run; inf when none succeeded
    records: int
    error: str


def time_query(
    connection: str, prefix: str, subscription: str, runs: int, limit: int = 1000
) -> QueryTiming:
    """`python -m shared query` as a user runs it (process start included), best of `runs`."""
    env = {**os.environ, STORAGE_CONNECTION: connection, STORE_PREFIX: prefix}
    command = [sys.executable, "-m", "shared", "query", "--subscription", subscription]
    command += ["--limit", str(limit), "--format", "json"]
    best, records, error = float("inf"), 0, ""
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, check=False, timeout=300)
        took = time.perf_counter() - started
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            error = lines[-1] if lines else f"exit code {done.returncode}"
            continue
        best = min(best, took)
        records = sum(1 for line in done.stdout.splitlines() if line.strip())
    return QueryTiming(best, records, "" if best < float("inf") else error)


_IMPORT_LINE = re.compile(rb"import time:\s+(\d+)\s+\|")


def import_seconds(module: str = "shared.bootstrap") -> tuple[float, str]:
    """What importing the app's runtime costs a cold process: the sum of `-X importtime`'s
    self times (the interpreter's own start excluded); or the import's error."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        return 0.0, lines[-1] if lines else f"exit code {done.returncode}"
    micros = sum(int(match[1]) for match in _IMPORT_LINE.finditer(done.stderr))
    return micros / 1e6, ""
