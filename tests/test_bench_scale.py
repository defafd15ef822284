"""The scale benchmark's loader, tiny: what it writes is valid, distinct and findable (what it
measures, never how fast: timings are the benchmark's)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bench.scale_load import MONTH, SyntheticMonth, load_month, open_app
from shared.core.eventkey import event_key
from shared.core.keys import parse_canonical_time
from shared.core.records import COLUMNS
from shared.services.query import read_query, run_query
from shared.tools.azurite import Azurite

PLANTED = "planted-correlation"


@pytest.mark.e2e  # the loader writes from child Python processes
def test_a_loaded_month_holds_each_event_once_and_its_plants_exactly(azurite: Azurite) -> None:
    month = SyntheticMonth(2_000, MONTH, [("CorrelationId", PLANTED, 3)], days=3)
    records = month.records(0, month.count)
    assert all(set(record) == set(COLUMNS) for record in records)
    assert all(event_key(record) == record["EventKey"] for record in records)
    assert len({record["EventKey"] for record in records}) == month.count
    times = [parse_canonical_time(record["TimeGenerated"])[0] for record in records]
    assert times == sorted(times) and times[0] >= MONTH and times[-1] < month.end
    planted = [record for record in records if record["CorrelationId"] == PLANTED]
    assert len({record["TimeGenerated"][:10] for record in planted}) == 3  # three days

    loaded = load_month(azurite.connection_string, "tbenchscale", month, processes=1)
    assert (loaded.events, loaded.writes) == (2_000, 2)
    app = open_app(azurite.connection_string, "tbenchscale")
    params = {"correlation_id": PLANTED, "since": "2025-03-01", "until": "2025-03-04"}
    query = read_query(params, datetime.now(UTC), app.tables)
    page = run_query(query, tables=app.tables, reader=app.reader)
    assert sorted(record["EventKey"] for record in page.records) == sorted(
        record["EventKey"] for record in planted
    )
