"""Indexing PT1H.json append blobs incrementally: each byte read once, none missed.

A cursor per blob (offset, ETag, counts) lives in a table. A run reads the blob from the
cursor by byte range, in chunks of one request each, indexes the complete lines, and moves
the cursor past them with an ETag-conditional write only after they are durably indexed.
An unterminated last line is left for the next run. Two runs on one blob cannot skip (the
cursor only moves past indexed lines) nor double (index rows are keyed by EventKey, and the
loser of a cursor race re-reads the winner's cursor and goes on from there).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, UpdateMode
from azure.storage.blob import ContainerClient

from shared.adapters.deadletters import REJECTED, DeadLetter, DeadLetterStore
from shared.adapters.index_store import IndexWriter, encode_key_value, lag_seconds, larger_lag
from shared.core.decode import decode_line
from shared.core.normalize import normalize, normalize_input
from shared.core.records import NormalizedRecord, Rejection

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024  # one ranged GET per chunk: bounded memory (two in flight), no 412
# The line just before a cursor (its last TAIL_BYTES at most) is remembered as a hash and
# compared when the blob's ETag changes: another line there means the blob was replaced, not
# appended to. One small ranged read per change; a line names its event's time and ids.
TAIL_BYTES = 4096
_LINE_SPACE = b" \t\r"
_PT1H = re.compile(
    r"resourceId=/SUBSCRIPTIONS/(?P<subscription>[^/]+)/y=(?P<y>\d{4})/m=(?P<m>\d{2})/"
    r"d=(?P<d>\d{2})/h=(?P<h>\d{2})/m=00/PT1H\.json$",
    re.IGNORECASE,
)
# The pre-2018 form: the whole blob is one `{"records": [...]}` envelope, written once.
_ENVELOPE_START = re.compile(rb'^(?:\xef\xbb\xbf)?\s*\{\s*"records"\s*:')
_BOM = b"\xef\xbb\xbf"
# The catch-up watermark's place in the cursor table. Letters sort after every YYYYMMDDHH
# cursor partition, so neither a cursor nor retention's "older than" range can reach it.
WATERMARK_PARTITION = "catchup"
WATERMARK_ROW = "watermark"
MAX_CATCHUP_HOURS = 7 * 24


@dataclass(frozen=True, slots=True)
class BlobPath:
    subscription: str
    hour: datetime | None

    @classmethod
    def parse(cls, name: str) -> BlobPath:
        """The subscription and hour a PT1H.json name gives; hour None outside the layout.

        A name shaped like the layout but naming no real hour (`m=02/d=30`, `h=24`) is outside
        it too: that blob is indexed from its content and reported, never an error for others.
        """
        match = _PT1H.search(name)
        if match is None:
            return cls("", None)
        try:
            hour = datetime(
                int(match["y"]), int(match["m"]), int(match["d"]), int(match["h"]), tzinfo=UTC
            )
        except ValueError:
            return cls(match["subscription"].lower(), None)
        return cls(match["subscription"].lower(), hour)


@dataclass(frozen=True, slots=True)
class BlobState:
    """What a blob's properties say now; `created` is None where the store does not say."""

    size: int
    etag: str
    last_modified: datetime
    created: datetime | None = None


class ByteSource(Protocol):
    """An append-only object read by ranges: an archive blob, or a file in a local copy."""

    name: str

    def properties(self) -> BlobState: ...

    def read(self, offset: int, length: int) -> bytes: ...


class ArchiveBlob:
    def __init__(self, container: ContainerClient, name: str) -> None:
        self.name = name
        self._blob = container.get_blob_client(name)

    def properties(self) -> BlobState:
        props = self._blob.get_blob_properties()
        return BlobState(int(props.size), str(props.etag), props.last_modified, props.creation_time)

    def read(self, offset: int, length: int) -> bytes:
        # length ≤ CHUNK_BYTES < the SDK's single-GET size: one request, no ETag lock.
        return self._blob.download_blob(offset=offset, length=length, max_concurrency=1).readall()


