"""Forward normalized records to a Log Analytics custom table through the Logs Ingestion API.

The forwarder does its own chunking so that it knows which records each HTTP call carried:
it serializes every record once with orjson, packs them into JSON arrays under the 1 MB call
limit, gzips each array and hands the bytes to `LogsIngestionClient.upload` as a stream, which
the SDK sends as-is in exactly one call. (Given a list, the SDK would re-serialize it with
`json.dumps`, whose output is larger than orjson's for non-ASCII text, and re-split it.)

Retries of throttling (429, honouring Retry-After), 408, 500/502/503/504 and connection errors
belong to azure-core's retry policy on the client (see `build_client`); what is left when that
policy gives up is raised as `TransientForwardError`.
"""

from __future__ import annotations

import gzip
import io
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, NamedTuple

import orjson
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.core.rest import HttpRequest, HttpResponse
from azure.monitor.ingestion import LogsIngestionClient

from shared.core.records import NormalizedRecord

log = logging.getLogger(__name__)

# "1 MB per call" (Learn, Azure Monitor service limits), read as 1,000,000 bytes: the stricter of
# MB and MiB. It applies to the compressed and the uncompressed body alike.
MAX_CALL_BYTES = 1_000_000
# Records are packed up to this size; a single record larger than it still goes alone, up to
# MAX_CALL_BYTES. The headroom covers any difference in how the service counts the body.
CHUNK_TARGET_BYTES = 950_000

# Statuses that say nothing about the records: who we are (401, 403: e.g. a role assignment not
# yet propagated), where we send (404: rule or stream), or that the service is busy (408, 429).
# Rejecting the records for them would dead-letter every record; the caller retries instead.
_NOT_ABOUT_THE_RECORDS = frozenset({401, 403, 404, 408, 429})
_CALL_TOO_LARGE = 413

# azure-core retries a POST only on 500/503/504 or when the response carries Retry-After; it
# leaves out 408, 429 without Retry-After, 502 and connection errors. Re-sending a chunk is safe
# here (a duplicate row can be told apart by EventKey), so POST is made retryable like a GET.
_RETRYABLE_METHODS = frozenset({"POST"})
# Transport timeouts (seconds): without them a hung connection waits 300 s per attempt.
_CONNECTION_TIMEOUT = 10
_READ_TIMEOUT = 60


