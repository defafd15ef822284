"""Blob trigger: a PT1H.json in the archive container was created or changed."""

from __future__ import annotations

import functools
import logging

import azure.functions as func
from azurefunctions.extensions.bindings import blob

from functions import shell
from shared.adapters import telemetry
from shared.adapters.blobs import ArchiveBlob
from shared.settings import ARCHIVE_CONTAINER, STORAGE_CONNECTION, Section

bp = func.Blueprint()
log = logging.getLogger(__name__)
TRIGGER = shell.Trigger(
    "archive_blob",
    telemetry.BLOB,
    log,
    "archive blob indexed",
    functools.partial(telemetry.record_blobs, path=telemetry.BLOB),
    runs_without=(Section.FORWARDING,),
)


# Event Grid is the only blob trigger source on Flex Consumption, and it fires once, when the
# blob is created, never for appends: the catch-up timer indexes what grows after that. The
# SDK-type binding hands over a client, not the content, so the host reads no byte of it.
@bp.function_name("archive_blob")
@bp.blob_trigger(
    arg_name="changed",
    path=f"%{ARCHIVE_CONTAINER}%/{{name}}",
    connection=STORAGE_CONNECTION,
    source=func.BlobSource.EVENT_GRID,
)
def archive_blob(changed: blob.BlobClient) -> None:
    name = changed.blob_name
    shell.run(
        TRIGGER,
        lambda app: app.blob_indexer.index(ArchiveBlob(app.stores.archive, name)),
        blob=name,
    )
