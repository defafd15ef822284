"""Event Hub and blob path benchmarks on Azurite, each a ratio measured in the same run.

* Event Hub: a 1,000-event batch delivered end to end (normalize, index), as events/s and as
  a ratio to normalizing the same batch alone.
* (a) bytes downloaded / bytes appended while a PT1H.json grows in 60 appends that cut lines:
  target 1.00, plus at most one partial line re-read per read.
* (b) indexing a 50,000-event blob / writing the same entities with bare batched transactions
  (same grouping, same parallelism): target <= 1.3.
* (c) peak Python memory (tracemalloc) indexing a 256 MB blob / indexing a 1 MB blob: target <= 2.

    .venv/bin/python -m bench.bench_pipeline [--quick]
"""

from __future__ import annotations

import itertools
import sys
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from shared.adapters.blobs import ArchiveBlob
from shared.bootstrap import Runtime, build_runtime
from shared.core.archive_format import EncodedBlob, encode_blob
from shared.core.archive_keys import claim_row, event_id, pack_ids, slot_partition
from shared.core.normalize import normalize_input
from shared.core.records import NormalizedRecord
from shared.services.archive_write import archive_order, plan_blobs, postings
from shared.services.blob_chunks import CHUNK_BYTES
from shared.services.blob_indexing import BlobIndexer
from shared.services.delivery import EventBody, deliver
from shared.settings import ARCHIVE_CONTAINER, STORAGE_CONNECTION, STORE_PREFIX, load_settings
from shared.tools.azurite import Azurite
from shared.tools.generate import generate_events

_stores = itertools.count(1)
BLOB = "resourceId=/SUBSCRIPTIONS/BENCH/y=2025/m=01/d=06/h=10/m=00/PT1H.json"


def _row(
    benchmark: str, figure: float, unit: str, floor: float | str, ratio: float, target: str
) -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "figure": figure,
        "unit": unit,
        "floor": floor,
        "ratio": round(ratio, 2),
        "target": target,
    }


def _fresh(azurite: Azurite) -> Runtime:
    prefix = f"bench{next(_stores)}"
    settings = load_settings(
        {
            STORAGE_CONNECTION: azurite.connection_string,
            STORE_PREFIX: prefix,
            ARCHIVE_CONTAINER: f"{prefix}-archive",
        }
    )
    app = build_runtime(settings)
    app.stores.archive.create_container()
    return app


def _lines(count: int, seed: int, **extra: Any) -> list[bytes]:
    events = generate_events(count, seed=seed)
    if extra:
        for event in events:
            event.setdefault("properties", {}).update(extra)
    return [orjson.dumps(event) + b"\n" for event in events]


def event_hub(azurite: Azurite, count: int = 1000) -> dict[str, Any]:
    events = generate_events(count, seed=3)
    bodies = [
        EventBody(orjson.dumps({"records": events[i : i + 10]}), "0", i)
        for i in range(0, count, 10)
    ]
    started = time.perf_counter()
    for body in bodies:
        normalize_input(body.body, body.source)
    normalize_only = time.perf_counter() - started
    app = _fresh(azurite)
    started = time.perf_counter()
    report = deliver(bodies, writer=app.writer, deadletters=app.deadletters)
    end_to_end = time.perf_counter() - started
    assert report.indexed == count, report
    return _row(
        f"Event Hub batch of {count:,} events ({len(bodies)} bodies), end to end on Azurite",
        round(count / end_to_end),
        "events/s",
        f"{round(count / normalize_only):,} events/s normalize only",
        end_to_end / normalize_only,
        "reported (storage-bound)",
    )


