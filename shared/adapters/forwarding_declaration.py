"""Forwarding's rows in the runs table: that this store is forwarded, and `forward`'s lock.

A process that forwards says so once (its first send), with the stream and rule it sends to;
a command-line shell without the Logs Ingestion settings reads the row before it indexes, and
says that what it indexes will not be sent (shared.tools.cli), and how to send it afterwards
(`python -m shared forward`). Advice only: a failure to write or read it never stops a
delivery or a verb. ForwardLock keeps `forward` runs one at a time (below).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.adapters.storage import write_unless_changed

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


LOCK_ROW = "lock"
# How long a forward lock holds unrenewed. The holder renews it before each Logs Ingestion
# call and each blob it reads once RENEW_AFTER has passed, and one call lasts at most some
# 9.5 minutes (shared.adapters.log_analytics: 6 attempts of up to 10 s to connect and 60 s to
# read, 5 waits of up to 30 s): a live run never loses it mid-call, however throttled; a run
# paused past it is taken over, and stops at its next renewal.
LOCK_TIME = timedelta(minutes=15)
RENEW_AFTER = timedelta(minutes=3)


class ForwardHeld(Exception):
    """Another `forward` holds the store's forward lock, or took it over from this one."""


class ForwardLock:
    """One `forward` at a time on a store: a row of the runs table, held by its ETag.

    Two runs over the same records would each send those that have no letter (the Logs
    Ingestion API cannot recognise a repeat). The holder renews the row as it goes (`keep`,
    before each call and each blob read); a holder paused past LOCK_TIME is taken over, and
    its next renewal fails, so it stops before sending again (a call already in flight when
    it froze may still land: the README's EventKey deduplication covers that)."""

    def __init__(self, runs: TableClient, clock: Callable[[], datetime] | None = None) -> None:
        self._runs = runs
        self._clock = clock or (lambda: datetime.now(UTC))
        self._etag: str | None = None
        self._renewed = datetime.min.replace(tzinfo=UTC)

    def acquire(self) -> None:
        now = self._clock()
        try:
            found = self._runs.get_entity(PARTITION, LOCK_ROW)
        except ResourceNotFoundError:
            found = None
        if found is not None:
            until = datetime.fromisoformat(str(found.get("Until", "0001-01-01T00:00:00+00:00")))
            if until > now:
                raise ForwardHeld(f"another forward runs on this store, until {until:%H:%M:%S}Z")
        self._etag = self._write(found.metadata.get("etag") if found is not None else None)
        if self._etag is None:
            raise ForwardHeld("another forward started on this store at the same moment")

    def renew(self) -> None:
        if self._etag is None or (etag := self._write(self._etag)) is None:
            self._etag = None
            raise ForwardHeld("this forward paused past its lock and was taken over: stopped")
        self._etag = etag

    def keep(self) -> None:
        """Renew the lock when RENEW_AFTER has passed since it was last written (ForwardHeld
        when it was taken over meanwhile): cheap enough to call before every step."""
        if self._clock() - self._renewed >= RENEW_AFTER:
            self.renew()

    def release(self) -> None:
        if self._etag is None:
            return
        # Taken over meanwhile, or gone: its time runs out by itself.
        with contextlib.suppress(AzureError):
            self._runs.delete_entity(
                PARTITION, LOCK_ROW, etag=self._etag, match_condition=MatchConditions.IfNotModified
            )
        self._etag = None

    def _write(self, etag: str | None) -> str | None:
        """Create (etag None) or replace the row if unchanged; its new ETag, None on a lost race."""
        now = self._clock()
        until = (now + LOCK_TIME).isoformat()
        row = {"PartitionKey": PARTITION, "RowKey": LOCK_ROW, "Until": until}
        written = write_unless_changed(self._runs, row, etag)
        if not written or not written.get("etag"):
            return None
        self._renewed = now
        return str(written["etag"])
