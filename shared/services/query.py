"""Searching the archive: read the index newest first for a query, page with a token.

A query with a key filter (correlation id, resource, caller, operation, subscription) reads one
lookup partition per month, `{kind}|{YYYYMM}|{value}`; without one it reads the records table's
day partitions. Either way every read is PartitionKey equality plus a RowKey range over
[since, until), and RowKeys are inverted time, so each partition yields newest first and the
partitions are read newest first. What a query is, and its token, is shared.core.query_spec's.

Without `since`, a key lookup searches the whole index: from the oldest day the records table
holds (its first PartitionKey, read in one cheap request). The HTTP API returns one page of at
most MAX_LIMIT per request; the CLI (shared.tools.query_cli) follows continuations.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime, timedelta
from typing import Any

from azure.data.tables import TableClient

from shared.adapters.index_store import IndexReader, UnreadableRecord
from shared.core.keys import (
    RecordKey,
    days_between,
    lookup_partition,
    lookup_value,
    months_between,
    record_row_key,
    row_key_bound,
    time_of_row_key,
)
from shared.core.query_spec import (
    EARLIEST,
    FILTER_OLDEST,
    FILTER_RANGE,
    FILTER_RANGE_CATEGORY,
    FILTER_RESUME,
    FILTER_RESUME_CATEGORY,
    KEY_ORDER,
    MAX_LIMIT,
    ActivityQuery,
    QueryError,
    decode_continuation,
    encode_continuation,
    is_key_lookup,
    matches,
    parse_query,
)
from shared.core.records import NormalizedRecord

# Partitions one page may read: a long, sparse range costs bounded work per request and
# hands back a continuation (possibly with few or no records) instead of running away.
MAX_PARTITIONS_PER_PAGE = 100

# One past "_", the separator after a RowKey's 19-digit time: `{prefix}` + this sorts after
# every RowKey with that time prefix and before every later prefix.
_AFTER_PREFIX = "`"
_DAY = re.compile(r"\d{8}")
_MONTH = re.compile(r"\d{6}")
_LOOKUP_PARTS = 3  # a lookup partition: {kind}|{YYYYMM}|{bucket}


@dataclass(frozen=True)
class QueryPage:
    records: list[NormalizedRecord]
    continuation: str | None  # None when nothing more matches
    # RowKeys of matching rows whose record could not be read back (damaged): named, skipped.
    unreadable: list[str] = dataclass_field(default_factory=list)


def oldest_indexed_day(records: TableClient) -> datetime | None:
    """Midnight (UTC) of the oldest day the records table holds; None when it is empty.

    PartitionKeys are days that sort as text in time order, and Table storage returns entities
    in PartitionKey order, so the first entity is in the oldest day. The iterator follows
    continuations, so pages that come back empty are read past.
    """
    entities = records.query_entities(
        FILTER_OLDEST,
        parameters={"low": "0"},
        select=["PartitionKey", "RowKey"],
        results_per_page=1,
    )
    first = next(iter(entities), None)
    if first is None:
        return None
    try:
        moment = time_of_row_key(str(first["RowKey"]))
    except (ValueError, OverflowError):
        return EARLIEST  # a row not of the index's making: search wider, never narrower
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def read_query(
    params: Mapping[str, str],
    now: datetime,
    records: TableClient,
    *,
    max_limit: int = MAX_LIMIT,
) -> ActivityQuery:
    """parse_query, with the index's oldest day read when a key lookup has no `since`.

    The parameters are checked before anything is read, so a bad query costs no request.
    """
    query = parse_query(params, now, max_limit=max_limit)
    if "since" in params or not is_key_lookup(query):
        return query
    oldest = oldest_indexed_day(records)
    if oldest is None:
        return query
    return parse_query(params, now, oldest_day=oldest, max_limit=max_limit)


# --- reading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Which table to read, which partitions newest first, and how to name their order."""

    table: TableClient
    partitions: list[str]
    from_lookup: bool
    kind: str = ""
    value: str = ""
    # Lookup RowKeys start with the folded value: every range and token carries it.
    prefix: str = ""

    def order_of(self, partition: str) -> str | None:
        """The sortable time part of a partition this plan could read, else None."""
        if not self.from_lookup:
            return partition if _DAY.fullmatch(partition) else None
        parts = partition.split("|", _LOOKUP_PARTS - 1)
        if len(parts) != _LOOKUP_PARTS or not _MONTH.fullmatch(parts[1]):
            return None
        return parts[1] if partition == lookup_partition(self.kind, parts[1], self.value) else None


