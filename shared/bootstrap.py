"""The app's clients, built once per worker process from app settings and passed to the core.

A function's own bad settings do not stop the build (see shared.settings): forwarding whose
settings are bad is off (`forwarding` is None, and `settings.invalid` says why), and the blob
indexer, which needs the seal setting, raises its error when a function asks for it.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from shared.adapters.archive_store import ArchiveStore
from shared.adapters.cursors import CursorStore
from shared.adapters.deadletters import DeadLetterStore
from shared.adapters.forward_marks import ForwardMarks
from shared.adapters.forwarding_declaration import ForwardingDeclaration
from shared.adapters.index_tables import IndexTables
from shared.adapters.log_analytics import LogAnalyticsForwarder
from shared.adapters.storage import Stores, connect
from shared.services.archive_read import ArchiveReader
from shared.services.archive_write import ArchiveWriter
from shared.services.blob_indexing import BlobIndexer
from shared.services.forwarding import Forwarding
from shared.settings import Section, Settings, read_settings


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    stores: Stores
    tables: IndexTables
    archive: ArchiveStore
    writer: ArchiveWriter
    reader: ArchiveReader
    deadletters: DeadLetterStore
    marks: ForwardMarks  # which records Log Analytics has accepted
    forwarding: Forwarding | None  # None when forwarding is off (or its settings are bad)
    cursors: CursorStore

    @property
    def forwarder(self) -> LogAnalyticsForwarder | None:
        return self.forwarding.forwarder if self.forwarding is not None else None

    @property
    def blob_indexer(self) -> BlobIndexer:
        """The archive path's indexer, forwarding what it indexes as the Event Hub path does.

        Raises SettingsError when the seal setting is bad: only what indexes blobs needs it.
        """
        return BlobIndexer(
            self.writer,
            self.cursors,
            self.deadletters,
            seal_after=timedelta(minutes=self.settings.seal_after_minutes),
            forwarding=self.forwarding,
        )


def _forwarding(settings: Settings, marks: ForwardMarks, stores: Stores) -> Forwarding | None:
    """Log Analytics forwarding, when it is configured and its settings are good."""
    if Section.FORWARDING in settings.invalid:
        return None  # every invocation that would forward says why (functions.shell)
    ingestion = settings.logs_ingestion()
    if ingestion is None:
        return None
    from shared.adapters.log_analytics import build_client  # only when forwarding is configured
    from shared.adapters.storage import credential_for

    client = build_client(ingestion.endpoint, credential_for(settings))
    forwarder = LogAnalyticsForwarder(
        client,
        ingestion.rule_id,
        ingestion.stream,
        # Settings allow plain http only to a loopback test endpoint.
        enforce_https=ingestion.endpoint.startswith("https://"),
    )
    declaration = ForwardingDeclaration(stores.runs, ingestion.stream, ingestion.rule_id)
    return Forwarding(forwarder, marks, declaration)


def build_runtime(settings: Settings, **client_options: Any) -> Runtime:
    stores = connect(settings, **client_options)
    stores.ensure()
    tables = IndexTables(stores.table_service, stores.index_prefix)
    archive = ArchiveStore(stores.records, stores.archive_tier)
    marks = ForwardMarks(tables)
    return Runtime(
        settings=settings,
        stores=stores,
        tables=tables,
        archive=archive,
        writer=ArchiveWriter(tables, archive),
        reader=ArchiveReader(tables, archive),
        deadletters=DeadLetterStore(stores.deadletter),
        marks=marks,
        forwarding=_forwarding(settings, marks, stores),
        cursors=CursorStore(stores.cursors),
    )


@functools.cache
def runtime() -> Runtime:
    """The worker's runtime, from the process's app settings (read once). What every path
    needs raises here when bad; a function's own bad settings raise where they are read."""
    return build_runtime(read_settings(os.environ))