class LocalFile:
    def __init__(self, root: Path, path: Path) -> None:
        self.name = path.relative_to(root).as_posix()
        self._path = path

    def properties(self) -> BlobState:
        stat = self._path.stat()
        return BlobState(
            stat.st_size,
            f"{stat.st_size}-{stat.st_mtime_ns}",
            datetime.fromtimestamp(stat.st_mtime, UTC),
        )

    def read(self, offset: int, length: int) -> bytes:
        with self._path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(length)


@dataclass(slots=True)
class _Chunk:
    """Bytes of a blob from `start`: complete lines in data[:length] (or one whole envelope).

    `tail`: data[:length] ends with the blob's last line, which has no newline; it is taken
    because it parses as a complete object, or because the blob is final (`final_tail`).
    """

    start: int
    data: bytes
    length: int
    bytes_read: int = 0
    envelope: bool = False
    tail: bool = False
    final_tail: bool = False

    @property
    def end(self) -> int:
        return self.start + self.length


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


@dataclass(slots=True)
class Cursor:
    """How far a blob is indexed. `offset` is always the end of a complete line."""

    blob: str
    hour: str  # YYYYMMDDHH from the path, or "unknown"
    offset: int = 0
    lines: int = 0
    events: int = 0
    indexed: int = 0
    duplicates: int = 0
    deadlettered: int = 0
    blob_etag: str = ""
    last_growth: datetime | None = None
    sealed: bool = False
    etag: str | None = None  # the cursor entity's own ETag, for the conditional write
    created: datetime | None = None  # the blob's creation time when it was last read
    # `{n}:{hash}` of the n bytes before `offset`: a replaced blob no longer has them there.
    tail: str = ""
    # `offset` ends a last line that had no newline: a newline after it ends no new line.
    open_line: bool = False

    @property
    def partition_key(self) -> str:
        return self.hour

    @property
    def row_key(self) -> str:
        return encode_key_value(self.blob)

    def entity(self) -> dict[str, Any]:
        return {
            "PartitionKey": self.partition_key,
            "RowKey": self.row_key,
            "Blob": self.blob,
            "Offset": self.offset,
            "Lines": self.lines,
            "Events": self.events,
            "Indexed": self.indexed,
            "Duplicates": self.duplicates,
            "DeadLettered": self.deadlettered,
            "BlobEtag": self.blob_etag,
            "LastGrowth": self.last_growth,
            "Sealed": self.sealed,
            "Created": self.created,
            "Tail": self.tail,
            "OpenLine": self.open_line,
        }

    @classmethod
    def from_entity(cls, entity: Any) -> Cursor:
        return cls(
            blob=entity["Blob"],
            hour=entity["PartitionKey"],
            offset=int(entity["Offset"]),
            lines=int(entity["Lines"]),
            events=int(entity["Events"]),
            indexed=int(entity["Indexed"]),
            duplicates=int(entity["Duplicates"]),
            deadlettered=int(entity["DeadLettered"]),
            blob_etag=entity.get("BlobEtag", ""),
            last_growth=entity.get("LastGrowth"),
            sealed=bool(entity.get("Sealed", False)),
            etag=entity.metadata.get("etag") if hasattr(entity, "metadata") else None,
            created=entity.get("Created"),
            tail=entity.get("Tail", ""),
            open_line=bool(entity.get("OpenLine", False)),
        )


def hour_key(hour: datetime | None) -> str:
    # Fixed width for every year 0001-9999 (strftime does not pad years before 1000), so
    # cursor partitions compare as text in time order.
    return f"{hour.year:04d}{hour.month:02d}{hour.day:02d}{hour.hour:02d}" if hour else "unknown"


@dataclass(frozen=True, slots=True)
class Watermark:
    """The hour from which the next catch-up must look; None before the first clean run."""

    hour: datetime | None = None
    etag: str | None = None  # the entity's ETag, for the conditional write; None: not stored


