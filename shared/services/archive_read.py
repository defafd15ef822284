"""Reading records back from the archive: by place (blob and ordinal), or a blob whole.

A place resolves through its blob's manifest row (no manifest: the blob is not committed, or
is past retention, and the record is not there). The manifest's member offsets turn the places
of one blob into one ranged read, from the first gzip member they need to the last; blobs are
read side by side, and only the members and lines asked for are decompressed and parsed.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeGuard

from azure.core.exceptions import HttpResponseError

from shared.adapters.archive_store import ArchiveStore
from shared.adapters.index_tables import IndexTables, as_int
from shared.core.archive_format import (
    decode_lines,
    decode_record,
    unpack_offsets,
)
from shared.core.archive_keys import LEGACY_MEMBER_RECORDS, MEMBERS, STATE, BlobRef
from shared.core.records import NormalizedRecord

log = logging.getLogger(__name__)
Place = tuple[BlobRef, int]  # a blob and a record's ordinal in it


@dataclass(frozen=True, slots=True)
class Manifest:
    """What was recorded when a blob was committed."""

    ref: BlobRef
    count: int
    sha256: str
    offsets: tuple[int, ...]
    low_ticks: int
    high_ticks: int
    member_records: int = LEGACY_MEMBER_RECORDS

    @classmethod
    def of_row(cls, ref: BlobRef, row: dict[str, object]) -> Manifest:
        return cls(
            ref,
            as_int(row["N"]),
            bytes(row["H"]).hex(),  # type: ignore[call-overload]
            unpack_offsets(bytes(row["O"])),  # type: ignore[call-overload]
            as_int(row["Lo"]),
            as_int(row["Hi"]),
            as_int(row[MEMBERS]) if row.get(MEMBERS) else LEGACY_MEMBER_RECORDS,
        )


def is_manifest(row: Mapping[str, object] | None) -> TypeGuard[dict[str, object]]:
    """A committed blob's manifest row (not a pending or fenced one)."""
    return row is not None and STATE not in row


class UnreadableRecord(Exception):
    """A record whose archived bytes cannot be read back (damaged storage): named, never fatal."""

    def __init__(self, name: str, cause: Exception) -> None:
        super().__init__(f"record in {name} cannot be read: {type(cause).__name__}: {cause}")
        self.name = name


_ROW_ERRORS = (KeyError, ValueError, TypeError, IndexError)  # a manifest row's damaged fields
Known = Manifest | UnreadableRecord | None  # what a lookup knows of a blob's manifest


def listed_manifest(
    month: str, partition: str, row: Mapping[str, object]
) -> tuple[BlobRef, Manifest | UnreadableRecord] | None:
    """A row of a day's manifest partition as listed: its blob, and its committed manifest or,
    when the row is damaged, the blob's unreadable records; None when it is no committed
    blob's (a write in flight, fenced, or a row of another making)."""
    if not is_manifest(row):
        return None
    try:
        ref = BlobRef.of_manifest(month, partition, str(row["RowKey"]))
    except _ROW_ERRORS:
        return None
    return ref, read_manifest(ref, row)


def read_manifest(ref: BlobRef, row: dict[str, object]) -> Manifest | UnreadableRecord:
    """A committed manifest row read; a damaged one as the unreadable records of its blob (a
    search names it, `verify` calls the row `altered`), never an error that ends the search."""
    try:
        return Manifest.of_row(ref, row)
    except _ROW_ERRORS as error:
        log.warning(
            "manifest row of %s cannot be read: %s: %s", ref.name, type(error).__name__, error
        )
        return UnreadableRecord(ref.name, ValueError(f"its manifest row is damaged: {error}"))


_READ_ERRORS = (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError, TypeError, IndexError)


