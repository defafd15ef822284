"""Dead letters: what could not become an indexed record, kept whole with its reason.

One blob per dead letter, named from a hash of its kind, origin and exact bytes, so writing the
same dead letter twice (a redelivered batch) leaves one blob. The blob's JSON shows the input as
text (`raw`); input that is not UTF-8 is also kept exactly (`raw_base64`), and replay uses those
bytes, never the text.

Whoever acts on a letter (a replay; a delivery forwarding a record that has one) claims it
first with a blob lease (`DeadLetterStore.claim`), renewed while the work lasts, and removes the
letter with that lease or releases it. A letter leased elsewhere is left to its holder.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import orjson
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobLeaseClient, ContainerClient

log = logging.getLogger(__name__)

# Kinds of dead letter, which decide what a replay does with them.
REJECTED = "rejected"  # the input can never become a record (not JSON, no time, ...)
UNDELIVERED = "undelivered"  # a whole Event Hub body the index could not take in time
NOT_FORWARDED = "not-forwarded"  # indexed, but Log Analytics refused or was unreachable
INDEX_SOURCE = "index:"  # a not-forwarded letter's source: `index:{EventKey}`

# A claim's lease: long enough for a slow call, short enough that a crashed holder's letter is
# free again within a minute. It is renewed every third of that while the work goes on.
LEASE_SECONDS = 60
RENEW_SECONDS = LEASE_SECONDS / 3
_LEASE_ID_MISSING = "LeaseIdMissing"  # 412: the blob is leased and the call named no lease


@dataclass(frozen=True, slots=True)
class DeadLetter:
    kind: str
    reason: str
    source: str
    raw: str  # text for people; bytes that are not UTF-8 shown as \x escapes
    # Where it came from: Event Hub partition/sequence/offset/enqueued time, or blob and line.
    coordinates: dict[str, Any] = field(default_factory=dict)
    path: str = "eventhub"  # eventhub | blob | cli
    deadlettered_at: str = ""
    name: str = ""
    # The exact bytes when `raw` cannot show them (not UTF-8), as in `records.Rejection`.
    data: bytes = b""

    @property
    def raw_bytes(self) -> bytes:
        """The input exactly as received: what a replay re-drives."""
        return self.data or self.raw.encode("utf-8", "surrogatepass")

    def blob_name(self) -> str:
        if self.kind == NOT_FORWARDED and self.source.startswith(INDEX_SOURCE):
            # One letter a record, whichever path met the refusal: named by its EventKey (the
            # record's JSON can differ by path: a blob's name fills its SubscriptionId).
            return f"index/{NOT_FORWARDED}/{self.source[len(INDEX_SOURCE) :]}.json"
        digest = hashlib.sha256(
            b"\0".join(
                (
                    self.kind.encode("utf-8", "surrogatepass"),
                    self.source.encode("utf-8", "surrogatepass"),
                    self.raw_bytes,
                )
            )
        ).hexdigest()[:40]
        return f"{self.path}/{self.kind}/{digest}.json"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "source": self.source,
            **_stored_raw(self.raw, self.raw_bytes),
            "coordinates": self.coordinates,
            "path": self.path,
            "deadlettered_at": self.deadlettered_at,
        }


def text_and_data(exact: bytes) -> tuple[str, bytes]:
    """`raw` and `data` for a letter of these bytes: the bytes too when the text is not exact."""
    try:
        return exact.decode("utf-8"), b""
    except UnicodeDecodeError:
        return exact.decode("utf-8", "backslashreplace"), exact


def _stored_raw(raw: str, exact: bytes) -> dict[str, str]:
    """`raw` as JSON text, and `raw_base64` whenever that text is not exactly the bytes."""
    try:
        if raw.encode("utf-8") == exact:
            return {"raw": raw}
    except UnicodeEncodeError:  # lone surrogates: JSON text cannot hold them
        raw = exact.decode("utf-8", "backslashreplace")
    return {"raw": raw, "raw_base64": base64.b64encode(exact).decode("ascii")}


class UnreadableLetter(Exception):
    """A blob in the dead-letter container that is not a letter this app can read."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"cannot read dead letter {name}: {reason}")
        self.name = name


class LetterHeld(Exception):
    """Another process holds the letter's lease (HTTP 409): it is at work on the letter."""


