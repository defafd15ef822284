"""Every benchmark: figure, floor or target measured in the same run, and the verdict.

Sections run one after the other; one that fails says why and the others still print.

.venv/bin/python -m bench.run [--quick]
"""

from __future__ import annotations

import os
import platform
import sys
import time
import traceback
from collections.abc import Callable

from bench import (
    bench_api,
    bench_normalize,
    bench_page,
    bench_pipeline,
    bench_scale,
    bench_storage,
)


def _section(title: str, work: Callable[[], None]) -> bool:
    print(f"\n== {title}")
    try:
        work()
    except Exception:  # a broken section must not hide the others' figures
        print(f"{title} failed:\n{traceback.format_exc(limit=3)}")
        return False
    return True


def main() -> int:
    quick = "--quick" in sys.argv
    started = time.perf_counter()
    ran = [
        _section(
            "normalize",
            lambda: bench_pipeline.print_table(bench_normalize.run(20_000 if quick else 100_000)),
        ),
        _section("pipeline", lambda: bench_pipeline.print_table(bench_pipeline.run(quick=quick))),
        _section(
            "storage (issue 13)",
            lambda: bench_storage.print_figures(bench_storage.run(quick=quick)),
        ),
        _section(
            "scale (issue 19)",
            lambda: bench_scale.print_figures(bench_scale.run(quick=quick)),
        ),
        _section(
            "search API (issue 20)",
            lambda: bench_storage.print_figures(bench_api.run(quick=quick)),
        ),
        _section(
            "search page (issue 20)",
            lambda: bench_page.print_figures(bench_page.run(quick=quick)),
        ),
    ]
    print(
        f"\n{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores,"
        f" {platform.machine()}; {time.perf_counter() - started:.0f} s in all"
    )
    return 0 if all(ran) else 1


if __name__ == "__main__":
    sys.exit(main())