class CursorStore:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    def load(self, blob: str, hour: datetime | None) -> Cursor:
        fresh = Cursor(blob=blob, hour=hour_key(hour))
        try:
            entity = self._table.get_entity(fresh.partition_key, fresh.row_key)
        except ResourceNotFoundError:
            return fresh
        return Cursor.from_entity(entity)

    def save(self, cursor: Cursor) -> bool:
        """Write the cursor if nobody moved it since we read it; False when someone did."""
        metadata = self._write(cursor.entity(), cursor.etag)
        if metadata is None:
            return False
        cursor.etag = metadata.get("etag")
        return True

    def watermark(self) -> Watermark:
        try:
            entity = self._table.get_entity(WATERMARK_PARTITION, WATERMARK_ROW)
        except ResourceNotFoundError:
            return Watermark()
        etag = entity.metadata.get("etag")
        value = entity.get("Hour")
        if not isinstance(value, datetime):
            # Looked at as absent (the recent hours only); the next write replaces it.
            log.error("unreadable catch-up watermark", extra={"watermark": repr(value)})
            return Watermark(None, etag)
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return Watermark(datetime(value.year, value.month, value.day, value.hour, tzinfo=UTC), etag)

    def move_watermark(self, current: Watermark, hour: datetime) -> bool:
        """Set the watermark if nobody moved it since `current` was read; False when someone did."""
        entity = {"PartitionKey": WATERMARK_PARTITION, "RowKey": WATERMARK_ROW, "Hour": hour}
        return self._write(entity, current.etag) is not None

    def _write(self, entity: dict[str, Any], etag: str | None) -> dict[str, Any] | None:
        """Create (etag None) or replace if unchanged; the write's metadata, None on a lost race."""
        try:
            if etag is None:
                metadata = self._table.create_entity(entity)
            else:
                metadata = self._table.update_entity(
                    entity,
                    mode=UpdateMode.REPLACE,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (ResourceExistsError, ResourceModifiedError):
            return None
        except HttpResponseError as error:
            if error.status_code in (409, 412):
                return None
            raise
        return dict(metadata)

    def in_hours(self, hours: list[datetime]) -> Iterator[Cursor]:
        for hour in hours:
            for entity in self._table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": hour_key(hour)}
            ):
                try:
                    yield Cursor.from_entity(entity)
                except (KeyError, TypeError, ValueError):
                    # One damaged cursor fails its own blob (when indexed), not the whole scan.
                    log.error("unreadable cursor", extra={"cursor": entity.get("RowKey")})


@dataclass(slots=True)
class BlobReport:
    blobs: int = 0
    events: int = 0
    indexed: int = 0
    duplicates: int = 0
    deadlettered: int = 0
    bytes_read: int = 0
    failed: list[str] = field(default_factory=list)
    # Blobs whose name is not a PT1H.json hour (indexed from their content all the same).
    outside_layout: list[str] = field(default_factory=list)
    # Blobs that had bytes past their cursor when this run looked (before indexing them).
    behind: int = 0
    # Now minus the oldest TimeGenerated among the records indexed (not the duplicates), taken
    # when each piece's write returned, the largest over the run; None when nothing was indexed.
    lag_seconds: float | None = None

    def add(self, other: BlobReport) -> None:
        self.blobs += other.blobs
        self.events += other.events
        self.indexed += other.indexed
        self.duplicates += other.duplicates
        self.deadlettered += other.deadlettered
        self.bytes_read += other.bytes_read
        self.failed.extend(other.failed)
        self.outside_layout.extend(other.outside_layout)
        self.behind += other.behind
        self.lag_seconds = larger_lag(self.lag_seconds, other.lag_seconds)

    def as_dict(self) -> dict[str, Any]:
        return {
            "blobs": self.blobs,
            "events": self.events,
            "indexed": self.indexed,
            "duplicates": self.duplicates,
            "deadlettered": self.deadlettered,
            "bytes_read": self.bytes_read,
            "failed": self.failed,
            "outside_layout": self.outside_layout,
            "behind": self.behind,
            "lag_seconds": self.lag_seconds,
        }


