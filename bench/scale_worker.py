"""One writer process of bench.bench_scale's concurrent-writers figure.

    AzureWebJobsStorage=... ACTIVITYLOG_STORE_PREFIX=... python -m bench.scale_worker FILE

Each non-blank line of FILE is one Event Hub body, delivered on its own through the Event Hub
path (`deliver`, as the trigger does): one archive write per body (`python -m shared ingest`
would put up to 1,000 bodies into one write). A write that fails is counted, not retried (the
host would retry it); the process then exits 1. An empty FILE measures an idle start.

Prints one JSON object: writes, indexed, failed, the first error, the wall-clock span of the
writes, and claim appends lost to other writers: the app's own counter if it has one
(`LOST_APPENDS` or `CLAIM_STATS.lost_appends` in shared.services.claims), else its "claim
append lost" log lines at INFO, else what is counted here: claim-row transactions through
`IndexTables.append` refused with EntityAlreadyExists (how the app appended claims before).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableTransactionError

from shared.bootstrap import build_runtime
from shared.core.archive_keys import KEY_ROW
from shared.services import claims
from shared.services.delivery import EventBody, deliver
from shared.settings import load_settings

LOST_LINE = "claim append lost"


class _LostLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if LOST_LINE in record.getMessage():
            self.count += 1


def app_counter() -> int | None:
    """The app's own count of lost appends, whatever shape it has (None: it has none):
    `LOST_APPENDS`, or `CLAIM_STATS.lost_appends`, in shared.services.claims."""
    counter: Any = getattr(claims, "LOST_APPENDS", None)
    if counter is None:
        counter = getattr(getattr(claims, "CLAIM_STATS", None), "lost_appends", None)
    if counter is None:
        return None
    if isinstance(counter, int):
        return counter
    value = getattr(counter, "value", counter)
    try:
        return int(value() if callable(value) else value)
    except (TypeError, ValueError):
        return None


def main(argv: Sequence[str]) -> int:
    lines = [line for line in Path(argv[0]).read_bytes().splitlines() if line.strip()]
    logged = _LostLines()
    app_log = logging.getLogger("shared")
    app_log.setLevel(logging.INFO)
    app_log.addHandler(logged)
    app = build_runtime(load_settings(os.environ))

    tables, refused = app.tables, [0]
    append = tables.append

    def counted_append(month: str, entities: Sequence[dict[str, Any]]) -> None:
        try:
            append(month, entities)
        except (TableTransactionError, ResourceExistsError) as error:
            conflict = getattr(error, "error_code", None) == "EntityAlreadyExists"
            if conflict and str(entities[0]["PartitionKey"]).startswith(KEY_ROW):
                refused[0] += 1
            raise

    tables.append = counted_append  # type: ignore[method-assign]
    indexed = failed = 0
    error = ""
    first = time.time()
    for number, line in enumerate(lines):
        body = EventBody(line, origin=f"{argv[0]}:{number + 1}")
        try:
            report = deliver(
                [body],
                writer=app.writer,
                deadletters=app.deadletters,
                final_attempt=False,  # a failure raises, as it would for the host to retry
                path="bench",
            )
        except Exception as failure:  # a writer that gives up: counted, reported
            failed += 1
            error = error or f"{type(failure).__name__}: {failure}"[:300]
            continue
        indexed += report.indexed
    last = time.time()
    counter = app_counter()
    if counter is not None:
        lost, source = counter, "app counter"
    elif logged.count:
        lost, source = logged.count, "app log lines"
    else:
        lost, source = refused[0], "refused claim transactions"
    summary = {
        "writes": len(lines),
        "indexed": indexed,
        "failed": failed,
        "error": error,
        "first": first,
        "last": last,
        "lost": lost,
        "source": source,
        "lost_logged": logged.count,
        "lost_refused": refused[0],
    }
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
