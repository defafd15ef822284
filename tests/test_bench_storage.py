"""The storage cost benchmark: the billed entity size formula and the figures it prints."""

from __future__ import annotations

from bench.bench_storage import entity_bytes, run


def test_an_entity_is_sized_as_azure_bills_it() -> None:
    # 4 + 2·len("p" + "rk") + (8 + 2·len("S") + 2·len("abc") + 4) + (8 + 2·len("B") + 5 + 4)
    entity = {"PartitionKey": "p", "RowKey": "rk", "S": "abc", "B": b"12345"}
    assert entity_bytes(entity) == 4 + 6 + (8 + 2 + 6 + 4) + (8 + 2 + 5 + 4)


def test_the_layouts_compare_as_measured() -> None:
    rows = {row["what"]: row["bytes/event"] for row in run(600)}
    raw = rows["raw PT1H.json line (the export)"]
    gzipped = rows["archive: normalized JSON Lines, gzip 6, one stream"]
    today = next(value for name, value in rows.items() if name.startswith("index today"))
    postings = next(value for name, value in rows.items() if "posting" in name)
    assert gzipped < raw / 4
    assert postings < today / 10