class BlobIndexer:
    def __init__(
        self,
        writer: IndexWriter,
        cursors: CursorStore,
        deadletters: DeadLetterStore,
        *,
        chunk_bytes: int = CHUNK_BYTES,
        seal_after: timedelta = timedelta(hours=2),
    ) -> None:
        self._writer = writer
        self._cursors = cursors
        self._deadletters = deadletters
        self._chunk_bytes = chunk_bytes
        self._seal_after = seal_after

    def index(self, source: ByteSource, now: datetime | None = None) -> BlobReport:
        """Index what is new in one blob since its cursor."""
        now = now or datetime.now(UTC)
        path = BlobPath.parse(source.name)
        report = BlobReport(blobs=1)
        if path.hour is None:
            log.warning(
                "blob outside the PT1H.json layout, indexed from its content",
                extra={"blob": source.name},
            )
            report.outside_layout.append(source.name)
        cursor = self._cursors.load(source.name, path.hour)
        state = source.properties()
        if _replaced(source, cursor, state):
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
            self._index_from_cursor(source, path, cursor, state.size, report, final)
        cursor.sealed = final and cursor.offset >= state.size
        if cursor.sealed or cursor.etag is None or (changed and cursor.offset >= state.size):
            self._cursors.save(cursor)
        return report

    def _is_final(self, path: BlobPath, state: BlobState, now: datetime) -> bool:
        """Whether the blob can no longer grow: its hour is over and it has been still since.

        A name outside the layout has no hour: its own stillness decides.
        """
        if now < state.last_modified + self._seal_after:
            return False
        return path.hour is None or now >= path.hour + timedelta(hours=1) + self._seal_after

    def _index_from_cursor(
        self,
        source: ByteSource,
        path: BlobPath,
        cursor: Cursor,
        size: int,
        report: BlobReport,
        final: bool,
    ) -> None:
        """Index piece by piece; the next piece is downloaded while this one is normalized and
        written. Only its bytes are read ahead, not its records: parsed records take several
        times their bytes, and holding two pieces of them would double the peak for nothing
        (normalizing is fast next to the table writes)."""
        chunk = self._read(source, cursor.offset, size, final)
        report.bytes_read += chunk.bytes_read
        ahead = (
            ThreadPoolExecutor(max_workers=1) if size - cursor.offset > self._chunk_bytes else None
        )
        try:
            while chunk.end > chunk.start:
                upcoming = None
                if ahead is not None and chunk.end < size:
                    upcoming = ahead.submit(self._read, source, chunk.end, size, final)
                piece = self._parse(chunk, path, source.name, cursor)
                del chunk  # its bytes are records now
                moved = self._commit(cursor, piece, report, source)
                del piece  # gone before the next is parsed: one piece of records at a time
                if upcoming is not None:
                    chunk = upcoming.result()
                    report.bytes_read += chunk.bytes_read
                    if moved:
                        continue
                elif moved or cursor.offset >= size:
                    return
                # Lost a race for the cursor: go on from where the other instance got to.
                chunk = self._read(source, cursor.offset, size, final)
                report.bytes_read += chunk.bytes_read
        finally:
            if ahead is not None:
                ahead.shutdown()

    def _read(self, source: ByteSource, start: int, size: int, final: bool = False) -> _Chunk:
        """The complete lines after `start`: one ranged read, more only for a longer line.

        The blob's last line may lack its newline: it is complete when it parses as one JSON
        object (JSON Lines cannot be cut into a shorter valid object), or when the blob is
        final; otherwise it waits for the next append.
        """
        if start >= size:
            return _Chunk(start, b"", 0)
        data = source.read(start, min(self._chunk_bytes, size - start))
        chunk = _Chunk(start, data, 0, bytes_read=len(data))
        if start == 0 and _ENVELOPE_START.match(data) and not _first_line_complete(data):
            whole = self._whole_envelope(source, chunk, size)
            if whole is not None:
                return whole
            data = chunk.data
        end = data.rfind(b"\n") + 1
        while end == 0 and start + len(data) < size:
            # One line longer than a chunk (a 2 MB properties object): read on to its end.
            more = source.read(start + len(data), min(self._chunk_bytes, size - start - len(data)))
            chunk.bytes_read += len(more)
            found = more.rfind(b"\n")
            data += more
            if found >= 0:
                end = len(data) - len(more) + found + 1
        chunk.data, chunk.length = data, end
        if start + len(data) >= size and end < len(data):
            rest = data[end:]
            if final or _complete_object(rest):
                chunk.length, chunk.tail = len(data), True
                chunk.final_tail = not _complete_object(rest)
        return chunk

    def _whole_envelope(self, source: ByteSource, chunk: _Chunk, size: int) -> _Chunk | None:
        """The pre-2018 form: the whole blob is one JSON value (perhaps pretty-printed).

        Read whole; when it is not one value (a first line still being written), None, and
        `chunk.data` holds what was read for the line-by-line path.
        """
        data = chunk.data
        if size > len(data):
            rest = source.read(len(data), size - len(data))
            chunk.bytes_read += len(rest)
            data += rest
        chunk.data = data
        try:
            orjson.loads(data[3:] if data.startswith(_BOM) else data)
        except orjson.JSONDecodeError:
            return None
        chunk.length, chunk.envelope = len(data), True
        return chunk

    def _parse(self, chunk: _Chunk, path: BlobPath, name: str, cursor: Cursor) -> _Piece:
        """Normalize a chunk's lines (numbered on from the cursor's). No I/O."""
        piece = _Piece(chunk.start, chunk.end, cursor.lines)
        piece.tail = _tail_of(chunk)
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
            for result in _line_results(line, f"{name}:{line_number}", path.subscription):
                if not isinstance(result, Rejection):
                    piece.records.append(result)
                elif last and chunk.final_tail:
                    reason = f"unfinished last line of a sealed blob: {result.reason}"
                    piece.rejections.append(replace(result, reason=reason))
                else:
                    piece.rejections.append(result)
        piece.lines, piece.open_line = line_number, chunk.tail
        return piece

    def _commit(
        self, cursor: Cursor, piece: _Piece, report: BlobReport, source: ByteSource
    ) -> bool:
        """Index a piece, then move the cursor past it; False when another instance moved it."""
        for rejection in piece.rejections:
            self._deadletters.put(
                DeadLetter(
                    kind=REJECTED,
                    reason=rejection.reason,
                    source=rejection.source,
                    raw=rejection.raw,
                    coordinates={"blob": source.name, "line": _line_of(rejection.source)},
                    path="blob",
                    data=rejection.data,
                )
            )
        written = self._writer.write(piece.records)  # durable before the cursor moves past them
        events = len(piece.records) + len(piece.rejections)
        cursor.offset, cursor.lines = piece.end, piece.lines
        cursor.open_line, cursor.tail = piece.open_line, piece.tail
        cursor.events += events
        cursor.indexed += len(written.indexed)
        cursor.duplicates += len(written.duplicates)
        cursor.deadlettered += len(piece.rejections)
        report.events += events
        report.indexed += len(written.indexed)
        report.duplicates += len(written.duplicates)
        report.deadlettered += len(piece.rejections)
        report.lag_seconds = larger_lag(
            report.lag_seconds, lag_seconds(written.indexed, datetime.now(UTC))
        )
        if self._cursors.save(cursor):
            return True
        # What we wrote that it also wrote was counted as duplicate by whichever came second.
        theirs = self._cursors.load(cursor.blob, BlobPath.parse(cursor.blob).hour)
        cursor.offset, cursor.lines, cursor.etag = theirs.offset, theirs.lines, theirs.etag
        cursor.open_line, cursor.tail = theirs.open_line, theirs.tail
        cursor.events, cursor.indexed = theirs.events, theirs.indexed
        cursor.duplicates, cursor.deadlettered = theirs.duplicates, theirs.deadlettered
        return False


