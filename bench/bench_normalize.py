"""Normalization throughput against a floor of bare JSON parse + serialize.

The floor is what any normalizer must pay: `orjson.loads` and `orjson.dumps` of each line.
The measured path is what the command line does: `normalize_input` over JSON Lines bytes, then
`orjson.dumps` of every record. Target: at most 4 times the floor's time. A second row measures
`iter_normalized`, the same work one record at a time, which does not hold every record (and so
does not pay CPython's collector for a heap of 100,000 live records). A third measures
`normalize_line`, the blob indexer's way: the input cut into lines first, each normalized alone.

    .venv/bin/python -m bench.bench_normalize [count]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from shared.core.normalize import iter_normalized, normalize_input, normalize_line
from shared.tools.generate import generate_events

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

    def stream_and_write() -> int:
        done = 0
        for result in iter_normalized(data, "bench.json"):
            orjson.dumps(result)
            done += 1
        return done

    def line_by_line_and_write() -> int:
        done = 0
        for number, line in enumerate(data.split(b"\n"), 1):
            for result in normalize_line(line, f"bench.json:{number}"):
                orjson.dumps(result)
                done += 1
        return done

    floor_seconds = _best_of(ROUNDS, floor)
    size = f"{count:,} JSON Lines records ({len(data) / count:,.0f} B each)"
    rows = []
    for name, work in (
        (f"normalize_input + dumps, {size}", normalize_and_write),
        (f"iter_normalized + dumps, {size}", stream_and_write),
        (f"normalize_line + dumps, {size}", line_by_line_and_write),
    ):
        seconds = _best_of(ROUNDS, work)
        rows.append(
            {
                "benchmark": name,
                "figure": round(count / seconds),
                "unit": "records/s",
                "floor": round(count / floor_seconds),
                "ratio": round(seconds / floor_seconds, 2),
                "target": f"ratio <= {TARGET_RATIO:g}",
            }
        )
    return rows


def main(argv: list[str]) -> int:
    count = int(argv[1]) if len(argv) > 1 else 100_000
    rows = run(count)
    headers = ("benchmark", "figure", "unit", "floor", "ratio", "target")
    table = [headers, *[tuple(str(row[name]) for name in headers) for row in rows]]
    widths = [max(len(line[column]) for line in table) for column in range(len(headers))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
