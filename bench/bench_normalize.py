"""Normalization throughput against a floor of bare JSON parse + serialize.

The floor is what any normalizer must pay: `orjson.loads` and `orjson.dumps` of each line.
The measured path is what the command line does: `normalize_input` over JSON Lines bytes, then
`orjson.dumps` of every record. Target: at most 4 times the floor's time.

    .venv/bin/python -m bench.bench_normalize [count]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from shared.generate import generate_events
from shared.normalize import normalize_input

TARGET_RATIO = 4.0
ROUNDS = 3


def _best_of(rounds: int, work: Callable[[], int]) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def run(count: int = 100_000) -> list[dict[str, Any]]:
    """Rows of {benchmark, figure, unit, floor, ratio, target} for a combined report."""
    data = b"".join(orjson.dumps(event) + b"\n" for event in generate_events(count, seed=42))

    def floor() -> int:
        done = 0
        for line in data.split(b"\n"):
            if line:
                orjson.dumps(orjson.loads(line))
                done += 1
        return done

    def normalize_and_write() -> int:
        records, rejections = normalize_input(data, "bench.json")
        for record in records:
            orjson.dumps(record)
        if rejections or len(records) != count:
            raise AssertionError(f"{len(rejections)} rejections, {len(records)} records")
        return len(records)

    floor_seconds = _best_of(ROUNDS, floor)
    normalize_seconds = _best_of(ROUNDS, normalize_and_write)
    return [
        {
            "benchmark": f"normalize_input + dumps, {count:,} JSON Lines records "
            f"({len(data) / count:,.0f} B each)",
            "figure": round(count / normalize_seconds),
            "unit": "records/s",
            "floor": round(count / floor_seconds),
            "ratio": round(normalize_seconds / floor_seconds, 2),
            "target": f"ratio <= {TARGET_RATIO:g}",
        }
    ]


def main(argv: list[str]) -> int:
    count = int(argv[1]) if len(argv) > 1 else 100_000
    rows = run(count)
    headers = ("benchmark", "figure", "unit", "floor", "ratio", "target")
    table = [headers, *[tuple(str(row[name]) for name in headers) for row in rows]]
    widths = [max(len(line[column]) for line in table) for column in range(len(headers))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    return 0 if all(row["ratio"] <= TARGET_RATIO for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
