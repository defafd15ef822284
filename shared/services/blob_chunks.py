"""Reading a blob's complete lines by byte ranges, and telling a replaced blob from a grown one.

One ranged GET per chunk (bounded memory), more only for a line longer than a chunk, each of
the blob as its source's last `properties()` saw it (shared.adapters.blobs: BlobChanged when it
changed since). The blob's last line may lack its newline; a blob that is one JSON value
(the pre-2018 `{"records": [...]}` envelope, a pretty-printed array or object) is read whole.
No parsing of events here: that is the indexer's.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from shared.adapters.blobs import BlobState, ByteSource
from shared.adapters.cursors import Cursor

CHUNK_BYTES = 1024 * 1024  # one ranged GET per chunk: bounded memory (two in flight)
# The bytes just before a cursor (the last TAIL_BYTES of what it read last) are remembered as
# a hash and compared when the blob's ETag changes: other bytes there mean the blob was
# replaced, not appended to. One small ranged read per change. Several lines, not the last
# one alone: a new blob can hold that line, the same event, at the same place (found from
# outside: replaced within the second of its creation time, it passed for the old one grown).
TAIL_BYTES = 4096
_LINE_SPACE = b" \t\r"
# One JSON value written once, read whole: the pre-2018 form (one `{"records": [...]}`
# envelope, perhaps pretty-printed), and files put beside the export by hand (`az monitor
# activity-log list` output: a pretty-printed array; a REST `{"value": [...]}` page; one
# event). JSON Lines start the same way but with a first line that is a whole value.
_DOCUMENT_START = re.compile(rb"^(?:\xef\xbb\xbf)?\s*[{\[]")
_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
class Chunk:
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


def read_chunk(
    source: ByteSource, start: int, size: int, chunk_bytes: int, final: bool = False
) -> Chunk:
    """The complete lines after `start`: one ranged read, more only for a longer line.

    The blob's last line may lack its newline: it is complete when it parses as one JSON
    object (JSON Lines cannot be cut into a shorter valid object), or when the blob is
    final; otherwise it waits for the next append.
    """
    if start >= size:
        return Chunk(start, b"", 0)
    data = source.read(start, min(chunk_bytes, size - start))
    chunk = Chunk(start, data, 0, bytes_read=len(data))
    if start == 0 and _DOCUMENT_START.match(data) and not _first_line_complete(data):
        whole = _whole_envelope(source, chunk, size)
        if whole is not None:
            return whole
        if final:
            # Sealed, and not one value the reader takes: read whole as any input is (a
            # broken document is one rejection, an envelope with an element the reader
            # refuses loses that element only, JSON Lines are lines), not as fragments.
            chunk.length, chunk.envelope = len(chunk.data), True
            return chunk
        data = chunk.data
    end = data.rfind(b"\n") + 1
    while end == 0 and start + len(data) < size:
        # One line longer than a chunk (a 2 MB properties object): read on to its end.
        more = source.read(start + len(data), min(chunk_bytes, size - start - len(data)))
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


def _whole_envelope(source: ByteSource, chunk: Chunk, size: int) -> Chunk | None:
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


def tail_of(chunk: Chunk) -> str:
    """The digest of the last TAIL_BYTES of chunk.data[:length] (all of it, if shorter)."""
    return _digest(chunk.data[max(0, chunk.length - TAIL_BYTES) : chunk.length])


def replaced(source: ByteSource, cursor: Cursor, state: BlobState) -> bool:
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