def _line_results(
    line: bytes, source: str, subscription: str
) -> Iterator[NormalizedRecord | Rejection]:
    for item in decode_line(line, source):
        if isinstance(item, Rejection):
            yield item
        else:
            yield normalize(
                item.event, source=item.source, raw=item, fallback_subscription=subscription
            )


def _first_line_complete(data: bytes) -> bool:
    """Whether the first line is one whole JSON value with its newline: JSON Lines for sure."""
    newline = data.find(b"\n")
    if newline < 0:
        return False
    try:
        orjson.loads(data[3:newline] if data.startswith(_BOM) else data[:newline])
    except orjson.JSONDecodeError:
        return False
    return True


def _complete_object(text: bytes) -> bool:
    """A last line without its newline that is one whole JSON object: it is complete."""
    stripped = text.strip(_LINE_SPACE)
    if not stripped.endswith(b"}"):
        return False
    try:
        return isinstance(orjson.loads(stripped), dict)
    except orjson.JSONDecodeError:
        return False


def _digest(data: bytes) -> str:
    return f"{len(data)}:{hashlib.sha256(data).hexdigest()[:32]}"


def _tail_of(chunk: _Chunk) -> str:
    """The digest of the last line of chunk.data[:length] (its last TAIL_BYTES at most)."""
    window = chunk.data[max(0, chunk.length - TAIL_BYTES) : chunk.length]
    cut = window.rfind(b"\n", 0, len(window) - 1)
    return _digest(window[cut + 1 :] if cut >= 0 else window)