class TransientForwardError(Exception):
    """The upload could not be completed now: 5xx, 429, 408, 401/403/404 or a connection error
    that remained after the client's own retries. The caller lets the invocation fail so that
    its retry policy re-drives it.

    `forwarded_so_far` lists the EventKeys that earlier calls of the same `forward` delivered
    (do not resend them); `rejected_so_far` the records already found unsendable (a re-drive
    would reject them again).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        forwarded_so_far: list[str],
        rejected_so_far: list[tuple[NormalizedRecord, str]],
    ) -> None:
        super().__init__(message)
        self.status = status
        self.forwarded_so_far = forwarded_so_far
        self.rejected_so_far = rejected_so_far


@dataclass
class ForwardResult:
    """EventKeys that Log Analytics accepted, and records that can never be sent, with why."""

    forwarded: list[str] = field(default_factory=list)
    rejected: list[tuple[NormalizedRecord, str]] = field(default_factory=list)


class _IngestionRetryPolicy(RetryPolicy[HttpRequest, HttpResponse]):
    """azure-core's RetryPolicy (backoff, Retry-After, counters), with POST made retryable
    and Retry-After honoured up to a cap: azure-core sleeps whatever the header asks, and a
    429 asking for 15 minutes, five times, would hold an invocation far past host.json's
    10-minute functionTimeout before its last attempt could dead-letter anything."""

    def __init__(self, *, retry_after_max: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._retry_after_max = retry_after_max

    def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
        options.setdefault("retry_on_methods", _RETRYABLE_METHODS)
        return super().configure_retries(options)

    def get_retry_after(self, response: PipelineResponse[Any, Any]) -> float | None:
        asked = super().get_retry_after(response)
        return None if asked is None else min(asked, self._retry_after_max)


def build_client(  # noqa: PLR0913 - the endpoint, its credential, then the retry knobs by name
    endpoint: str,
    credential: TokenCredential,
    *,
    retry_total: int = 5,
    retry_backoff_factor: float = 0.8,
    retry_backoff_max: float = 30,
    retry_after_max: float = 30,
) -> LogsIngestionClient:
    """A LogsIngestionClient whose pipeline retries each call up to `retry_total` times.

    A response with Retry-After (the service's 429) waits that long, up to `retry_after_max`
    (five retries then wait 150 s at most); otherwise the wait is 0 before the first retry,
    then `retry_backoff_factor * 2 ** (n - 1)` s before retry n, capped at
    `retry_backoff_max`.
    """
    retry_policy = _IngestionRetryPolicy(
        retry_after_max=retry_after_max,
        retry_total=retry_total,
        # azure-core caps each kind of retry separately (3 by default); keep one number.
        retry_connect=retry_total,
        retry_read=retry_total,
        retry_status=retry_total,
        retry_backoff_factor=retry_backoff_factor,
        retry_backoff_max=retry_backoff_max,
    )
    return LogsIngestionClient(
        endpoint=endpoint,
        credential=credential,
        retry_policy=retry_policy,
        connection_timeout=_CONNECTION_TIMEOUT,
        read_timeout=_READ_TIMEOUT,
    )


class _Encoded(NamedTuple):
    record: NormalizedRecord
    event_key: str
    json: bytes


class LogAnalyticsForwarder:
    """Sends records to one DCR stream, one HTTP call per chunk, and reports each record's fate."""

    def __init__(
        self,
        client: LogsIngestionClient,
        rule_id: str,
        stream_name: str,
        *,
        enforce_https: bool = True,
    ) -> None:
        self._client = client
        self._rule_id = rule_id
        self._stream_name = stream_name
        self._enforce_https = enforce_https

    def forward(
        self,
        records: Sequence[NormalizedRecord],
        accepted: Callable[[list[str]], None] | None = None,
        before_call: Callable[[], None] | None = None,
    ) -> ForwardResult:
        """Upload `records`; raise TransientForwardError if a call fails for a passing reason.

        `accepted` is told the EventKeys of each call Log Analytics took, as it returns (so a
        worker that dies at a later call has the earlier ones marked); `before_call` runs
        before each call (a lock's renewal: what it raises stops the upload there)."""
        result = ForwardResult()
        encoded: list[_Encoded] = []
        for record in records:
            try:
                body = orjson.dumps(record)
            except orjson.JSONEncodeError as error:
                result.rejected.append((record, f"record is not JSON-serializable: {error}"))
                continue
            if len(body) + 2 > MAX_CALL_BYTES:  # +2: the array's brackets
                reason = (
                    f"record JSON is {len(body)} bytes; one Logs Ingestion call is limited to "
                    f"{MAX_CALL_BYTES} bytes"
                )
                result.rejected.append((record, reason))
                continue
            encoded.append(_Encoded(record, str(record["EventKey"]), body))

        calls = 0
        for chunk in _chunks(encoded):
            before = len(result.forwarded)
            if before_call is not None:
                before_call()
            try:
                calls += self._send(chunk, result)
            finally:  # a call taken, then a transient failure of its split half: told too
                if accepted is not None and len(result.forwarded) > before:
                    accepted(result.forwarded[before:])
        log.info(
            "forwarded %d records in %d calls; %d rejected",
            len(result.forwarded),
            calls,
            len(result.rejected),
        )
        return result

    def _send(self, chunk: list[_Encoded], result: ForwardResult) -> int:
        """One upload call for `chunk` (more if the service answers 413); returns the calls made."""
        try:
            self._client.upload(
                rule_id=self._rule_id,
                stream_name=self._stream_name,
                logs=_payload(chunk),
                enforce_https=self._enforce_https,
            )
        except HttpResponseError as error:
            status = error.status_code
            if status == _CALL_TOO_LARGE and len(chunk) > 1:
                half = len(chunk) // 2
                log.info("call of %d records refused as too large; splitting it", len(chunk))
                return 1 + self._send(chunk[:half], result) + self._send(chunk[half:], result)
            about_records = status not in _NOT_ABOUT_THE_RECORDS
            if status is not None and _is_client_error(status) and about_records:
                reason = _describe(error)
                result.rejected.extend((item.record, reason) for item in chunk)
                log.warning(
                    "Log Analytics refused a call of %d records: HTTP %d", len(chunk), status
                )
                return 1
            raise self._transient(error, status, result) from error
        except AzureError as error:
            raise self._transient(error, None, result) from error
        result.forwarded.extend(item.event_key for item in chunk)
        return 1

    @staticmethod
    def _transient(
        error: AzureError, status: int | None, result: ForwardResult
    ) -> TransientForwardError:
        cause = f"HTTP {status}" if status is not None else type(error).__name__
        log.warning(
            "Log Analytics upload failed (%s) after retries; %d records delivered before",
            cause,
            len(result.forwarded),
        )
        return TransientForwardError(
            f"Log Analytics upload failed after retries: {cause}: {_first_line(error)}",
            status=status,
            forwarded_so_far=list(result.forwarded),
            rejected_so_far=list(result.rejected),
        )


def _chunks(encoded: list[_Encoded]) -> Iterator[list[_Encoded]]:
    """Greedy packing in input order; sizes are exact: '[' + ','.join(records) + ']'."""
    chunk: list[_Encoded] = []
    size = 2
    for item in encoded:
        added = len(item.json) + (1 if chunk else 0)
        if chunk and size + added > CHUNK_TARGET_BYTES:
            yield chunk
            chunk, size, added = [], 2, len(item.json)
        chunk.append(item)
        size += added
    if chunk:
        yield chunk


def _payload(chunk: list[_Encoded]) -> io.BytesIO:
    # A seekable stream: the SDK uploads it as-is (gzip is detected by its magic number) and
    # azure-core rewinds it for each retry.
    body = b"[" + b",".join(item.json for item in chunk) + b"]"
    compressed = gzip.compress(body, compresslevel=6)
    # Incompressible data grows by gzip's framing; a record near the limit goes uncompressed.
    return io.BytesIO(compressed if len(compressed) < len(body) else body)


def _describe(error: HttpResponseError) -> str:
    """HTTP status and the service's error code and message: no request content."""
    text = f"HTTP {error.status_code}"
    if error.reason:
        text += f" {error.reason}"
    if error.error is not None and (error.error.code or error.error.message):
        return f"{text}: {error.error.code}: {error.error.message}"
    if error.response is not None:
        try:
            body = error.response.text().strip()
        except (ValueError, AzureError):  # undecodable or unread: it adds nothing to the reason
            body = ""
        if body:
            return f"{text}: {body[:500]}"
    return text


def _first_line(error: AzureError) -> str:
    message = str(error.message or error).strip()
    return message.splitlines()[0] if message else ""


def _is_client_error(status: int) -> bool:
    """A 4xx answer: about the request itself, not the service's state."""
    return HTTPStatus.BAD_REQUEST <= status < HTTPStatus.INTERNAL_SERVER_ERROR
