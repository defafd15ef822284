"""Compaction on Azurite: runs sorted by value hash replace a closed day's fresh posting rows.

Lookups must give the same answer before, during and after a merge; a merge killed at any
step, or paused while another one runs, leaves nothing listed twice, nothing lost, and no
rows that nothing references once a merge of the day has run to its end.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from shared.adapters import index_tables, table_changesets
from shared.adapters.index_tables import IndexTables
from shared.bootstrap import Runtime
from shared.core import runs
from shared.core.archive_keys import posting_ref, value_hash
from shared.core.keys import LOOKUP_COLUMNS
from shared.core.query_spec import FILTER_PARTITION, ActivityQuery, parse_query
from shared.core.records import NormalizedRecord
from shared.core.runs import RUN_ROW, prefix_of, run_partition, run_prefix
from shared.services import postings_read
from shared.services.compaction import CompactionReport, DayCompaction, compact
from shared.services.postings_read import run_places
from shared.services.query import run_query
from shared.services.repair import repair
from shared.services.run_store import RunStore, UnitMerge
from shared.services.verify import verify
from tests.test_query import DATASET, NOW, make_record

SPAN = {"since": "2024-01-01T00:00:00Z", "until": "2024-04-01T00:00:00Z", "limit": "1000"}
LOOKUPS = (
    {"correlation_id": "Corr-3"},
    {"correlation_id": "corr-edge"},
    {"caller": "alice@contoso.com"},
    {"caller": "twin@contoso.com"},
    {"subscription": "11111111-1111-1111-1111-111111111111"},
    {"operation": "Microsoft.Compute/virtualMachines/write"},
    {
        "resource": "/subscriptions/22222222-2222-2222-2222-222222222222/resourceGroups/rg1/"
        "providers/Microsoft.Compute/virtualMachines/VM1"
    },
)
# Records written after the first merge: late events of days already merged.
LATE = [
    make_record(f"2024-02-10T1{i}:00:00.0000000Z", caller="late@contoso.com", correlation="Corr-3")
    for i in range(4)
]


def lookup(app: Runtime, **filters: str) -> list[str]:
    page = run_query(parse_query({**SPAN, **filters}, NOW), tables=app.tables, reader=app.reader)
    keys = [record["EventKey"] for record in page.records]
    assert len(keys) == len(set(keys)), "a record listed twice"
    return keys


def expected(records: list[NormalizedRecord], **filters: str) -> list[str]:
    """The lookup's answer, computed from the records themselves, newest first."""
    column = {
        "correlation_id": "CorrelationId",
        "caller": "Caller",
        "subscription": "SubscriptionId",
        "operation": "OperationNameValue",
        "resource": "ResourceId",
    }
    ((field, value),) = filters.items()
    found = [r for r in records if str(r[column[field]]).lower() == value.lower()]
    found.sort(key=lambda r: (r["TimeGenerated"], r["EventKey"]), reverse=True)
    return [r["EventKey"] for r in found]


def assert_exact(app: Runtime, records: list[NormalizedRecord]) -> None:
    for filters in (*LOOKUPS, {"caller": "late@contoso.com"}):
        assert lookup(app, **filters) == expected(records, **filters), filters


def fresh_days(tables: IndexTables, month: str) -> Counter[date]:
    days: Counter[date] = Counter()
    for kind in LOOKUP_COLUMNS:
        for row in tables.query(month, FILTER_PARTITION, {"pk": kind}):
            days[posting_ref(month, str(row["RowKey"])).day] += 1
    return days


def assert_clean(tables: IndexTables) -> None:
    """No merge left unfinished; no run rows but the committed runs'; no fresh rows of
    committed blobs of closed days."""
    for month in tables.months():
        runs = RunStore(tables, month)
        for row in tables.query(month, FILTER_PARTITION, {"pk": "z"}):
            day = date(int(month[:4]), int(month[4:]), int(str(row["RowKey"])))
            state = runs.state(day)
            assert not state.writing and not state.replaced, (day, state)
            for kind in LOOKUP_COLUMNS:
                prefixes = {run_prefix(run) for (k, _), run in state.runs.items() if k == kind}
                partition = f"{RUN_ROW}{kind}{day.day:02d}"
                for run_row in tables.query(month, FILTER_PARTITION, {"pk": partition}):
                    assert str(run_row["RowKey"])[:13] in prefixes, (partition, run_row["RowKey"])
        assert not fresh_days(tables, month), "fresh rows of closed days left after a merge"