def _replaced(source: ByteSource, cursor: Cursor, state: BlobState) -> bool:
    """Whether the blob under this name is no longer the one the cursor indexed.

    Append blobs only grow and keep their creation time. A blob shorter than the cursor, with
    another creation time, or without the bytes the cursor saw before its offset, was replaced
    (deleted and written anew, or overwritten), whatever its new size.
    """
    if cursor.offset == 0:
        return False
    if state.size < cursor.offset:
        return True
    if cursor.blob_etag == state.etag:
        return False
    if (
        cursor.created is not None
        and state.created is not None
        and _utc(cursor.created) != _utc(state.created)
    ):
        return True
    length_text, _, _ = cursor.tail.partition(":")
    if not length_text.isdigit():
        return False
    length = int(length_text)
    return _digest(source.read(cursor.offset - length, length)) != cursor.tail


def _utc(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return datetime(*moment.timetuple()[:6], moment.microsecond, tzinfo=UTC)


def _line_of(source: str) -> int | None:
    tail = source.rsplit(":", 1)[-1].split("#", 1)[0]
    return int(tail) if tail.isdigit() else None


def hours_back(now: datetime, count: int) -> list[datetime]:
    """The current hour and the `count` before it, newest first."""
    top = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [top - timedelta(hours=back) for back in range(count + 1)]


def hour_prefix(subscription_prefix: str, hour: datetime) -> str:
    return f"{subscription_prefix}y={hour.year:04d}/m={hour:%m}/d={hour:%d}/h={hour:%H}/"


def index_each(
    indexer: BlobIndexer,
    sources: Iterator[ByteSource] | list[ByteSource],
    *,
    parallelism: int = 1,
    on_done: Any = None,
) -> BlobReport:
    """Index every source; one that fails is reported and logged, never stalls the others."""
    total = BlobReport()

    def one(source: ByteSource) -> BlobReport:
        try:
            return indexer.index(source)
        except Exception:
            log.exception(
                "indexing a blob failed; the next run retries it", extra={"blob": source.name}
            )
            return BlobReport(blobs=1, failed=[source.name])

    if parallelism <= 1:
        results: Iterator[BlobReport] = map(one, sources)
    else:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=parallelism)
        results = pool.map(one, sources)
    for result in results:
        total.add(result)
        if on_done is not None:
            on_done(result)
    if parallelism > 1:
        pool.shutdown()
    return total


