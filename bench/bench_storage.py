"""What keeping one event costs in bytes: archive formats and index layouts, measured.

Input to the storage rebuild (the issue "Storage that makes keeping years worth it"), so that
its choices rest on figures rather than guesses. No I/O: the same normalized records are
encoded each way, and every table entity is sized by the formula Azure bills
(4 + 2·len(PartitionKey + RowKey) + Σ over properties (8 + 2·len(name) + the value's size);
Microsoft Learn archive, "How the size of an entity is calculated in Windows Azure table
storage", https://learn.microsoft.com/en-us/archive/blogs/avkashchauhan/how-the-size-of-an-entity-is-caclulated-in-windows-azure-table-storage).

Archive candidates use the standard library only (gzip: no import cost at cold start, and
read by DuckDB, Azure Data Explorer, Synapse serverless SQL and Spark as JSON Lines). Index
layouts: today's (a record row holding the compressed body, plus a lookup row per key column),
one key row per event (dedupe) with one lookup row per key column referring to the archive,
and posting rows (one row per distinct value per delivery unit, listing its records).

    .venv/bin/python -m bench.bench_storage [count]
"""

from __future__ import annotations

import gzip
import sys
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import orjson

from shared.adapters.index_store import IndexWriter
from shared.core.keys import LOOKUP_COLUMNS, RecordKey
from shared.core.normalize import normalize_input
from shared.core.records import NormalizedRecord
from shared.tools.generate import generate_events

UNIT = 500  # records per delivery unit (an archive blob) for the posting layout
MEMBER = 256  # records per gzip member: the unit a ranged read decompresses
TABLE_PRICE_PER_GB = 0.045  # LRS table storage, as the storage issue states it
LOG_ANALYTICS_LONG_TERM_PER_GB = 0.02  # the same issue's yardstick
EVENT_KEY_HEX = 32
VALUE_HASH_HEX = 16
TICKS_DIGITS = 19
REFERENCE_CHARS = 12  # an archive blob number, a member offset and a position, base 64
BUCKET_CHARS = 2


def _value_size(value: object) -> int:
    if isinstance(value, bytes):
        return len(value) + 4
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return 8
    return len(str(value)) * 2 + 4


def entity_bytes(entity: Mapping[str, Any]) -> int:
    """Billed size of one table entity (the formula in the module's docstring)."""
    keys = len(entity["PartitionKey"]) + len(entity["RowKey"])
    properties = sum(
        8 + len(name) * 2 + _value_size(value)
        for name, value in entity.items()
        if name not in ("PartitionKey", "RowKey")
    )
    return 4 + keys * 2 + properties


def _today(records: list[NormalizedRecord]) -> int:
    writer = IndexWriter(cast(Any, None), cast(Any, None), cast(Any, None))
    plan = writer.plan(records)
    entities = [e for batch in plan.lookup_batches + plan.record_batches for e in batch]
    return sum(entity_bytes(entity) for entity in entities)


def _per_event(records: list[NormalizedRecord]) -> int:
    """A key row per event (dedupe, and where the record is) and a lookup row per key value."""
    total = 0
    for record in records:
        key = RecordKey.of(record)
        total += entity_bytes(
            {
                "PartitionKey": key.partition_key + "00" + "x" * BUCKET_CHARS,
                "RowKey": record["EventKey"],
                "R": "x" * REFERENCE_CHARS,
            }
        )
        for column in LOOKUP_COLUMNS.values():
            if record[column]:
                total += entity_bytes(
                    {
                        "PartitionKey": "k" + key.partition_key[:6] + "x" * BUCKET_CHARS,
                        "RowKey": "x" * (VALUE_HASH_HEX + TICKS_DIGITS + EVENT_KEY_HEX),
                    }
                )
    return total


def _postings(records: list[NormalizedRecord]) -> int:
    """Per delivery unit: its event keys in one row (16 bytes each, for dedupe), and one row
    per distinct key value listing the positions of its records (2 bytes each)."""
    total = 0
    for start in range(0, len(records), UNIT):
        unit = records[start : start + UNIT]
        total += entity_bytes(
            {"PartitionKey": "u" * 12, "RowKey": "u" * 8, "K": b"k" * 16 * len(unit)}
        )
        for column in LOOKUP_COLUMNS.values():
            positions: dict[str, int] = defaultdict(int)
            for record in unit:
                if record[column]:
                    positions[record[column]] += 1
            for count in positions.values():
                total += entity_bytes(
                    {
                        "PartitionKey": "k" * 10,
                        "RowKey": "x" * (VALUE_HASH_HEX + 8),
                        "P": b"p" * 2 * count,
                    }
                )
    return total


def _gzip_whole(lines: list[bytes]) -> int:
    return len(gzip.compress(b"".join(lines), 6))


def _gzip_members(lines: list[bytes]) -> int:
    return sum(
        len(gzip.compress(b"".join(lines[start : start + MEMBER]), 6))
        for start in range(0, len(lines), MEMBER)
    )


def _zlib_each(lines: list[bytes]) -> int:
    return sum(len(zlib.compress(line, 6)) for line in lines)


def run(count: int = 20_000) -> list[dict[str, Any]]:
    events = list(generate_events(count, seed=42))
    raw = [orjson.dumps(event) + b"\n" for event in events]
    records, _ = normalize_input(b"".join(raw), "bench")
    lines = [orjson.dumps(record) + b"\n" for record in records]
    raw_per_event = sum(map(len, raw)) / len(records)
    rows = [_row("raw PT1H.json line (the export)", raw_per_event, raw_per_event, "")]
    archives: list[tuple[str, Callable[[list[bytes]], int]]] = [
        ("archive: normalized JSON Lines, gzip 6, one stream", _gzip_whole),
        (f"archive: the same in gzip members of {MEMBER} (ranged reads)", _gzip_members),
        ("archive: zlib per record (today's Body)", _zlib_each),
    ]
    for name, size_of in archives:
        rows.append(_row(name, size_of(lines) / len(records), raw_per_event, "blob"))
    layouts: list[tuple[str, Callable[[list[NormalizedRecord]], int]]] = [
        ("index today: record row with body + 5 lookups", _today),
        ("index: key row + lookup row per value (keys only)", _per_event),
        (f"index: posting rows per unit of {UNIT}", _postings),
    ]
    for name, layout in layouts:
        rows.append(_row(name, layout(records) / len(records), raw_per_event, "table"))
    return rows


def _row(name: str, per_event: float, raw: float, kind: str) -> dict[str, Any]:
    dollars = ""
    if kind == "table":
        # Per raw GB kept a month: the table bytes it needs at the table price.
        dollars = f"${per_event / raw * TABLE_PRICE_PER_GB:.4f}"
    return {
        "what": name,
        "bytes/event": round(per_event),
        "of raw": f"{per_event / raw:.3f}",
        "tables $/raw GB-month": dollars,
        "vs LA long-term": (
            f"{per_event / raw * TABLE_PRICE_PER_GB / LOG_ANALYTICS_LONG_TERM_PER_GB:.2f}x"
            if dollars
            else ""
        ),
    }


def print_rows(rows: Iterable[dict[str, Any]]) -> None:
    rows = list(rows)
    headers = list(rows[0])
    table = [headers, *[[str(row[h]) for h in headers] for row in rows]]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))


if __name__ == "__main__":
    print_rows(run(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