class ArchiveReader:
    def __init__(self, tables: IndexTables, archive: ArchiveStore) -> None:
        self._tables = tables
        self._archive = archive

    def manifest(self, ref: BlobRef) -> Manifest | None:
        """The blob's manifest; None when it has none committed, or when its row cannot be
        read (damaged: `verify` names it `altered`, and a lookup skips it as a listing of
        the day does, rather than fail every search that reaches it)."""
        known = self._known(ref)
        return known if isinstance(known, Manifest) else None

    def _known(self, ref: BlobRef) -> Known:
        partition, row = ref.manifest_keys
        found = self._tables.get(ref.month, partition, row)
        return read_manifest(ref, found) if is_manifest(found) else None

    def manifests(self, refs: Sequence[BlobRef]) -> dict[BlobRef, Known]:
        # One point read a blob: a day's partition can hold 100,000 manifests at scale.
        unique = sorted(set(refs))
        return dict(zip(unique, self._tables.parallel(self._known, unique), strict=True))

    def fetch(
        self, places: Sequence[Place], manifests: Mapping[BlobRef, Known] | None = None
    ) -> list[NormalizedRecord | UnreadableRecord | None]:
        """The record at each place; None where there is none (uncommitted or deleted).

        A blob is read once, by one range from the first gzip member a place needs to the
        last, and only the places' lines are parsed: a lookup wanting a few records of each
        of many big blobs costs a request a blob, not a blob's every record."""
        known = dict(manifests or {})
        missing = [ref for ref, _ in places if ref not in known]
        known.update(self.manifests(missing))
        needed: dict[BlobRef, set[int]] = defaultdict(set)
        for ref, ordinal in places:
            manifest = known[ref]
            if isinstance(manifest, Manifest) and ordinal < manifest.count:
                needed[ref].add(ordinal // manifest.member_records)
        spans = list(needed.items())
        read = self._tables.parallel(lambda span: self._span(known, *span), spans)
        members = {ref: got for (ref, _), got in zip(spans, read, strict=True)}
        out: list[NormalizedRecord | UnreadableRecord | None] = []
        for ref, ordinal in places:
            manifest = known[ref]
            if isinstance(manifest, UnreadableRecord):
                out.append(manifest)  # its row is damaged: named, not silently missing
                continue
            if manifest is not None and ordinal >= manifest.count:  # a posting past its N
                out.append(UnreadableRecord(ref.name, IndexError("past its manifest's count")))
                continue
            got = members.get(ref)
            if manifest is None or got is None:
                out.append(None)
                continue
            if isinstance(got, UnreadableRecord):
                out.append(got)
                continue
            size = manifest.member_records
            lines = got.get(ordinal // size)
            out.append(None if lines is None else _record_at(ref, lines, ordinal % size))
        return out

    def _span(
        self, known: Mapping[BlobRef, Known], ref: BlobRef, wanted: set[int]
    ) -> dict[int, list[bytes]] | UnreadableRecord | None:
        """The lines of the `wanted` members of a blob, by one ranged read from the first to
        the last (members between them are read, not decompressed)."""
        manifest = known[ref]
        assert isinstance(manifest, Manifest)  # spans are made of blobs with a manifest only
        offsets, first, last = manifest.offsets, min(wanted), max(wanted)
        if last + 1 >= len(offsets):
            return UnreadableRecord(ref.name, IndexError("a record past the blob's end"))
        start, end = offsets[first], offsets[last + 1]
        try:
            data = self._archive.read(ref.name, start, end - start)
            if data is None:
                return None
            if len(data) != end - start:
                raise EOFError(f"{len(data)} bytes where the manifest says {end - start}")
            return {
                member: decode_lines(data[offsets[member] - start : offsets[member + 1] - start])
                for member in sorted(wanted)
            }
        except _READ_ERRORS as error:
            return UnreadableRecord(ref.name, error)
        except HttpResponseError as error:
            # Bytes shorter than the manifest says (the blob was replaced): damaged, not down.
            if error.status_code != 416:  # noqa: PLR2004 - Range Not Satisfiable
                raise
            return UnreadableRecord(ref.name, error)

    def blob_records(self, ref: BlobRef) -> list[NormalizedRecord] | UnreadableRecord | None:
        """Every record of a blob, in its order; None when the blob is gone."""
        try:
            data = self._archive.read(ref.name)
            if data is None:
                return None
            return [decode_record(line) for line in decode_lines(data)]
        except _READ_ERRORS as error:
            return UnreadableRecord(ref.name, error)


def _record_at(ref: BlobRef, lines: list[bytes], index: int) -> NormalizedRecord | UnreadableRecord:
    try:
        return decode_record(lines[index])
    except _READ_ERRORS as error:
        return UnreadableRecord(ref.name, error)
