"""Dead letters: what could not become an indexed record, kept whole with its reason.

One blob per dead letter, named from a hash of its origin and raw text, so writing the same
dead letter twice (a redelivered batch) leaves one blob.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

# Kinds of dead letter, which decide what a replay does with them.
REJECTED = "rejected"  # the input can never become a record (not JSON, no time, ...)
UNDELIVERED = "undelivered"  # a whole Event Hub body the index could not take in time
NOT_FORWARDED = "not-forwarded"  # indexed, but Log Analytics refused or was unreachable


@dataclass(frozen=True, slots=True)
class DeadLetter:
    kind: str
    reason: str
    source: str
    raw: str
    # Where it came from: Event Hub partition/sequence/offset/enqueued time, or blob and line.
    coordinates: dict[str, Any] = field(default_factory=dict)
    path: str = "eventhub"  # eventhub | blob | cli
    deadlettered_at: str = ""
    name: str = ""

    def blob_name(self) -> str:
        digest = hashlib.sha256(
            b"\0".join(
                part.encode("utf-8", "surrogatepass") for part in (self.kind, self.source, self.raw)
            )
        ).hexdigest()[:40]
        return f"{self.path}/{self.kind}/{digest}.json"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "source": self.source,
            "raw": self.raw,
            "coordinates": self.coordinates,
            "path": self.path,
            "deadlettered_at": self.deadlettered_at,
        }


class DeadLetterStore:
    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    def put(self, letter: DeadLetter) -> str:
        name = letter.blob_name()
        stamped = {**letter.as_dict(), "deadlettered_at": datetime.now(UTC).isoformat()}
        self._container.upload_blob(name, orjson.dumps(stamped), overwrite=True)
        return name

    def list(self, kind: str | None = None) -> Iterator[DeadLetter]:
        for blob in self._container.list_blobs():
            letter = self.get(blob.name)
            if letter is not None and (kind is None or letter.kind == kind):
                yield letter

    def get(self, name: str) -> DeadLetter | None:
        try:
            data = orjson.loads(self._container.download_blob(name).readall())
        except ResourceNotFoundError:
            return None
        return DeadLetter(
            kind=data["kind"],
            reason=data["reason"],
            source=data["source"],
            raw=data["raw"],
            coordinates=data.get("coordinates", {}),
            path=data.get("path", ""),
            deadlettered_at=data.get("deadlettered_at", ""),
            name=name,
        )

    def remove(self, name: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):  # another replay removed it already
            self._container.delete_blob(name)
