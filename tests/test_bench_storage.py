"""The storage benchmark: the billed entity size formula, and every figure it prints, measured
on Azurite at a tiny size (what it produces, never how fast: timings are the benchmark's)."""

from __future__ import annotations

import pytest
from azure.data.tables import EdmType, EntityProperty

from bench.bench_storage import run
from bench.storage_probe import entity_bytes
from shared.tools.azurite import Azurite


def test_an_entity_is_sized_as_azure_bills_it() -> None:
    # 4 + 2·len("p" + "rk") + (8 + 2·len("S") + 2·len("abc") + 4) + (8 + 2·len("B") + 5 + 4)
    #   + (8 + 2·len("N") + 8) + (8 + 2·len("F") + 1)
    entity = {
        "PartitionKey": "p",
        "RowKey": "rk",
        "S": "abc",
        "B": b"12345",
        "N": EntityProperty(2**40, EdmType.INT64),
        "F": True,
    }
    assert entity_bytes(entity) == 4 + 6 + (8 + 2 + 6 + 4) + (8 + 2 + 5 + 4) + 18 + 11


@pytest.mark.e2e  # a child Python process (the CLI, -X importtime) on Azurite
def test_every_figure_is_measured_on_the_real_layer(azurite: Azurite) -> None:
    figures = {figure.name: figure for figure in run(300, quick=True, azurite=azurite)}
    expected = [
        "raw bytes/event (PT1H.json line)",
        "table bytes/event (billed size)",
        "archive bytes/event (gzip JSONL)",
        "rows/event by kind",
        "$ per raw GB-month, blobs Hot",
        "$ per raw GB-month, blobs Cool",
        "$ per raw GB-month, blobs Cold",
        "busiest partition: rows / events",
        "HTTP requests / event written",
        "ingest time / normalize time",
        "DuckDB read_json over the archive",
        "import shared.bootstrap (cold start)",
        "CLI key lookup of 1,000 records",
        "retention requests / event removed",
    ]
    assert sorted(figures) == sorted(expected)
    # What the storage layer itself wrote is measured (pass or fail: a verdict, not an error).
    for name in expected[:11]:
        assert figures[name].result in ("pass", "FAIL", "info"), figures[name]
    assert figures["rows/event by kind"].value.startswith("k ")
    assert figures["DuckDB read_json over the archive"].result == "pass"
    # The query and retention services may fail while being rebuilt: a figure either way.
    for name in expected[11:]:
        assert figures[name].value and figures[name].target is not None
