"""The app's clients, built once per worker process from app settings and passed to the core."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from datetime import timedelta

from shared.adapters.cursors import CursorStore
from shared.adapters.deadletters import DeadLetterStore
from shared.adapters.forward_marks import ForwardMarks
from shared.adapters.index_store import IndexReader, IndexWriter
from shared.adapters.log_analytics import LogAnalyticsForwarder
from shared.adapters.storage import Stores, connect
from shared.services.blob_indexing import BlobIndexer
from shared.services.forwarding import Forwarding
from shared.settings import Settings, load_settings


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    stores: Stores
    writer: IndexWriter
    reader: IndexReader
    deadletters: DeadLetterStore
    marks: ForwardMarks  # which records Log Analytics has accepted
    forwarding: Forwarding | None  # None when forwarding is not configured
    cursors: CursorStore
    blob_indexer: BlobIndexer

    @property
    def forwarder(self) -> LogAnalyticsForwarder | None:
        return self.forwarding.forwarder if self.forwarding is not None else None


def build_runtime(settings: Settings) -> Runtime:
    stores = connect(settings)
    stores.ensure()
    forwarder = None
    if settings.forwards_to_log_analytics:
        from shared.adapters.log_analytics import build_client  # only when forwarding is configured
        from shared.adapters.storage import credential_for

        client = build_client(settings.logs_ingestion_endpoint, credential_for(settings))
        forwarder = LogAnalyticsForwarder(
            client,
            settings.logs_ingestion_rule_id,
            settings.logs_ingestion_stream,
            # Settings allow plain http only to a loopback test endpoint.
            enforce_https=settings.logs_ingestion_endpoint.startswith("https://"),
        )
    writer = IndexWriter(stores.records, stores.lookup, stores.oversize)
    marks = ForwardMarks(stores.records)
    deadletters = DeadLetterStore(stores.deadletter)
    cursors = CursorStore(stores.cursors)
    return Runtime(
        settings=settings,
        stores=stores,
        writer=writer,
        reader=IndexReader(stores.records, stores.oversize),
        deadletters=deadletters,
        marks=marks,
        forwarding=Forwarding(forwarder, marks) if forwarder is not None else None,
        cursors=cursors,
        blob_indexer=BlobIndexer(
            writer,
            cursors,
            deadletters,
            seal_after=timedelta(minutes=settings.seal_after_minutes),
        ),
    )


@functools.cache
def runtime() -> Runtime:
    """The worker's runtime, from the process's app settings (read once)."""
    return build_runtime(load_settings(os.environ))
