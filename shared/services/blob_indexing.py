"""Indexing PT1H.json append blobs incrementally: each byte read once, none missed.

A cursor per blob (offset, ETag, counts) lives in a table. A run reads the blob from the
cursor by byte range, in chunks of one request each, indexes the complete lines, and moves
the cursor past them with an ETag-conditional write only after they are durably indexed.
An unterminated last line is left for the next run. Two runs on one blob cannot skip (the
cursor only moves past indexed lines) nor double (each event is claimed by one archive blob,
shared.services.claims, and the loser of a cursor race re-reads the winner's cursor and goes
on from there). While another run holds some of a piece's events, this run raises
ClaimedElsewhere before its cursor moves, and a later run goes on.

With forwarding on, each piece's records go to Log Analytics after its index write and before
the cursor moves, once per record whichever path delivered it: the forward marks decide, as
for an Event Hub redelivery (shared.services.forwarding). When Log Analytics
fails for now, the run raises before the cursor moves, rather than dead-letter the piece's
records as not forwarded: the blob trigger's retries, the catch-up's next run (the failed
blob holds its watermark) or a backfill run again re-read the piece, whose records are now
archived unmarked, and send exactly those; nothing waits for a manual replay, and what was accepted
before the failure is marked, so it is not sent again. The piece itself is indexed before the
forward, so an outage delays only the pieces after it. (A blob the catch-up does not list, a
name outside the layout or an hour behind its watermark, whose trigger gives up while Log
Analytics is down, is finished by a backfill.) What Log Analytics refuses for itself (a record
over the call limit, a 4xx about the records) is dead-lettered as not forwarded, and the blob
goes on. So is whatever Log Analytics does not take from a blob that can no longer grow
(sealed): its run is the last attempt, as an Event Hub batch's last retry is, for a failure
that never ends by itself (a revoked role, a wrong rule or stream) must not stop the archive
index; `deadletter replay` sends those records once the cause is fixed.

Which blobs to index (the catch-up's recent hours, a backfill's scope) is
`shared.services.catchup`'s; the path grammar is `shared.core.pt1h`'s.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from shared.adapters.blobs import BlobChanged, BlobState, ByteSource
from shared.adapters.cursors import Cursor, CursorStore
from shared.adapters.deadletters import DeadLetterStore
from shared.core.normalize import normalize_input, normalize_line
from shared.core.pt1h import BlobPath
from shared.core.records import NormalizedRecord, Rejection
from shared.services.archive_write import ArchiveWriter
from shared.services.blob_chunks import CHUNK_BYTES, Chunk, read_chunk, replaced, tail_of
from shared.services.deadlettering import dead_letter_rejections
from shared.services.forwarding import Forwarding, ForwardRun
from shared.services.gc_pause import collection_paused
from shared.services.report import BlobReport

log = logging.getLogger(__name__)
CHANGED_TRIES = 3  # runs of one blob from the top when it changed while read, then the next's


@dataclass(slots=True)
class _Piece:
    """A chunk's lines [start, end), normalized, not yet written."""

    start: int
    end: int
    lines: int  # line count at `end`
    records: list[NormalizedRecord] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    open_line: bool = False  # `end` is the end of a last line that had no newline
    tail: str = ""  # the hash of the bytes before `end` (see Cursor.tail)


class _Blob(NamedTuple):
    """The blob a run reads: where, what its name says, how big, and whether it is final."""

    source: ByteSource
    path: BlobPath
    size: int
    final: bool


