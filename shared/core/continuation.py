"""A continuation token: where the next page of a query starts. Pure: no I/O.

Opaque to callers: base64 of JSON naming the day to read on from and the last record
returned, sealed with a digest of the query's filters and those fields: a token is refused by
any other query, and when edited by hand. (The digest is not keyed: a forged token is still
held to the query's own range, which bounds every read.)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import date

import orjson

from shared.core.keys import parse_canonical_time
from shared.core.query_spec import MORE_FILTERS, ActivityQuery, QueryError, folded

MAX_CONTINUATION = 2048
_SEALED_FIRST = ("correlation_id", "resource", "caller", "operation", "subscription")
_TOKEN_DAY = re.compile(r"\d{8}", re.ASCII)
_TOKEN_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", re.ASCII)
_TOKEN_KEY = re.compile(r"[0-9a-f]{32}")
_TOKEN_CHECK_BYTES = 12
_TOKEN_PARTS = 4  # a continuation token: [day, TimeGenerated, EventKey, check]


@dataclass(frozen=True, slots=True)
class Continuation:
    """Where the next page starts: `day` and older days, past the last record returned."""

    day: date
    after: tuple[str, str] | None  # (TimeGenerated, EventKey) of that record; None: day's start


def _check(query: ActivityQuery, fields: list[str]) -> str:
    """A digest binding a token's fields to the query's filters (not its range or limit: a
    relative `since` moves between pages, and the CLI's pages differ in size)."""
    filters = [folded(getattr(query, field)) for field in _SEALED_FIRST]
    more = [folded(getattr(query, field)) for field in MORE_FILTERS]
    more = more if any(more) else []  # absent: the material of tokens issued before them
    material = orjson.dumps([*filters, query.category or "", *fields, *more])
    digest = hashlib.sha256(b"activity-query-continuation\x00" + material).digest()
    return base64.urlsafe_b64encode(digest[:_TOKEN_CHECK_BYTES]).decode("ascii")


def encode_continuation(query: ActivityQuery, position: Continuation) -> str:
    day = f"{position.day.year:04d}{position.day.month:02d}{position.day.day:02d}"
    time_generated, event_key = position.after or ("", "")
    fields = [day, time_generated, event_key]
    data = orjson.dumps([*fields, _check(query, fields)])
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _token_fields(token: str) -> list[str] | None:
    if not token or len(token) > MAX_CONTINUATION:
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, TypeError):
        return None
    if not (
        isinstance(data, list)
        and len(data) == _TOKEN_PARTS
        and all(isinstance(part, str) for part in data)
    ):
        return None
    return data


def _token_position(fields: list[str]) -> Continuation | None:
    day_text, time_generated, event_key = fields
    if not _TOKEN_DAY.fullmatch(day_text):
        return None
    try:
        day = date(int(day_text[:4]), int(day_text[4:6]), int(day_text[6:]))
    except ValueError:
        return None
    if not time_generated and not event_key:
        return Continuation(day, None)
    if not (_TOKEN_TIME.fullmatch(time_generated) and _TOKEN_KEY.fullmatch(event_key)):
        return None
    try:
        parse_canonical_time(time_generated)  # a real instant (the seal has no secret)
    except ValueError:
        return None
    return Continuation(day, (time_generated, event_key))


def decode_continuation(token: str, query: ActivityQuery) -> Continuation:
    """A token's position; QueryError if it is not a token issued for this query."""
    fields = _token_fields(token)
    position = _token_position(fields[:3]) if fields is not None else None
    if fields is None or position is None:
        raise QueryError("continuation is not a token this service issued")
    sealed = hmac.compare_digest(fields[3], _check(query, fields[:3]))
    # The last record returned is of the token's day.
    if not sealed or (position.after and position.after[0][:10] != position.day.isoformat()):
        raise QueryError("continuation does not belong to this query")
    return position