def growing_blob(azurite: Azurite, appends: int = 60) -> dict[str, Any]:
    app = _fresh(azurite)
    data = b"".join(_lines(3000, seed=5))
    blob = app.stores.archive.get_blob_client(BLOB)
    blob.create_append_blob()
    cut_points = [len(data) * k // appends + 13 * (k % 7) for k in range(1, appends)]
    cuts = [0, *cut_points, len(data)]
    downloaded = reads = 0
    for start, end in itertools.pairwise(cuts):
        blob.append_block(data[start:end])
        report = app.blob_indexer.index(ArchiveBlob(app.stores.archive, BLOB))
        downloaded += report.bytes_read
        reads += 1
    longest_line = max(len(line) for line in data.split(b"\n"))
    partial_lines = (downloaded - len(data)) / longest_line
    return _row(
        f"(a) blob growing in {appends} appends: bytes downloaded / appended",
        downloaded,
        "bytes read",
        len(data),
        downloaded / len(data),
        f"1.00 + <= 1 partial line per read ({partial_lines:.1f} line-lengths over {reads} reads)",
    )


def index_vs_bare_transactions(azurite: Azurite, count: int = 50_000) -> dict[str, Any]:
    data = b"".join(_lines(count, seed=7))
    # Warm Azurite up first, so neither side pays for the emulator's own start.
    warm = _fresh(azurite)
    warm.writer.write(normalize_input(b"".join(_lines(1000, seed=8)), "warm-up")[0])
    ours = _fresh(azurite)
    blob = ours.stores.archive.get_blob_client(BLOB)
    blob.create_append_blob()
    for offset in range(0, len(data), 4 * 1024 * 1024):
        blob.append_block(data[offset : offset + 4 * 1024 * 1024])
    started = time.perf_counter()
    report = ours.blob_indexer.index(ArchiveBlob(ours.stores.archive, BLOB))
    indexing = time.perf_counter() - started
    assert report.indexed == count, report

    # The floor: the very blobs and rows the indexer wrote, piece by piece as it reads the
    # blob (CHUNK_BYTES of whole lines), sent bare: no reads, no checks, no normalizing.
    bare = _fresh(azurite)
    pieces = [_bare_writes(normalize_input(piece, "bench")[0]) for piece in _pieces(data)]
    entities = sum(len(batch) for _, rows in pieces for _, batch in rows)
    started = time.perf_counter()
    for blobs, rows in pieces:
        bare.tables.parallel(lambda item: bare.archive.put(*item), blobs)
        bare.tables.parallel(lambda item: bare.tables.upsert(*item), rows)
    floor = time.perf_counter() - started
    return _row(
        f"(b) index a {count:,}-event blob ({len(data) / 2**20:.0f} MB, {entities:,} entities) "
        "/ bare batched transactions",
        round(count / indexing),
        "events/s",
        f"{round(count / floor):,} events/s bare",
        indexing / floor,
        "<= 1.3",
    )


def _pieces(data: bytes) -> Iterator[bytes]:
    """The pieces the blob indexer writes: up to CHUNK_BYTES, cut after a newline."""
    start = 0
    while start < len(data):
        window = data[start : start + CHUNK_BYTES]
        end = window.rfind(b"\n") + 1 or len(window)
        yield window[:end]
        start += end


def _bare_writes(
    records: list[NormalizedRecord],
) -> tuple[list[tuple[str, EncodedBlob]], list[tuple[str, list[dict[str, Any]]]]]:
    """The archive blobs and index rows (claims, postings, manifests) a write of these makes."""
    blobs: list[tuple[str, EncodedBlob]] = []
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    sequence: dict[str, int] = defaultdict(int)
    for planned in plan_blobs(records):
        ordered = archive_order(planned.records)
        encoded = encode_blob(ordered)
        blobs.append((planned.ref.name, encoded))
        rows[planned.ref.month] += postings(planned.ref, ordered)
        manifest, row = planned.ref.manifest_keys
        rows[planned.ref.month].append({"PartitionKey": manifest, "RowKey": row, "N": len(ordered)})
        for slot in sorted({slot_partition(r["TimeGenerated"]) for r in ordered}):
            ids = [
                event_id(r["EventKey"])
                for r in ordered
                if slot_partition(r["TimeGenerated"]) == slot
            ]
            sequence[slot] += 1
            rows[planned.ref.month].append(
                {"PartitionKey": slot, "RowKey": claim_row(sequence[slot]), "K": pack_ids(ids)}
            )
    return blobs, list(rows.items())


@contextmanager
def _peak() -> Iterator[list[int]]:
    result: list[int] = []
    tracemalloc.start()
    try:
        yield result
    finally:
        result.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def _index_blob_of(azurite: Azurite, megabytes: int) -> tuple[int, int]:
    app = _fresh(azurite)
    # ~50 KB events (a JSON response body each): 256 MB is ~5,000 events, not 200,000, so the
    # run measures memory, not how fast Azurite inserts rows.
    padding = orjson.dumps(
        {"items": [{"id": n, "state": "Succeeded"} for n in range(1400)]}
    ).decode()
    lines = _lines(
        max(1, megabytes * 2**20 // (len(padding) + 2500)), seed=11, responseBody=padding
    )
    blob = app.stores.archive.get_blob_client(BLOB)
    blob.create_append_blob()
    size = 0
    block: list[bytes] = []
    for line in lines:
        block.append(line)
        if sum(map(len, block)) > 3 * 2**20:
            blob.append_block(b"".join(block))
            size += sum(map(len, block))
            block = []
    if block:
        blob.append_block(b"".join(block))
        size += sum(map(len, block))
    del lines, block
    indexer = BlobIndexer(app.writer, app.cursors, app.deadletters)
    with _peak() as peak:
        report = indexer.index(ArchiveBlob(app.stores.archive, BLOB))
    assert report.deadlettered == 0 and report.indexed == report.events
    return size, peak[0]


def memory(azurite: Azurite, large_mb: int = 256) -> dict[str, Any]:
    small_size, small_peak = _index_blob_of(azurite, 1)
    large_size, large_peak = _index_blob_of(azurite, large_mb)
    return _row(
        f"(c) peak memory indexing a {large_size / 2**20:.0f} MB blob"
        f" / a {small_size / 2**20:.1f} MB blob",
        round(large_peak / 2**20, 1),
        "MiB peak",
        f"{small_peak / 2**20:.1f} MiB",
        large_peak / small_peak,
        "<= 2",
    )


def run(quick: bool = False) -> list[dict[str, Any]]:
    with Azurite(in_memory=True) as azurite:
        return [
            event_hub(azurite),
            growing_blob(azurite),
            index_vs_bare_transactions(azurite, 5_000 if quick else 50_000),
            memory(azurite, 32 if quick else 256),
        ]


def print_table(rows: list[dict[str, Any]]) -> None:
    headers = ("benchmark", "figure", "unit", "floor", "ratio", "target")
    table = [headers, *[tuple(str(row[name]) for name in headers) for row in rows]]
    widths = [max(len(line[column]) for line in table) for column in range(len(headers))]
    for line in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


if __name__ == "__main__":
    print_table(run(quick="--quick" in sys.argv))