class BlobIndexer:
    def __init__(  # noqa: PLR0913 - its three stores, then how it reads, seals and forwards
        self,
        writer: ArchiveWriter,
        cursors: CursorStore,
        deadletters: DeadLetterStore,
        *,
        chunk_bytes: int = CHUNK_BYTES,
        seal_after: timedelta = timedelta(hours=2),
        forwarding: Forwarding | None = None,
    ) -> None:
        self._writer = writer
        self._cursors = cursors
        self._deadletters = deadletters
        self._chunk_bytes = chunk_bytes
        self._seal_after = seal_after
        self._forwarding = forwarding

    @property
    def cursors(self) -> CursorStore:
        return self._cursors

    def index(self, source: ByteSource, now: datetime | None = None) -> BlobReport:
        """Index what is new in one blob since its cursor."""
        now = now or datetime.now(UTC)
        path = BlobPath.parse(source.name)
        report = BlobReport(blobs=1)
        if path.hour is None or (source.watched and not path.listed):
            # No hour, or a name the catch-up timer does not list (its growth after this
            # read waits for a backfill): reported, and read all the same.
            log.warning(
                "blob outside the PT1H.json layout, indexed from its content",
                extra={"blob": source.name},
            )
            report.outside_layout.append(source.name)
        for _ in range(CHANGED_TRIES):
            try:
                self._index_once(source, path, now, report)
                return report
            except BlobChanged:
                # Appended to or replaced since this run looked at it: what it committed
                # stays (its cursor moved past it); it looks again and goes on from there.
                log.info("blob changed while read; reading on", extra={"blob": source.name})
        log.warning(
            "blob kept changing while read; the next run goes on", extra={"blob": source.name}
        )
        report.behind = 1
        return report

    def _index_once(
        self, source: ByteSource, path: BlobPath, now: datetime, report: BlobReport
    ) -> None:
        cursor = self._cursors.load(source.name, path.hour)
        state = source.properties()  # the version every read of this run is of
        if replaced(source, cursor, state):
            # Not the bytes we indexed: a new blob under the old name. Index it from the
            # start; keys dedupe whatever it shares with the old one.
            log.warning("blob replaced; indexing it again", extra={"blob": source.name})
            cursor = Cursor(blob=cursor.blob, hour=cursor.hour, etag=cursor.etag)
        changed = cursor.blob_etag != state.etag
        if state.size > cursor.offset or changed:
            cursor.last_growth = state.last_modified
        cursor.blob_etag, cursor.created = state.etag, state.created
        final = self._is_final(path, state, now)
        if cursor.offset < state.size:
            report.behind = 1
            self._index_from_cursor(_Blob(source, path, state.size, final), cursor, report)
        cursor.sealed = final and cursor.offset >= state.size
        if cursor.sealed or cursor.etag is None or (changed and cursor.offset >= state.size):
            self._cursors.save(cursor)

    def _is_final(self, path: BlobPath, state: BlobState, now: datetime) -> bool:
        """Whether the blob can no longer grow: its hour is over and it has been still since.

        A name outside the layout has no hour: its own stillness decides.
        """
        if now < state.last_modified + self._seal_after:
            return False
        return path.hour is None or now >= path.hour + timedelta(hours=1) + self._seal_after

    def _index_from_cursor(self, blob: _Blob, cursor: Cursor, report: BlobReport) -> None:
        """Index piece by piece; the next piece is downloaded while this one is normalized and
        written. Only its bytes are read ahead, not its records: parsed records take several
        times their bytes, and holding two pieces of them would double the peak for nothing
        (normalizing is fast next to the table writes)."""
        source, path, size, final = blob
        chunk = read_chunk(source, cursor.offset, size, self._chunk_bytes, final)
        report.bytes_read += chunk.bytes_read
        ahead = (
            ThreadPoolExecutor(max_workers=1) if size - cursor.offset > self._chunk_bytes else None
        )
        try:
            while chunk.end > chunk.start:
                upcoming = None
                if ahead is not None and chunk.end < size:
                    upcoming = ahead.submit(
                        read_chunk, source, chunk.end, size, self._chunk_bytes, final
                    )
                with collection_paused():  # a piece's records held at once: see gc_pause
                    piece = self._parse(chunk, path, source.name, cursor)
                    del chunk  # its bytes are records now
                    moved = self._commit(cursor, piece, report, blob)
                    del piece  # gone before the next is parsed: one piece of records at a time
                if upcoming is not None:
                    chunk = upcoming.result()
                    report.bytes_read += chunk.bytes_read
                    if moved:
                        continue
                elif moved or cursor.offset >= size:
                    return
                # Lost a race for the cursor: go on from where the other instance got to.
                chunk = read_chunk(source, cursor.offset, size, self._chunk_bytes, final)
                report.bytes_read += chunk.bytes_read
        finally:
            if ahead is not None:
                ahead.shutdown()

    def _parse(self, chunk: Chunk, path: BlobPath, name: str, cursor: Cursor) -> _Piece:
        """Normalize a chunk's lines (numbered on from the cursor's). No I/O."""
        piece = _Piece(chunk.start, chunk.end, cursor.lines)
        piece.tail = tail_of(chunk)
        if chunk.envelope:
            piece.records, piece.rejections = normalize_input(chunk.data, name, path.subscription)
            piece.open_line = not chunk.data.endswith(b"\n")
            piece.lines = cursor.lines + chunk.data.count(b"\n") + piece.open_line
            return piece
        line_number = cursor.lines
        # After a last line taken without its newline, the newline that follows ends it.
        continuing = cursor.open_line and chunk.start == cursor.offset
        data, position = chunk.data, 0
        while position < chunk.length:  # one line at a time: no copy of the whole chunk
            newline = data.find(b"\n", position, chunk.length)
            last = newline < 0
            newline = chunk.length if last else newline
            line = data[position:newline]
            position = newline + 1
            if not continuing:
                line_number += 1
            continuing = False
            for result in normalize_line(line, f"{name}:{line_number}", path.subscription):
                if not isinstance(result, Rejection):
                    piece.records.append(result)
                elif last and chunk.final_tail:
                    reason = f"unfinished last line of a sealed blob: {result.reason}"
                    piece.rejections.append(replace(result, reason=reason))
                else:
                    piece.rejections.append(result)
        piece.lines, piece.open_line = line_number, chunk.tail
        return piece

    def _commit(self, cursor: Cursor, piece: _Piece, report: BlobReport, blob: _Blob) -> bool:
        """Index a piece, then move the cursor past it; False when another instance moved it.

        A blob that can no longer grow is forwarding's last attempt: what Log Analytics does
        not take then (a revoked role, a wrong rule: what never ends by itself) becomes
        not-forwarded letters for replay, and the archive index goes on. A growing blob's
        piece is read again by the next run instead."""
        source = blob.source
        dead_letter_rejections(
            self._deadletters,
            piece.rejections,
            coordinates_of=lambda rejection: {
                "blob": source.name,
                "line": _line_of(rejection.source),
            },
            path="blob",
        )
        written = self._writer.write_when_free(piece.records)  # durable before the cursor moves
        if self._forwarding is not None:
            # Before the cursor moves: when Log Analytics fails for now this raises, and the
            # next run re-reads the piece and sends what is not marked (see the module's doc).
            run = ForwardRun(self._forwarding, self._deadletters, "blob", blob.final, report)
            run.settle(written)
        events = len(piece.records) + len(piece.rejections)
        cursor.offset, cursor.lines = piece.end, piece.lines
        cursor.open_line, cursor.tail = piece.open_line, piece.tail
        cursor.events += events
        cursor.indexed += len(written.indexed)
        cursor.duplicates += len(written.duplicates)
        cursor.deadlettered += len(piece.rejections)
        report.events += events
        report.deadlettered += len(piece.rejections)
        report.count_written(written)
        if self._cursors.save(cursor):
            return True
        # What we wrote that it also wrote was counted as duplicate by whichever came second.
        theirs = self._cursors.load(cursor.blob, BlobPath.parse(cursor.blob).hour)
        cursor.offset, cursor.lines, cursor.etag = theirs.offset, theirs.lines, theirs.etag
        cursor.open_line, cursor.tail = theirs.open_line, theirs.tail
        cursor.events, cursor.indexed = theirs.events, theirs.indexed
        cursor.duplicates, cursor.deadlettered = theirs.duplicates, theirs.deadlettered
        return False


def _line_of(source: str) -> int | None:
    tail = source.rsplit(":", 1)[-1].split("#", 1)[0]
    return int(tail) if tail.isdigit() else None