class Claim:
    """A dead letter leased to this process: act on it, then `remove` or `release` it."""

    def __init__(self, container: ContainerClient, name: str, lease: BlobLeaseClient) -> None:
        self._container = container
        self.name = name
        self.lease = lease
        self._done = False

    def letter(self) -> DeadLetter | None:
        """The letter as it is now (read under the lease); None if it is gone."""
        return _read(self._container, self.name)

    def renew(self) -> None:
        if self._done:
            return
        try:
            self.lease.renew()
        except AzureError as error:  # the next renewal tries again; the lease may yet hold
            log.warning("could not renew the lease on dead letter %s: %s", self.name, error)

    def remove(self) -> bool:
        """The letter is done with: delete it, with the lease. Whether this claim removed it
        (not: another replay took it over when the lease ran out, and removed it or holds it)."""
        removed = False
        try:
            self._container.delete_blob(self.name, lease=self.lease)
            removed = True
        except ResourceNotFoundError:
            pass
        except HttpResponseError as error:
            if error.status_code != HTTPStatus.PRECONDITION_FAILED:
                raise  # still claimed: released (or expiring) as the work ends
            # The lease was lost (expired) and the letter taken by another: it stays with it,
            # and what this process did is already marked for it to see.
            log.warning("lost the lease on dead letter %s; left to its holder", self.name)
        self._done = True
        return removed

    def release(self) -> None:
        """The letter stays: free it for the next replay now (else the lease expires)."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(AzureError):
            self.lease.release()


class DeadLetterStore:
    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    def put(self, letter: DeadLetter, claim: Claim | None = None) -> str:
        """Write the letter (under `claim`'s lease when this process holds it)."""
        name = letter.blob_name()
        stamped = {**letter.as_dict(), "deadlettered_at": datetime.now(UTC).isoformat()}
        try:
            self._container.upload_blob(
                name, orjson.dumps(stamped), overwrite=True, lease=claim.lease if claim else None
            )
        except HttpResponseError as error:
            if claim is not None or not _lease_missing(error):
                raise
            # The same letter (the name is its content) exists and another process has claimed
            # it to act on it: it stays or goes as that process finds, as this copy would.
            log.info("dead letter %s is claimed elsewhere; left to its holder", name)
        return name

    def list(
        self,
        kind: str | None = None,
        on_unreadable: Callable[[UnreadableLetter], object] | None = None,
    ) -> Iterator[DeadLetter]:
        """Every letter (of one kind); one that cannot be read is handed to `on_unreadable`
        (else logged) and the listing goes on."""
        for name in self.names(kind):
            try:
                letter = self.get(name)
            except UnreadableLetter as error:
                log.warning("%s", error, extra={"letter": name})
                if on_unreadable is not None:
                    on_unreadable(error)
                continue
            if letter is not None and (kind is None or letter.kind == kind):
                yield letter

    def names(self, kind: str | None = None) -> Iterator[str]:
        """Names of the letters (of one kind: it is in the name, `{path}/{kind}/{hash}.json`)."""
        for blob in self._container.list_blobs():
            if kind is None or blob.name.split("/")[-2:-1] == [kind]:
                yield blob.name

    def get(self, name: str) -> DeadLetter | None:
        return _read(self._container, name)

    def claim(self, name: str) -> Claim | None:
        """Lease the letter to this process; None when it is gone (another finished it).

        Raises LetterHeld when another process holds it.
        """
        blob = self._container.get_blob_client(name)
        try:
            lease = blob.acquire_lease(lease_duration=LEASE_SECONDS)
        except ResourceNotFoundError:
            return None
        except ResourceExistsError as error:  # 409 LeaseAlreadyPresent
            raise LetterHeld(name) from error
        return Claim(self._container, name, lease)

    @contextlib.contextmanager
    def holding(self, claims: Collection[Claim]) -> Iterator[None]:
        """Keep the claims' leases while the block runs; release those not removed after it."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(RENEW_SECONDS):
                for claim in claims:
                    claim.renew()

        keeper = threading.Thread(target=renew, name="deadletter-leases", daemon=True)
        if claims:
            keeper.start()
        try:
            yield
        finally:
            stop.set()
            if claims:
                keeper.join()
            for claim in claims:
                claim.release()

    def remove(self, name: str) -> None:
        """Delete a letter nobody holds; one claimed elsewhere is left to its holder."""
        try:
            self._container.delete_blob(name)
        except ResourceNotFoundError:  # another replay removed it already
            pass
        except HttpResponseError as error:
            if not _lease_missing(error):
                raise


def _read(container: ContainerClient, name: str) -> DeadLetter | None:
    """The letter stored under `name`; None when it is gone. UnreadableLetter when the blob is
    not a letter this app wrote (damaged, or put there by hand): that one blob's problem."""
    try:
        stored = container.download_blob(name).readall()
    except ResourceNotFoundError:
        return None
    try:
        data = orjson.loads(stored)
        exact = data.get("raw_base64")
        kind, reason, source, raw = (data[key] for key in ("kind", "reason", "source", "raw"))
        if not all(isinstance(value, str) for value in (kind, reason, source, raw)):
            raise TypeError("kind, reason, source and raw must be strings")
        return DeadLetter(
            kind,
            reason,
            source,
            raw,
            coordinates=dict(data.get("coordinates") or {}),
            path=str(data.get("path", "")),
            deadlettered_at=str(data.get("deadlettered_at", "")),
            name=name,
            data=base64.b64decode(exact, validate=True) if exact else b"",
        )
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise UnreadableLetter(name, f"{type(error).__name__}: {error}") from None


def _lease_missing(error: HttpResponseError) -> bool:
    # Storage's errors carry the service's code; azure-core's type does not declare it.
    code = getattr(error, "error_code", None)
    return error.status_code == HTTPStatus.PRECONDITION_FAILED and code == _LEASE_ID_MISSING