def catch_up(
    indexer: BlobIndexer,
    container: ContainerClient,
    cursors: CursorStore,
    *,
    now: datetime,
    hours: int,
    max_hours: int = MAX_CATCHUP_HOURS,
) -> BlobReport:
    """Index the new bytes of every unsealed blob of the recent hours, and of hours missed.

    The recent hours are `hours_back(now, hours)`; older blobs no longer grow. A watermark in
    the cursor table marks the hour before which every blob was indexed whole by a run with
    no failure. When it is older than the recent hours (an outage), this run also covers the
    `max_hours` hours from it, oldest first, then moves it to where that coverage ends (at
    most the start of the recent hours), never past the hour of a blob that failed. So each
    hour is either behind the watermark and done, or at or after it and listed again.
    """
    if max_hours < 1:
        raise ValueError("max_hours must be at least 1, or a backlog never shrinks")
    recent = hours_back(now, hours)
    start = recent[-1]
    mark = cursors.watermark()
    covered_to = start  # the watermark this run earns if no blob fails
    backlog: list[datetime] = []
    if mark.hour is not None and mark.hour < start:
        covered_to = min(start, mark.hour + timedelta(hours=max_hours))
        backlog = [
            mark.hour + timedelta(hours=back)
            for back in range((covered_to - mark.hour) // timedelta(hours=1))
        ]
    # The recent hours first, as ever: a backlog does not delay what is being written now.
    listed = recent + backlog
    sealed = {cursor.blob for cursor in cursors.in_hours(listed) if cursor.sealed}
    subscriptions = [
        prefix.name
        for prefix in container.walk_blobs(
            name_starts_with="resourceId=/SUBSCRIPTIONS/", delimiter="/"
        )
        if prefix.name.endswith("/")
    ]
    hour_of = {
        blob.name: hour
        for subscription in subscriptions
        for hour in listed
        for blob in container.list_blobs(name_starts_with=hour_prefix(subscription, hour))
        if blob.name.endswith("PT1H.json") and blob.name not in sealed
    }
    report = index_each(indexer, [ArchiveBlob(container, name) for name in hour_of])
    if mark.hour is not None:
        covered_to = max(covered_to, mark.hour)  # no failure: no reason to look again
    if report.failed:
        # The next runs must list the failed blob's hour until it is indexed. This moves the
        # watermark back if it was ahead of these recent hours (set by a later clock): safe.
        covered_to = min(covered_to, *(hour_of[name] for name in report.failed))
    if covered_to != mark.hour:
        try:
            # A lost race is fine: the other run started from the same watermark as ours.
            cursors.move_watermark(mark, covered_to)
        except AzureError:
            # The hours it would have freed are listed again next run: wasteful, not wrong.
            log.warning("could not move the catch-up watermark", exc_info=True)
    return report


def _in_scope(
    name: str, since: datetime | None, until: datetime | None, subscription: str | None
) -> bool:
    path = BlobPath.parse(name)
    if subscription and path.subscription != subscription.lower():
        return False
    if path.hour is None:
        # No hour to place it by: only an unbounded run takes it (and reports it).
        return since is None and until is None
    if since and path.hour + timedelta(hours=1) <= since:
        return False
    return not (until and path.hour >= until)


def container_sources(
    container: ContainerClient,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    subscription: str | None = None,
) -> list[ByteSource]:
    return [
        ArchiveBlob(container, blob.name)
        for blob in container.list_blobs()
        if _in_scope(blob.name, since, until, subscription)
    ]


def folder_sources(
    root: Path,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    subscription: str | None = None,
) -> list[ByteSource]:
    return [
        LocalFile(root, path)
        for path in sorted(root.rglob("*"))
        if path.is_file()
        and _in_scope(path.relative_to(root).as_posix(), since, until, subscription)
    ]