@pytest.fixture
def written(archive_app: Runtime) -> Runtime:
    archive_app.writer.write(DATASET)
    return archive_app


def _second_apart(i: int) -> str:
    return f"2024-02-12T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}.{i:07d}Z"


def frequent_day(
    app: Runtime,
    subscription: str,
    tag: str,
    time_of: Callable[[int], str] = _second_apart,
    shape: tuple[int, int] = (3000, 1000),
) -> list[NormalizedRecord]:
    """Events of one subscription (3,000 on 12 February, a second apart, by default), each
    its own correlation id, written (1,000 a write) and merged: the subscription's places
    fill many run rows."""
    count, per_write = shape
    records = [
        make_record(time_of(i), subscription=subscription, correlation=f"{tag}-{i}")
        for i in range(count)
    ]
    for start in range(0, len(records), per_write):
        app.writer.write(records[start : start + per_write])
    compact(app.tables, as_of=NOW)
    return records


def all_pages(
    app: Runtime, query: ActivityQuery, each_page: Callable[[], None] = lambda: None
) -> list[str]:
    """Every page of a query, token after token: the records' keys in order."""
    found: list[str] = []
    token: str | None = None
    while True:
        page = run_query(query, tables=app.tables, reader=app.reader, continuation=token)
        found += [record["EventKey"] for record in page.records]
        token = page.continuation
        if token is None:
            return found
        each_page()


def test_lookups_give_the_same_answer_before_and_after_a_merge(written: Runtime) -> None:
    assert_exact(written, DATASET)
    report = compact(written.tables, as_of=NOW)
    assert report.units > 0 and not report.busy and report.days_left == 0
    assert_exact(written, DATASET)
    assert_clean(written.tables)
    assert compact(written.tables, as_of=NOW).units == 0  # nothing new: nothing rewritten


def test_late_events_of_a_merged_day_are_found_fresh_then_merged_again(written: Runtime) -> None:
    compact(written.tables, as_of=NOW)
    written.writer.write(LATE)
    assert_exact(written, DATASET + LATE)
    # one single row a kind (a small blob)
    assert fresh_days(written.tables, "202402") == Counter({date(2024, 2, 10): len(LOOKUP_COLUMNS)})
    assert compact(written.tables, as_of=NOW).units > 0
    assert_exact(written, DATASET + LATE)
    assert_clean(written.tables)


def test_a_posting_row_not_of_the_index_s_making_is_passed_over(written: Runtime) -> None:
    """A fresh row whose RowKey names no blob (another spelling of a blob id, an unknown
    class) neither stops the merge nor a lookup; it is left as it is."""
    first = next(iter(written.tables.query("202402", FILTER_PARTITION, {"pk": "s"})))
    row_key = str(first["RowKey"])
    odd = [
        {**first, "RowKey": row_key[:4] + row_key[4:17].upper() + row_key[17:]},
        {**first, "RowKey": row_key[:3] + "z" + row_key[4:]},
    ]
    written.tables.upsert("202402", odd)
    report = compact(written.tables, as_of=NOW)
    assert report.units > 0 and report.days_left == 0
    assert_exact(written, DATASET)


def test_open_days_and_pending_blobs_keep_their_fresh_rows(written: Runtime) -> None:
    report = compact(written.tables, as_of=datetime(2024, 2, 10, 1, 0, tzinfo=UTC))
    assert all(
        day >= date(2024, 2, 9)
        for month in ("202402", "202403")
        for day in fresh_days(written.tables, month)
    )
    assert report.units > 0
    assert_exact(written, DATASET)


def test_a_lookup_reads_what_it_finds_not_what_the_day_holds(archive_app: Runtime) -> None:
    """Ten times the other events of a day: the rows a 3-event lookup reads stay the same."""
    read: list[int] = []

    def rows_read(app: Runtime, extra: int) -> int:
        day = [
            make_record(
                f"2024-02-1{i % 3}T{i % 24:02d}:00:{i % 60:02d}.{i:07d}Z",
                correlation=f"other-{i}",
                caller=f"user{i}@contoso.com",
                resource=f"/subscriptions/s/resourceGroups/rg/providers/p/t/r{i}",
            )
            for i in range(extra)
        ]
        app.writer.write(
            [
                *day,
                *[
                    make_record(f"2024-02-1{i}T05:00:00.0000000Z", correlation="needle")
                    for i in range(3)
                ],
            ]
        )
        compact(app.tables, as_of=NOW)
        counted = _count_rows(app.tables)
        assert len(lookup(app, correlation_id="needle")) == 3
        return counted()

    prefix = archive_app.settings.store_prefix
    read.append(rows_read(archive_app, 200))
    archive_app.tables.prefix = prefix + "b"  # a second, bigger index
    read.append(rows_read(archive_app, 2000))
    assert read[1] <= read[0] + 1, read


