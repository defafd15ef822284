"""The CLI's `query` verb: pages through the index and writes JSON lines, CSV or a table.

Standard output holds only the records, written page by page as they come (memory stays flat
whatever the result's size); progress, how far a bounded page searched, an empty result's
searched range and a limit that cut the result short go to standard error. The CLI's `limit`
is the total wanted: it follows continuations in pages of at most CLI_PAGE records.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NamedTuple, TextIO

import orjson

from shared.adapters.index_tables import IndexTables
from shared.bootstrap import Runtime
from shared.core.export import csv_header, csv_rows
from shared.core.query_spec import (
    CONTROL,
    DEFAULT_SPAN,
    MAX_TOTAL,
    PARAMETERS,
    ActivityQuery,
    ClampedRange,
    QueryError,
    is_key_lookup,
    parse_query,
)
from shared.core.records import NormalizedRecord
from shared.services.postings_read import DamagedIndex
from shared.services.query import ScanBudget, oldest_indexed_day, read_query, run_query

# --- output ----------------------------------------------------------------------------

TABLE_COLUMNS: tuple[tuple[str, str, int], ...] = (
    # (heading, record column, width)
    ("TIME", "TimeGenerated", 19),
    ("CATEGORY", "CategoryValue", 14),
    ("STATUS", "ActivityStatusValue", 10),
    ("OPERATION", "OperationNameValue", 48),
    ("CALLER", "Caller", 32),
    ("RESOURCE", "ResourceId", 80),
)


def _cell(value: Any, width: int) -> str:
    # Log text goes to a terminal: control characters (escape sequences) are neutralised.
    text = CONTROL.sub("?", str(value if value is not None else ""))
    return text if len(text) <= width else text[: width - 1] + "…"


def table_header() -> str:
    return "  ".join(heading.ljust(width) for heading, _, width in TABLE_COLUMNS).rstrip() + "\n"


def table_row(record: NormalizedRecord) -> str:
    cells = []
    for _, column, width in TABLE_COLUMNS:
        value = record.get(column)
        if column == "TimeGenerated" and isinstance(value, str):
            value = value[:19].replace("T", " ")  # to the second, in UTC
        cells.append(_cell(value, width).ljust(width))
    return "  ".join(cells).rstrip() + "\n"


def format_table(records: Sequence[NormalizedRecord]) -> str:
    """Records as aligned, truncated columns for people; one line per record, header first."""
    return table_header() + "".join(table_row(record) for record in records)


# --- the CLI verb ----------------------------------------------------------------------

PROGRESS_EVERY = 1.0  # seconds between progress lines
# Records a page of the CLI's: each page starts its walk of the index anew (re-reading the
# day and the blob it stopped in), so an export of 100,000 records is 16% faster in pages of
# 2,500 than of the API's 1,000, for 35 MB more memory; pages of 5,000 save 5% more for 50 MB
# more (measured: bench.bench_api's export, 2026-12-06). Memory stays flat in the result.
CLI_PAGE = 2_500
_FLAGS = {name: "--" + name.replace("_", "-") for name in PARAMETERS}
# After --limit records: whether one more matches, looked for with little work (else "may").
_MORE_BUDGET = ScanBudget(records=10_000, seconds=2.0)


class _Progress:
    """`• N records so far…` on standard error while a query takes more than one page."""

    def __init__(self, err: TextIO) -> None:
        self._err = err
        self._shown_at: float | None = None

    def more_pages(self, written: int, reached: str | None) -> None:
        now = time.monotonic()
        if self._shown_at is None or now - self._shown_at >= PROGRESS_EVERY:
            # a page stopped by its bound on work says how far back the search has come
            searched = f", searched back to {reached[:19]}Z" if reached else ""
            self._err.write(f"• {written} records so far{searched}…\n")
            self._err.flush()
            self._shown_at = now

    def done(self, written: int) -> None:
        if self._shown_at is not None:
            self._err.write(f"• {written} records in all\n")


def _as_flags(message: str) -> str:
    """A QueryError's message in the CLI's words: `limit must ...` → `--limit must ...`."""
    name, space, rest = message.partition(" ")
    return f"{_FLAGS[name]}{space}{rest}" if name in _FLAGS else message


def _searched(query: ActivityQuery, params: Mapping[str, str], tables: IndexTables) -> str:
    """Standard error's account of an empty result: which range was searched, and why."""
    if "since" in params:
        how = "the range asked for"
    elif is_key_lookup(query):
        how = "the whole index (a key lookup without --since)"
    else:
        how = (
            f"the last {DEFAULT_SPAN.days} days (the default without --since or a key filter; "
            "give --since to search further back)"
        )
    oldest = oldest_indexed_day(tables)
    # The oldest month table, not the oldest record (that would cost a read of its days).
    held = f"the index's oldest month is {oldest:%Y-%m}" if oldest else ""
    held = held or "the index is empty"
    return (
        f"no records found from {query.since.isoformat()} to {query.until.isoformat()}; "
        f"searched {how}; {held}"
    )


