"""A compacted run row that cannot be read, or a run that lost its last row: a lookup that
reaches it ends with a clear error naming the damage and what mends it (never a traceback
from the CLI, never a 500 without a reason), `verify` names it, and the repair mends it.

Found from outside: an altered run row crashed every key lookup reaching it with
`struct.error`, while `verify` said the archive was clean; a run without its last row ended
lookups with "the compacted postings ... kept changing", which blamed concurrency.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import orjson
import pytest

from functions.query_http import handle_activity
from shared.bootstrap import Runtime
from shared.core.archive_keys import value_hash
from shared.core.runs import prefix_of
from shared.services.compaction import compact
from shared.services.repair import repair
from shared.services.run_store import RunStore
from shared.services.verify import verify
from shared.settings import Settings
from tests.test_cli import shared_cli
from tests.test_compaction import SPAN, assert_exact
from tests.test_query import DATASET, NOW
from tests.test_query_range import request

DAY, MONTH = date(2024, 2, 10), "202402"


def damage(app: Runtime, how: str) -> str:
    """Damage the first committed run of DAY for kind `c` (callers); its unit's caller."""
    store = RunStore(app.tables, MONTH)
    state = store.state(DAY)
    (kind, prefix), run = next(item for item in sorted(state.runs.items()) if item[0][0] == "c")
    rows = list(store.rows(kind, DAY, run))
    if how == "delete last row":
        last = max(rows, key=lambda row: str(row["RowKey"]))
        app.tables.delete(MONTH, [{"PartitionKey": last["PartitionKey"], "RowKey": last["RowKey"]}])
    else:
        first = min(rows, key=lambda row: str(row["RowKey"]))
        packed = bytes(first["E"])
        app.tables.upsert(MONTH, [{**first, "E": packed[: len(packed) // 2 + 3]}])
    callers = {str(r["Caller"]) for r in DATASET if r["TimeGenerated"].startswith("2024-02-10")}
    return next(c for c in sorted(callers) if prefix_of(value_hash(c.lower())[1]) == prefix)


@pytest.mark.parametrize("how", ["cut bytes", "delete last row"])
def test_a_damaged_run_is_a_clear_error_that_verify_names_and_repair_mends(
    archive_app: Runtime, settings: Settings, how: str
) -> None:
    archive_app.writer.write(DATASET)
    compact(archive_app.tables, as_of=NOW)
    caller = damage(archive_app, how)
    flags = ["--since", SPAN["since"], "--until", SPAN["until"], "--caller", caller]
    result = shared_cli("query", *flags, settings=settings)
    said = result.stderr.decode()
    assert result.returncode == 3, said
    assert "Traceback" not in said and "damaged" in said and "verify --repair" in said, said
    answer = handle_activity(request({**SPAN, "caller": caller}), archive_app, NOW)
    assert answer.status_code == 500
    assert "damaged" in orjson.loads(answer.get_body())["error"]

    later = datetime.now(UTC) + timedelta(hours=1)
    tables = archive_app.tables
    report = verify(tables, archive_app.archive, archive_app.reader, since=None, until=None,
                    now=later)  # fmt: skip
    assert not report.ok and report.problems["unindexed"], report.as_dict()
    done = repair(tables, archive_app.archive, archive_app.writer, report, apply=True,
                  clock=lambda: later)  # fmt: skip
    assert not done.failed, done.as_dict()
    again = verify(tables, archive_app.archive, archive_app.reader, since=None, until=None,
                   now=later)  # fmt: skip
    assert again.ok, again.as_dict()
    assert_exact(archive_app, DATASET)
