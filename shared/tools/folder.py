"""A local copy of an archive container (the PT1H.json layout on disk), read as blobs are."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from shared.adapters.blobs import BlobState, ByteSource
from shared.services.catchup import in_scope


class LocalFile:
    watched = False  # a local copy: read whole by a backfill, no timer comes back to it

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
        and in_scope(path.relative_to(root).as_posix(), since, until, subscription)
    ]
