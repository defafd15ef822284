"""Every benchmark in one table: figure, floor measured in the same run, ratio, target.

.venv/bin/python -m bench.run [--quick]
"""

from __future__ import annotations

import os
import platform
import sys
import time

from bench import bench_normalize, bench_pipeline


def main() -> int:
    quick = "--quick" in sys.argv
    started = time.perf_counter()
    rows = bench_normalize.run(20_000 if quick else 100_000) + bench_pipeline.run(quick=quick)
    bench_pipeline.print_table(rows)
    print(
        f"\n{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores,"
        f" {platform.machine()}; {time.perf_counter() - started:.0f} s in all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
