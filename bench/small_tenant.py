"""What the CSV export costs where blobs are small: a small tenant's archive, measured.

The export's rate is set by its blob reads (a ranged GET costs some 2 ms of the SDK's CPU,
whatever it returns), so by records per blob. bench_api's year is written 1,000 events at a
time (about 25 records a blob). A small tenant's events arrive a few at a time: here N events
over D days are written an hour at a time (as an hourly PT1H.json file, or a trickle gathered
by host.json's maxWaitTime, reaches the app), compacted, and exported with the CLI.
Informational: it shows the gap the README's "What does not scale yet" names.
"""

from __future__ import annotations

import os
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import orjson

from bench.bench_storage import Figure
from bench.scale_load import open_app
from shared.core.normalize import normalize_input
from shared.core.records import NormalizedRecord
from shared.services.compaction import compact
from shared.tools.generate import generate_events

START = datetime(2025, 3, 1, tzinfo=UTC)
SUBSCRIPTION = "5a1e7c3d-9b2f-4c8e-a6d0-3e9f1b7c5d24"


def load_hourly(connection: str, prefix: str, count: int, days: int) -> tuple[int, int]:
    """(writes, blobs): `count` events over `days` days, one write an hour, then compacted."""
    events = generate_events(
        count, seed=21, start=START, span=timedelta(days=days), subscriptions=[SUBSCRIPTION]
    )
    records, rejections = normalize_input(orjson.dumps({"records": events}), "small tenant")
    assert not rejections, rejections[:1]
    by_hour: dict[str, list[NormalizedRecord]] = defaultdict(list)
    for record in records:
        by_hour[record["TimeGenerated"][:13]].append(record)
    app = open_app(connection, prefix)
    for hour in sorted(by_hour):
        app.writer.write(by_hour[hour])
    months = sorted({hour[:7].replace("-", "") for hour in by_hour})
    compact(app.tables, as_of=START + timedelta(days=days + 40), months=months)
    return len(by_hour), sum(1 for _ in app.stores.records.list_blobs())


def small_tenant_figures(connection: str, quick: bool) -> list[Figure]:
    # Imported here: bench_api imports this module.
    from bench.bench_api import export

    count, days = (2_000, 14) if quick else (5_000, 30)
    prefix = f"bsmall{os.getpid()}"
    writes, blobs = load_hourly(connection, prefix, count, days)
    rows, seconds, _ = export(connection, prefix, SUBSCRIPTION, 10_000_000)
    assert rows == count, f"{rows} rows exported of {count}"
    return [
        Figure(
            f"small tenant: CSV export of {rows:,} records written an hour at a time",
            f"{rows / seconds:,.0f} records/s ({seconds:.1f} s; {blobs:,} blobs from "
            f"{writes:,} writes, {count / blobs:.1f} records a blob)",
            "",
            "info",
        )
    ]