def _count_rows(tables: IndexTables) -> Callable[[], int]:
    original = tables.query
    count = [0]

    def counting(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for row in original(*args, **kwargs):
            count[0] += 1
            yield row

    tables.query = counting  # type: ignore[method-assign]
    return lambda: count[0]


# --- killed at any step -------------------------------------------------------------------

_MUTATIONS = ("insert_rows", "replace_if", "upsert", "delete")


class Killed(Exception):
    pass


def _kill_after(tables: IndexTables, steps: int) -> Callable[[], None]:
    """Make the `steps`-th mutating call (0-based) raise before it reaches storage."""
    seen = [0]
    originals = {name: getattr(tables, name) for name in _MUTATIONS}

    def wrap(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if seen[0] == steps:
                seen[0] += 1
                raise Killed(name)
            seen[0] += 1
            return originals[name](*args, **kwargs)

        return call

    for name in _MUTATIONS:
        setattr(tables, name, wrap(name))

    def restore() -> None:
        for name, function in originals.items():
            setattr(tables, name, function)

    return restore


# Every mutating call of the second merge below (its units, then the shared rows' deletes):
# test_the_kill_points_cover_the_whole_merge holds this to the merge's real count.
KILL_POINTS = 47  # seven kinds (resource group and status added: 33 with five)


@pytest.mark.parametrize("step", range(KILL_POINTS))
def test_a_merge_killed_at_any_step_loses_and_doubles_nothing(
    archive_app: Runtime, step: int
) -> None:
    records = [r for r in DATASET if r["TimeGenerated"].startswith("2024-02-1")]
    late = list(LATE)
    archive_app.writer.write(records)
    only = date(2024, 2, 10)
    DayCompaction(archive_app.tables, "202402", only, _report()).run()  # old runs
    archive_app.writer.write(late)
    restore = _kill_after(archive_app.tables, step)
    try:
        with pytest.raises(Killed):
            DayCompaction(archive_app.tables, "202402", only, _report()).run()
    finally:
        restore()
    for filters in ({"correlation_id": "Corr-3"}, {"caller": "late@contoso.com"}):
        assert lookup(archive_app, **filters) == expected(records + late, **filters)
    compact(archive_app.tables, as_of=NOW)
    for filters in ({"correlation_id": "Corr-3"}, {"caller": "late@contoso.com"}):
        assert lookup(archive_app, **filters) == expected(records + late, **filters)
    assert_clean(archive_app.tables)


def _merged_all(tables: IndexTables, day: date) -> bool:
    """Whether a day's merge ran with no unit held by another."""
    report = _report()
    DayCompaction(tables, day.strftime("%Y%m"), day, report).run()
    return not report.busy


def _report() -> CompactionReport:
    return CompactionReport()


# --- paused while others work -------------------------------------------------------------


@pytest.mark.parametrize("step", ["upsert", "replace_if", "delete"])
def test_a_merge_paused_while_another_merges_the_day_never_commits_late(
    written: Runtime, step: str
) -> None:
    """A merge frozen before its step: a second merge takes the day over; lookups stay exact
    all along; the first, resumed, fails its commit (or cleans up after its own) and the
    day ends with one run."""
    compact(written.tables, as_of=NOW)
    written.writer.write(LATE)
    only = date(2024, 2, 10)
    tables = written.tables
    original = getattr(tables, step)
    paused, resume = threading.Event(), threading.Event()

    def held(*args: Any, **kwargs: Any) -> Any:
        if not paused.is_set():  # the first call: the worker's merge, frozen here
            paused.set()
            resume.wait(30)
        return original(*args, **kwargs)

    setattr(tables, step, held)
    outcome: list[bool] = []
    worker = threading.Thread(target=lambda: outcome.append(_merged_all(tables, only)))
    worker.start()
    assert paused.wait(30)
    assert_exact(written, DATASET + LATE)
    second = _report()
    DayCompaction(tables, "202402", only, second).run()
    assert_exact(written, DATASET + LATE)
    resume.set()
    worker.join(30)
    setattr(tables, step, original)
    assert_exact(written, DATASET + LATE)
    assert len(outcome) == 1
    compact(tables, as_of=NOW)
    assert_exact(written, DATASET + LATE)
    assert_clean(tables)


def assert_runs_have_rows(tables: IndexTables, day: date) -> None:
    """Every run a day's state names as committed has its rows."""
    month = day.strftime("%Y%m")
    for (kind, prefix), run in RunStore(tables, month).state(day).runs.items():
        partition = f"{RUN_ROW}{kind}{day.day:02d}"
        rows = tables.query(month, FILTER_PARTITION, {"pk": partition}, select=["RowKey"])
        held = {str(row["RowKey"])[:13] for row in rows}
        assert run_prefix(run) in held, (kind, prefix, run)


def test_a_merge_that_read_the_state_before_another_committed_deletes_nothing_of_it(
    written: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Merge B reads a unit's state while merge A holds it (A's new run listed as being
    written), then A commits: B must not take A's run for a stopped merge's leftover and
    delete it (found from outside: the state then named a run with no rows, and lookups of
    the unit failed, or after a late event found only the late records)."""
    compact(written.tables, as_of=NOW)
    written.writer.write(LATE)
    only, tables = date(2024, 2, 10), written.tables
    a_in_window, b_read, a_done = threading.Event(), threading.Event(), threading.Event()
    original_upsert, original_state = tables.upsert, RunStore.state
    main = threading.current_thread()

    def upsert_held(*args: Any, **kwargs: Any) -> Any:
        if not a_in_window.is_set() and threading.current_thread() is not main:
            a_in_window.set()  # A has reserved its unit and is writing its run
            b_read.wait(30)
        return original_upsert(*args, **kwargs)

    def state_then_wait(runs: RunStore, day: date) -> Any:
        state = original_state(runs, day)
        merging = sys._getframe(1).f_code is UnitMerge.run.__code__  # not unfinished_units
        if threading.current_thread() is main and merging and not b_read.is_set():
            b_read.set()  # B's merge has read the state A's reservation left
            a_done.wait(30)
        return state

    monkeypatch.setattr(tables, "upsert", upsert_held)
    monkeypatch.setattr(RunStore, "state", state_then_wait)

    def merge_a() -> None:
        _merged_all(tables, only)
        a_done.set()

    worker = threading.Thread(target=merge_a)
    worker.start()
    assert a_in_window.wait(30)
    second = _report()
    DayCompaction(tables, "202402", only, second).run()
    worker.join(30)
    monkeypatch.undo()
    assert a_done.is_set()
    assert_runs_have_rows(tables, only)
    assert_exact(written, DATASET + LATE)
    compact(tables, as_of=NOW)
    assert_exact(written, DATASET + LATE)
    assert_clean(tables)


def test_verify_is_clean_after_a_merge_and_names_a_run_entry_of_an_uncommitted_blob(
    written: Runtime,
) -> None:
    compact(written.tables, as_of=NOW)
    report = verify(
        written.tables, written.archive, written.reader, since=None, until=None, now=NOW
    )
    assert report.ok, report.as_dict()
    # Take one blob's manifest away, as a repair un-commit would: its run entries dangle.
    month = "202402"
    manifest = next(iter(written.tables.query(month, FILTER_PARTITION, {"pk": "m10"})))
    written.tables.delete(month, [manifest])
    later = datetime.now(UTC) + timedelta(hours=1)  # the blob's writer is long gone
    report = verify(
        written.tables, written.archive, written.reader, since=None, until=None, now=later
    )
    dangling = [problem.name.split("/")[1] for problem in report.problems["dangling"]]
    assert any(partition.startswith(RUN_ROW) for partition in dangling), dangling
    # The repair re-archives the orphaned blob's records and writes the day's run again
    # without the blob: verify is clean, and each record is found once.
    done = repair(
        written.tables, written.archive, written.writer, report, apply=True, clock=lambda: later
    )
    assert not done.failed, done.as_dict()
    report = verify(
        written.tables, written.archive, written.reader, since=None, until=None, now=later
    )
    assert report.ok, report.as_dict()
    assert_exact(written, DATASET)


def test_verify_names_a_committed_run_without_rows_and_the_repair_heals_it(
    written: Runtime,
) -> None:
    """What a merge racing another left (found from outside): the day's state names a run
    whose rows are gone, so lookups of its values miss their records. `verify` said ok."""
    compact(written.tables, as_of=NOW)
    tables, month, day = written.tables, "202402", date(2024, 2, 10)
    state = RunStore(tables, month).state(day)
    (kind, prefix), run = next(iter(sorted(state.runs.items())))
    RunStore(tables, month).delete_run(kind, day, run)
    later = datetime.now(UTC) + timedelta(hours=1)
    report = verify(tables, written.archive, written.reader, since=None, until=None, now=later)
    assert not report.ok
    [problem] = report.problems["unindexed"]
    assert f"{kind}{prefix:x}" in problem.name and "2024-02-10" in problem.name
    assert problem.blobs  # the day's committed blobs: what the repair re-archives
    done = repair(tables, written.archive, written.writer, report, apply=True, clock=lambda: later)
    assert not done.failed, done.as_dict()
    report = verify(tables, written.archive, written.reader, since=None, until=None, now=later)
    assert report.ok, report.as_dict()
    assert_runs_have_rows(tables, day)
    assert_exact(written, DATASET)


def test_a_frequent_value_spans_many_run_rows_and_pages_through_them(
    archive_app: Runtime,
) -> None:
    """3,000 events of one subscription in a day: its places fill many 2 KB run rows, read a
    few first, then a page at a time; every record is found once, newest first."""
    records = frequent_day(archive_app, "44444444-4444-4444-4444-444444444444", "c")
    wanted = expected(records, subscription="44444444-4444-4444-4444-444444444444")
    query = parse_query(
        {**SPAN, "limit": "1000", "subscription": "44444444-4444-4444-4444-444444444444"}, NOW
    )
    assert all_pages(archive_app, query) == wanted


def test_the_kill_points_cover_the_whole_merge(archive_app: Runtime) -> None:
    records = [r for r in DATASET if r["TimeGenerated"].startswith("2024-02-1")]
    archive_app.writer.write(records)
    only = date(2024, 2, 10)
    DayCompaction(archive_app.tables, "202402", only, _report()).run()
    archive_app.writer.write(list(LATE))
    calls: list[str] = []
    for name in _MUTATIONS:
        original = getattr(archive_app.tables, name)

        def counted(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            calls.append(_name)
            return _original(*args, **kw)

        setattr(archive_app.tables, name, counted)
    DayCompaction(archive_app.tables, "202402", only, _report()).run()
    assert len(calls) == KILL_POINTS, calls


def test_a_page_filled_by_its_newest_day_reads_no_other_days_run(archive_app: Runtime) -> None:
    """A frequent value (a subscription, a status) whose newest day fills the page: the page
    reads that day's run only, not a wave of older days' (each as big, at scale)."""
    subscription = "55555555-5555-5555-5555-555555555555"

    def eight_days(i: int) -> str:
        return f"2024-02-{1 + i % 8:02d}T{i // 8 % 24:02d}:{i % 60:02d}:00.{i:07d}Z"

    records = frequent_day(archive_app, subscription, "w", eight_days, (1600, 800))
    runs_read: set[str] = set()
    original = archive_app.tables.query

    def watched(month: str, query: str, parameters: dict[str, Any], **kwargs: Any) -> Any:
        if str(parameters.get("pk", "")).startswith(RUN_ROW):
            runs_read.add(str(parameters["pk"]))
        return original(month, query, parameters, **kwargs)

    archive_app.tables.query = watched  # type: ignore[method-assign,assignment]
    query = parse_query(
        {**SPAN, "until": "2024-02-09T00:00:00Z", "limit": "100", "subscription": subscription},
        NOW,
    )
    page = run_query(query, tables=archive_app.tables, reader=archive_app.reader)
    assert [r["EventKey"] for r in page.records] == expected(records, subscription=subscription)[
        :100
    ]
    assert runs_read == {"ys08"}, runs_read  # the subscription's run of 8 February alone


def test_a_run_replaced_between_two_reads_of_one_lookup_loses_nothing(
    archive_app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frequent value's run is read in several requests (a row first here, then the rest).
    A merge that replaces the run between them (a late event of the day) deletes the rows
    the next would read: the lookup goes on with the successor, from where it was."""
    monkeypatch.setattr(postings_read, "_RUN_PAGE", 1)  # the page needs a second request
    subscription = "66666666-6666-6666-6666-666666666666"
    records = frequent_day(archive_app, subscription, "r")
    late = make_record("2024-02-12T23:30:00.0000000Z", subscription=subscription, correlation="z")
    tables = archive_app.tables
    original = tables.query
    replaced: list[int] = []

    def merge_between(month: str, query: str, parameters: dict[str, Any], **kwargs: Any) -> Any:
        second_read = kwargs.get("page_size", 0) > 1 and str(parameters.get("pk")) == "ys12"
        if second_read and not replaced:
            replaced.append(1)
            tables.query = original  # type: ignore[method-assign]
            archive_app.writer.write([late])
            report = _report()
            DayCompaction(tables, "202402", date(2024, 2, 12), report).run()
            assert report.units, "the late event's merge replaced no run"
        return original(month, query, parameters, **kwargs)

    tables.query = merge_between  # type: ignore[method-assign,assignment]
    query = parse_query({**SPAN, "limit": "1000", "subscription": subscription}, NOW)
    found = all_pages(archive_app, query)
    tables.query = original  # type: ignore[method-assign]
    assert replaced, "the lookup read its run in one request: nothing was tested"
    # The late event, newest of all, came after the lookup had passed its second: it may be
    # found (a lookup that read the successor from the start) or not, and nothing else differs.
    assert found in (
        expected(records, subscription=subscription),
        expected([*records, late], subscription=subscription),
    )


def test_a_lookup_never_reads_part_of_a_run_being_deleted(
    archive_app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replaced run's rows go in several transactions (a big run: hundreds). A lookup that
    reads the old run between two of them finds it whole or gone (and goes on with its
    successor), never a part: the rows go from the last (`{run}~`) down, one transaction
    after another, so a row read means every row below it was there when it was read."""
    monkeypatch.setattr(index_tables, "MAX_BATCH", 2)  # the run's rows in many transactions
    monkeypatch.setattr(archive_app.tables, "_parallelism", 1)  # each checked before the next
    subscription = "77777777-7777-7777-7777-777777777777"
    day = date(2024, 2, 12)
    records = frequent_day(archive_app, subscription, "d")
    tables = archive_app.tables
    digest = value_hash(subscription)[1]
    unit = ("s", prefix_of(digest))
    old_run = RunStore(tables, "202402").state(day).runs[unit]
    late = make_record("2024-02-12T23:30:00.0000000Z", subscription=subscription, correlation="y")
    before = {
        (ref, place) for ref, places in _places(tables, digest, day, old_run) for place in places
    }
    assert len(before) == len(records)
    seen: list[int] = []
    real_submit = table_changesets.submit

    def watched(table: Any, operations: list[Any]) -> list[str]:
        answer = real_submit(table, operations)
        if (
            operations
            and operations[0][0] == "delete"
            and operations[0][1]["PartitionKey"] == run_partition("s", day)
        ):
            got = {(r, p) for r, places in _places(tables, digest, day, old_run) for p in places}
            assert before <= got, f"{len(before - got)} places missing after a delete"
            seen.append(len(got))
        return answer

    monkeypatch.setattr(index_tables, "submit", watched)
    archive_app.writer.write([late])
    report = _report()
    DayCompaction(tables, "202402", day, report).run()
    assert report.units
    assert len(seen) >= 3, seen  # the old run went in several transactions, each checked


def _places(
    tables: IndexTables, digest: bytes, day: date, run: int
) -> list[tuple[Any, list[tuple[int, int]]]]:
    return run_places(tables, ("s", digest), day, run)


def test_a_page_of_a_frequent_value_reads_the_rows_it_returns_not_its_day(
    archive_app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value with most of a day (a subscription, a status): its run rows hold its places
    newest first, so a page reads the rows of the places it returns (and a page starting
    inside the day skips to its second), not the day's every row; paging through the day
    finds every record once, newest first."""
    monkeypatch.setattr(runs, "ROW_BYTES", 256)  # 3,000 places: some fifty rows
    monkeypatch.setattr(runs, "_PLACES_A_PIECE", 60)
    subscription = "88888888-8888-8888-8888-888888888888"
    records = frequent_day(archive_app, subscription, "p")
    tables = archive_app.tables
    original = tables.query
    rows_read: list[int] = [0]

    def counted(month: str, query: str, parameters: dict[str, Any], **kwargs: Any) -> Any:
        for row in original(month, query, parameters, **kwargs):
            rows_read[-1] += str(parameters.get("pk")) == "ys12"
            yield row

    monkeypatch.setattr(tables, "query", counted)
    run_rows = sum(1 for _ in original("202402", FILTER_PARTITION, {"pk": "ys12"}))
    assert run_rows >= 40, run_rows
    query = parse_query({**SPAN, "limit": "100", "subscription": subscription}, NOW)
    found = all_pages(archive_app, query, lambda: rows_read.append(0))
    assert found == expected(records, subscription=subscription)
    assert max(rows_read) <= 8, rows_read  # a page's rows: about 100 places' worth, and a seek