def _plan(query: ActivityQuery, records: TableClient, lookup: TableClient) -> _Plan:
    # until is exclusive: its own day or month holds nothing when it falls on the boundary.
    newest = query.until - timedelta(microseconds=1)
    for field, kind in KEY_ORDER:
        value: str | None = getattr(query, field)
        if value is not None:
            partitions = [
                lookup_partition(kind, month, value)
                for month in months_between(query.since, newest)
            ]
            return _Plan(
                lookup,
                partitions,
                from_lookup=True,
                kind=kind,
                value=value,
                prefix=lookup_value(value),
            )
    return _Plan(records, days_between(query.since, newest), from_lookup=False)


def _resume_point(plan: _Plan, continuation: str | None) -> tuple[int, str] | None:
    """(index of the partition to read first, RowKey to start after); None: nothing is left."""
    if continuation is None:
        return 0, ""
    partition, after = decode_continuation(continuation)
    if after and not after.startswith(plan.prefix):
        raise QueryError("continuation does not belong to this query")
    order = plan.order_of(partition)
    if order is None or not plan.partitions:
        raise QueryError("continuation does not belong to this query")
    if partition in plan.partitions:
        return plan.partitions.index(partition), after
    # A relative `since` moves on between pages: a token older than the range has nothing left.
    if order < (plan.order_of(plan.partitions[-1]) or ""):
        return None
    raise QueryError("continuation does not belong to this query")


def _rows(
    plan: _Plan,
    query: ActivityQuery,
    partition: str,
    after: str,
    page_size: int,
) -> Iterator[dict[str, Any]]:
    low = plan.prefix + row_key_bound(query.until) + _AFTER_PREFIX  # rows older than until
    high = plan.prefix + row_key_bound(query.since) + _AFTER_PREFIX  # rows at or after since
    parameters: dict[str, str] = {"pk": partition, "high": high}
    # A token's RowKey before the range's start (a hand-made one) must not widen the range.
    if after and after >= low:
        query_filter = FILTER_RESUME_CATEGORY if query.category else FILTER_RESUME
        parameters["after"] = after
    else:
        query_filter = FILTER_RANGE_CATEGORY if query.category else FILTER_RANGE
        parameters["low"] = low
    if query.category:
        parameters["category"] = query.category
    entities = plan.table.query_entities(
        query_filter,
        parameters=parameters,
        results_per_page=page_size,
        # A lookup row is only its keys and category; record rows need every property for
        # the body (inline or blob).
        select=["RowKey"] if plan.from_lookup else None,
    )
    for page in entities.by_page():
        yield from page


def _chunks(
    rows: Iterator[dict[str, Any]], size: Callable[[], int]
) -> Iterator[list[dict[str, Any]]]:
    """Groups of rows, each as large as `size()` says at the time it is taken."""
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size():
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_query(
    query: ActivityQuery,
    *,
    records: TableClient,
    lookup: TableClient,
    reader: IndexReader,
    continuation: str | None = None,
) -> QueryPage:
    """Up to `query.limit` matching records, newest first, and the token for the next page.

    A page that fills up carries a continuation even when nothing follows (the next page is
    then empty, without one); a page cut short by MAX_PARTITIONS_PER_PAGE carries one too.
    """
    plan = _plan(query, records, lookup)
    start = _resume_point(plan, continuation)
    if start is None:
        return QueryPage([], None)
    first, after = start
    found: list[NormalizedRecord] = []
    unreadable: list[str] = []

    def remaining() -> int:
        return query.limit - len(found)

    for index in range(first, len(plan.partitions)):
        partition = plan.partitions[index]
        if index - first >= MAX_PARTITIONS_PER_PAGE:
            return QueryPage(found, encode_continuation(partition, ""), unreadable)
        rows = _rows(plan, query, partition, after, remaining())
        after = ""
        # Bodies are fetched in groups no larger than what the page still needs, so a page
        # reads about `limit` bodies unless the exact filters reject some.
        for chunk in _chunks(rows, remaining):
            if plan.from_lookup:
                keys = [RecordKey.of_row_key(record_row_key(row["RowKey"])) for row in chunk]
                bodies = reader.get_many(keys)
            else:
                bodies = [_body(reader, row) for row in chunk]
            for row, body in zip(chunk, bodies, strict=True):
                if isinstance(body, UnreadableRecord):
                    unreadable.append(body.row_key)
                    continue
                # A lookup row without its record: written before a crash, or its record
                # already past retention. It is simply not there.
                if body is None or not matches(body, query):
                    continue
                found.append(body)
                if remaining() == 0:
                    token = encode_continuation(partition, row["RowKey"])
                    return QueryPage(found, token, unreadable)
    return QueryPage(found, None, unreadable)


def _body(reader: IndexReader, row: dict[str, Any]) -> NormalizedRecord | UnreadableRecord:
    try:
        return reader.body_of(row)
    except UnreadableRecord as error:
        return error