def _rows(fmt: str, records: Sequence[NormalizedRecord]) -> str:
    if fmt == "table":
        return "".join(table_row(record) for record in records)
    if fmt == "csv":
        return csv_rows(records)
    return "".join(orjson.dumps(record).decode("utf-8") + "\n" for record in records)


class _Stuck(Exception):
    """A page came back empty with the very token it was asked with: following it would
    never end (the service guarantees otherwise: this is a defect, said, never looped on)."""


class _Written(NamedTuple):
    records: int
    continuation: str | None  # after the last record written; None: nothing left
    unreadable: int  # blobs holding matches that could not be read (named on stderr)


# Exit code of an answer that left out matching records it could not read (damaged storage),
# as `verify` and `forward` exit 3 for what they could not prove or send.
EXIT_INCOMPLETE = 3


def _write_pages(
    query: ActivityQuery, runtime: Runtime, fmt: str, out: TextIO, err: TextIO
) -> _Written:
    """Pages of at most CLI_PAGE until `query.limit` records are written or none are left."""
    out.write(table_header() if fmt == "table" else csv_header() if fmt == "csv" else "")
    progress = _Progress(err)
    written = unreadable = 0
    continuation: str | None = None
    while True:
        page = run_query(
            replace(query, limit=min(CLI_PAGE, query.limit - written)),
            tables=runtime.tables,
            reader=runtime.reader,
            continuation=continuation,
        )
        out.write(_rows(fmt, page.records))
        for name in page.unreadable:  # damaged storage: named, never silently missing
            err.write(f"• records in {name} match the index but cannot be read; skipped\n")
        unreadable += len(page.unreadable)
        written += len(page.records)
        if page.continuation is not None and page.continuation == continuation:
            raise _Stuck(page.reached or "")
        continuation = page.continuation
        if continuation is None or written >= query.limit:
            progress.done(written)
            return _Written(written, continuation, unreadable)
        progress.more_pages(written, page.reached)


def _more_match(query: ActivityQuery, runtime: Runtime, continuation: str) -> bool | None:
    """After a full page: whether another record matches (None: not known after one page)."""
    page = run_query(
        replace(query, limit=1),
        tables=runtime.tables,
        reader=runtime.reader,
        continuation=continuation,
        budget=_MORE_BUDGET,
    )
    if page.records:
        return True
    return False if page.continuation is None else None


def _params(args: argparse.Namespace) -> dict[str, str]:
    return {
        name: str(value) for name in PARAMETERS if (value := getattr(args, name, None)) is not None
    }


def flags_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the query's flags, found before storage is reached (so a bad flag
    is exit 2 while storage is down too: found from outside, it was "storage unavailable")."""
    try:
        parse_query(_params(args), datetime.now(UTC), max_limit=MAX_TOTAL)
    except ClampedRange:
        return None  # maybe fine: judged with the index's newest month
    except QueryError as error:
        return f"error: {_as_flags(str(error))}"
    return None


def query_main(
    args: argparse.Namespace, runtime: Runtime, out: TextIO, err: TextIO | None = None
) -> int:
    """The CLI's `query` verb: pages through the index until `limit` records are written.

    Standard output holds only the records (JSON lines, CSV or the table); progress, an empty
    result's searched range and a limit that cut the result short go to standard error.
    """
    err = err or sys.stderr
    params = _params(args)
    tables = runtime.tables
    try:
        query = read_query(params, datetime.now(UTC), tables, max_limit=MAX_TOTAL)
        fmt = "jsonl" if args.format == "json" else args.format
        written, continuation, unreadable = _write_pages(query, runtime, fmt, out, err)
        more = None if continuation is None else _more_match(query, runtime, continuation)
    except QueryError as error:
        print(f"error: {_as_flags(str(error))}", file=err)
        return 2
    except DamagedIndex as error:  # the answer would be short: said, and how to mend it
        print(f"error: {error}", file=err)
        return EXIT_INCOMPLETE
    except _Stuck as stuck:
        where = f" past {str(stuck)[:19]}Z" if str(stuck) else ""
        print(
            f"error: the search did not move on{where}; stopped (a defect: please report it)",
            file=err,
        )
        return 1
    out.flush()
    if written == 0:
        print(_searched(query, params, tables), file=err)
    elif more is not False and continuation is not None:
        maybe = "more records match" if more else "more records may match"
        print(
            f"• stopped at --limit {query.limit}; {maybe} (a larger --limit shows them)", file=err
        )
    if unreadable:  # an incomplete answer is not taken for the whole one
        print(
            f"• the answer is incomplete: {unreadable} damaged blob(s) named above "
            "(`python -m shared verify` says how to restore them)",
            file=err,
        )
        return EXIT_INCOMPLETE
    return 0
