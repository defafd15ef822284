"""That this store's records are forwarded to Log Analytics: one row in the runs table.

A process that forwards says so once (its first send), with the stream and rule it sends to;
a command-line shell without the Logs Ingestion settings reads the row before it indexes, and
says that what it indexes will not be sent (shared.tools.cli), and how to send it afterwards
(`python -m shared forward`). Advice only: a failure to write or read it never stops a
delivery or a verb.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

log = logging.getLogger(__name__)

PARTITION, ROW = "forwarding", "declared"


class ForwardingDeclaration:
    """Writes the row once per process (an upsert at each cold start: its time is fresh)."""

    def __init__(self, runs: TableClient, stream: str, rule_id: str) -> None:
        self._runs = runs
        self._row = {"PartitionKey": PARTITION, "RowKey": ROW, "Stream": stream, "Rule": rule_id}
        self._done = False
        self._lock = threading.Lock()

    def declare(self) -> None:
        if self._done:
            return
        with self._lock:
            if self._done:
                return
            row = {**self._row, "Seen": datetime.now(UTC).isoformat(timespec="seconds")}
            try:
                self._runs.upsert_entity(row, mode=UpdateMode.REPLACE)
            except AzureError as error:  # advice only: tried again on the next send
                log.warning("could not note that this store forwards: %s", error)
                return
            self._done = True


def declared(runs: TableClient) -> dict[str, str] | None:
    """The declaration's stream, rule and when it was last made; None when there is none."""
    try:
        row = runs.get_entity(PARTITION, ROW)
    except ResourceNotFoundError:
        return None
    return {name: str(row.get(name, "")) for name in ("Stream", "Rule", "Seen")}
