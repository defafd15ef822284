"""Blobs uploaded and never committed: which of them nothing can commit any more, and
removing one with its postings. Used by retention's sweep (shared.services.retention_archive).

A blob is abandoned when its manifest row is fenced or gone, or pending and older than
ORPHAN_AFTER at the sweep's time, and then fenced first (If-Match, shared.services.instances):
a writer that resumes afterwards fails its commit. No age alone deletes anything, and neither
does a repair's fence (REPAIRING: the blob's records are in it alone until the repair ends;
found from outside: a repair stopped after its fence, and the sweep deleted every record).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from shared.adapters.index_tables import IndexTables, transactions
from shared.core.archive_keys import BlobRef
from shared.services.archive_read import ArchiveReader
from shared.services.archive_write import CLAIM_TIMEOUT, postings
from shared.services.instances import Instances, Stage

ORPHAN_AFTER = CLAIM_TIMEOUT  # a pending blob younger than this may still be committed


def abandoned(
    tables: IndexTables, refs: Sequence[BlobRef], as_of: datetime, *, dry_run: bool
) -> list[BlobRef]:
    """The blobs (of `refs`, none committed when listed) that nothing can commit any more;
    stale pending ones are fenced here first, unless this is a dry run."""
    instances = Instances(tables, lambda: as_of)

    def dead(ref: BlobRef) -> bool:
        instance = instances.read(ref)
        if instance.repairing:
            return False  # its bytes are its records' only copy until the repair ends
        if instance.stage is Stage.PENDING:
            if instance.young(as_of, ORPHAN_AFTER):
                return False  # its writer may still be at work
            if dry_run:
                return True
            instance = instances.fence(instance)
        return instance.stage is Stage.DEAD

    verdicts = tables.parallel(dead, list(refs))
    return [ref for ref, gone in zip(refs, verdicts, strict=True) if gone]


def drop_postings(tables: IndexTables, reader: ArchiveReader, ref: BlobRef) -> int:
    """An uncommitted blob's posting rows, found from its own bytes (a write posts after its
    upload, so a blob's postings never outlive it); the storage requests made."""
    records = reader.blob_records(ref)
    if not isinstance(records, list) or not records:
        return 1
    rows = postings(ref, records)
    tables.delete(ref.month, rows)
    return 1 + len(transactions(rows))
