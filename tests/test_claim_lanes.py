"""Claim lanes: writers of one hour insert their claims without competing (a lane each), then
read, then decide. Each event stays archived once, and no append is lost to another writer."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from azure.data.tables import TableClient

from shared.adapters.index_tables import as_int, int64
from shared.bootstrap import Runtime, build_runtime
from shared.core.archive_keys import (
    EVENT_ID_BYTES,
    claim_row,
    event_id,
    pack_ids,
    slot_partition,
    unpack_ids,
)
from shared.core.normalize import normalize_input
from shared.core.records import NormalizedRecord
from shared.services import claims as claims_module
from shared.services.archive_write import ClaimedElsewhere, plan_blobs
from shared.services.instances import pending_row
from shared.services.verify import verify
from tests.archive_view import archived_keys, index_rows
from tests.events import activity_event, envelope

LOST_CODES = ("EntityAlreadyExists", "UpdateConditionNotSatisfied")


def records_of(numbers: range) -> list[NormalizedRecord]:
    """Administrative events `numbers` seconds into one hour (2024-05-01 10:00)."""
    return normalize_input(envelope([activity_event(n) for n in numbers]), "x")[0]


def claimer_of(instance: Runtime) -> Any:
    """The instance's claimer (shared.services.claims.Claimer): its lane, its claim logs."""
    return instance.writer._claims


def claim_logs_of(instance: Runtime) -> Any:
    """The instance's claim logs (shared.services.claim_log.ClaimLogs): `append` is the
    transaction that inserts its claims with its lane's registry row."""
    return claimer_of(instance).logs


@contextmanager
def lost_claim_inserts() -> Iterator[list[str]]:
    """Every claim insert (a transaction in a `k` slot partition) the service refused because
    another writer wrote first, whatever code made it: its error codes."""
    lost: list[str] = []
    lock = threading.Lock()
    real = TableClient.submit_transaction

    def submit(self: TableClient, operations: Any, **kwargs: Any) -> Any:
        operations = list(operations)
        try:
            return real(self, operations, **kwargs)
        except Exception as error:
            code = getattr(error, "error_code", None)
            first = operations[0][1] if operations else {}
            if code in LOST_CODES and str(first.get("PartitionKey", "")).startswith("k"):
                with lock:
                    lost.append(str(code))
            raise

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TableClient, "submit_transaction", submit)
        yield lost


def run_at_once(work: list[Callable[[], Any]]) -> list[Any]:
    """Each callable in a thread of its own, all released together; their results or errors."""
    start = threading.Barrier(len(work))
    results: list[Any] = [None] * len(work)

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = work[index]()
        except BaseException as error:  # returned to the test
            results[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def assert_clean(app: Runtime, records: list[NormalizedRecord]) -> None:
    keys = archived_keys(app)
    doubled = sorted(key for key, count in Counter(keys).items() if count > 1)
    assert doubled == [], f"{len(doubled)} events archived twice"
    assert sorted(set(keys)) == sorted({r["EventKey"] for r in records}), "events lost"
    report = verify(app.tables, app.archive, app.reader, since=None, until=None, now=now())
    assert report.ok and report.pending == 0, {k: report.problems[k][:3] for k in report.counts}


def now() -> datetime:
    return datetime.now(UTC)


# --- writers of one hour at once -------------------------------------------------------------


def test_eight_writers_of_one_hour_never_lose_an_append(app: Runtime) -> None:
    """Eight instances write distinct events of one hour at once, five batches each: no claim
    insert is refused (the target: at most 0.1 a write), none gives up, verify is clean."""
    instances = [build_runtime(app.settings) for _ in range(8)]
    batches = [
        [records_of(range(400 * w + 20 * b, 400 * w + 20 * b + 20)) for b in range(5)]
        for w in range(8)
    ]
    stats = getattr(claims_module, "CLAIM_STATS", None)
    lost_before = stats.lost_appends if stats is not None else None

    def writes(instance: Runtime, mine: list[list[NormalizedRecord]]) -> int:
        return sum(len(instance.writer.write(batch).indexed) for batch in mine)

    with lost_claim_inserts() as lost:
        results = run_at_once(
            [partial(writes, i, w) for i, w in zip(instances, batches, strict=True)]
        )
    assert results == [100] * 8, results
    assert len(lost) <= 0.1 * 40, f"{len(lost)} claim inserts lost in 40 writes: {lost[:5]}"
    assert lost == []
    assert stats is not None and stats.lost_appends == lost_before
    assert_clean(app, [r for mine in batches for batch in mine for r in batch])


def test_two_writers_of_the_same_events_archive_each_once_and_lose_no_append(
    app: Runtime,
) -> None:
    """Two instances write the same batch at once, four times (a redelivery to two hosts):
    each event once; a writer that finds the other's live claim retries; no insert lost."""
    records: list[NormalizedRecord] = []
    with lost_claim_inserts() as lost:
        for round_number in range(4):
            batch = records_of(range(100 * round_number, 100 * round_number + 50))
            records += batch
            writers = [build_runtime(app.settings).writer for _ in "ab"]

            def write(writer: Any, batch: list[NormalizedRecord] = batch) -> tuple[int, int]:
                for _ in range(100):
                    try:
                        result = writer.write(batch)
                    except ClaimedElsewhere:
                        time.sleep(random.uniform(0.01, 0.05))  # the caller's retry
                        continue
                    return len(result.indexed), len(result.existing)
                raise AssertionError("held for good")

            results = run_at_once([partial(write, w) for w in writers])
            assert all(isinstance(result, tuple) for result in results), results
            assert sum(indexed for indexed, _ in results) == 50, results
    assert lost == [], f"{len(lost)} claim inserts lost"
    assert_clean(app, records)


def hold_after_append(instance: Runtime, until: threading.Barrier) -> None:
    """Make an instance's first read of a claim log, and its claim append once applied,
    wait until `until` lets all go: so every writer has read the log before any appends,
    and has appended before any reads again, however late its thread starts."""
    logs = claim_logs_of(instance)
    real_read, real_append = logs.read, logs.append
    first_read = [True]

    def read(month: str, day: Any, partition: str) -> Any:
        slot = real_read(month, day, partition)
        if first_read[0]:
            first_read[0] = False
            until.wait(30)
        return slot

    def append(month: str, entities: Any, etag: str | None) -> str:
        answer = str(real_append(month, entities, etag))
        until.wait(30)
        return answer

    object.__setattr__(logs, "read", read)
    object.__setattr__(logs, "append", append)


def start_late(work: Callable[[], Any], seconds: float) -> Callable[[], Any]:
    """`work` after a pause: a thread the machine schedules late."""

    def late() -> Any:
        time.sleep(seconds)
        return work()

    return late


def test_two_attempts_at_one_input_at_once_see_each_other_and_exactly_one_proceeds(
    app: Runtime,
) -> None:
    """Two attempts at the same input (same plan) both claim before either reads: each sees
    the other's pending blob. Only the later one takes the earlier over; never both."""
    records = records_of(range(30))
    instances = [build_runtime(app.settings) for _ in "ab"]
    both_claimed = threading.Barrier(2)
    for instance in instances:
        hold_after_append(instance, both_claimed)
    first, second = (partial(i.writer.write, records) for i in instances)
    results = run_at_once([first, start_late(second, 1.0)])
    written = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(written) == 1 and len(refused) == 1, results
    assert isinstance(refused[0], ClaimedElsewhere), refused
    assert len(written[0].indexed) == 30
    assert_clean(app, records)


def test_two_writers_of_different_plans_that_see_each_other_one_gives_way(
    app: Runtime,
) -> None:
    """Overlapping batches (different plans) claimed by both before either reads: each sees
    the other's live claims. The younger gives way at once; the older waits for that and
    goes on (so retries on the same schedule cannot keep both from progressing)."""
    records = records_of(range(40))
    batches = [records[:30], records[10:]]
    instances = [build_runtime(app.settings) for _ in "ab"]
    both_claimed = threading.Barrier(2)
    for instance in instances:
        hold_after_append(instance, both_claimed)
    first, second = (partial(i.writer.write, b) for i, b in zip(instances, batches, strict=True))
    results = run_at_once([first, start_late(second, 1.0)])
    refused = [n for n, result in enumerate(results) if isinstance(result, BaseException)]
    assert len(refused) == 1 and isinstance(results[refused[0]], ClaimedElsewhere), results
    [went_on] = {0, 1} - set(refused)
    assert len(results[went_on].indexed) == 30
    retry = app.writer.write(batches[refused[0]])
    assert (len(retry.indexed), len(retry.existing)) == (10, 20)
    assert_clean(app, records)


# --- lanes ------------------------------------------------------------------------------------


def test_a_lane_two_processes_drew_alike_is_safe(
    app: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """Two instances with the same lane: the second one's insert is refused as a whole, it is
    counted and logged as a lost append, and it goes on in a new lane; nothing doubles."""
    a, b = build_runtime(app.settings), build_runtime(app.settings)
    claimer_of(a).lane = claimer_of(b).lane = "aaaaaaaa"
    records = records_of(range(60))
    stats = getattr(claims_module, "CLAIM_STATS", None)
    lost_before = stats.lost_appends if stats is not None else None
    assert len(a.writer.write(records[:20]).indexed) == 20
    with caplog.at_level(logging.INFO, logger="shared.services.claims"):
        second = b.writer.write(records[10:40])  # ten of a's events, twenty new
    assert (len(second.indexed), len(second.existing)) == (20, 10)
    assert stats is not None and lost_before is not None
    assert stats.lost_appends == lost_before + 1
    assert "claim append lost" in caplog.text
    assert claimer_of(b).lane != "aaaaaaaa" and claimer_of(a).lane == "aaaaaaaa"
    assert len(a.writer.write(records[40:]).indexed) == 20  # a's lane goes on, If-Match
    lanes = sorted(row["RowKey"] for row in index_rows(app, "k") if row["RowKey"][0] == "l")
    assert lanes == sorted(["laaaaaaaa", f"l{claimer_of(b).lane}"])
    assert_clean(app, records)


def test_claims_go_to_the_writers_lane_with_its_registry_row(app: Runtime) -> None:
    records = records_of(range(10))
    app.writer.write(records[:5])
    app.writer.write(records[5:])
    from shared.core.archive_keys import LANE_CHARS, claim_key

    lane = claimer_of(app).lane
    rows = {row["RowKey"]: row for row in index_rows(app, "k")}
    assert sorted(rows) == [claim_row(1, lane), claim_row(2, lane), f"l{lane}"]
    assert len(lane) == LANE_CHARS and claim_key(claim_row(2, lane)) == (lane, 2)
    assert as_int(rows[f"l{lane}"]["N"]) == 2


def test_old_sequence_rows_and_their_releases_are_still_honoured(app: Runtime) -> None:
    """Rows of the layout before lanes (`c{sequence:07d}`, release rows `R`) beside a lane's:
    an old claim of a live pending blob holds its event, a released one does not, and a
    release takes back old numbers only (not a lane's row of the same number)."""
    held, released, before, laned, free = records_of(range(5))
    old_blob, laned_blob = (plan_blobs([r])[0].ref for r in (held, laned))
    partition = slot_partition(held["TimeGenerated"])
    month = old_blob.month

    def claim(ref: Any, row: str, record: NormalizedRecord) -> dict[str, Any]:
        ids = pack_ids([event_id(record["EventKey"])])
        return {
            "PartitionKey": partition,
            "RowKey": row,
            "B": int64(ref.blob_id),
            "C": ref.code,
            "K": ids,
        }

    for ref in (old_blob, laned_blob):  # live writers' blobs (young pending rows)
        app.tables.insert_rows(month, [pending_row(ref, plan=1)])
    app.tables.insert_rows(
        month,
        [
            claim(old_blob, claim_row(1), held),
            claim(old_blob, claim_row(2), released),
            {"PartitionKey": partition, "RowKey": claim_row(3), "R": (2).to_bytes(4, "big")},
            claim(laned_blob, claim_row(1, "bbbbbbbb"), before),
            claim(laned_blob, claim_row(2, "bbbbbbbb"), laned),  # number 2, of a lane
            {"PartitionKey": partition, "RowKey": "lbbbbbbbb", "N": 2},
        ],
    )
    with pytest.raises(ClaimedElsewhere) as error:
        app.writer.write([held, released, laned, free])
    assert sorted(error.value.event_keys) == sorted(r["EventKey"] for r in (held, laned))
    written = app.writer.write([released, free])
    assert len(written.indexed) == 2
    lanes = {row["RowKey"] for row in index_rows(app, "k") if row["RowKey"][0] == "l"}
    assert lanes == {"lbbbbbbbb", f"l{claimer_of(app).lane}"}  # old rows beside lanes


# --- the index of a slot's events ------------------------------------------------------------


def test_the_event_index_finds_every_claim_of_an_event_and_no_straddling_match() -> None:
    from shared.services.claim_log import ClaimIndex

    events = [os.urandom(EVENT_ID_BYTES) for _ in range(2000)]
    index = ClaimIndex()
    index.add(pack_ids(events[:1000]), 0)
    index.add(pack_ids(events[500:2000]), 1)
    assert index.numbers(events[0]) == [0]
    assert index.numbers(events[700]) == [0, 1]
    assert index.numbers(events[1999]) == [1]
    assert index.numbers(os.urandom(EVENT_ID_BYTES)) == []
    # The end of one entry and its claim number read as an id of the same bucket: no match,
    # until that id is claimed itself.
    head = bytes([7, 1, 2, 3, 7]) + os.urandom(7)
    straddling = head[4:] + (5).to_bytes(4, "big")
    index = ClaimIndex()
    index.add(head, 5)
    assert index.numbers(head) == [5] and index.numbers(straddling) == []
    index.add(straddling, 6)
    assert index.numbers(straddling) == [6]


def test_a_claim_found_archived_after_the_insert_is_rewritten_to_what_the_blob_owns(
    app: Runtime,
) -> None:
    """A writer knows the hour (its cache), inserts claims for two events; meanwhile another
    instance archived one of them: the first writer's claim row ends listing only the other,
    so a committed blob's claims list exactly its events."""
    warm, a, b = records_of(range(3))
    app.writer.write([warm])  # the hour is known here now
    other = build_runtime(app.settings)
    logs = claim_logs_of(app)
    real = logs.append
    done: list[int] = []

    def append(month: str, entities: Any, etag: str | None) -> str:
        if not done:  # the other instance archives `a` before this insert lands
            done.append(len(other.writer.write([a]).indexed))
        return str(real(month, entities, etag))

    object.__setattr__(logs, "append", append)
    written = app.writer.write([a, b])
    assert done == [1]
    assert [r["EventKey"] for r in written.existing] == [a["EventKey"]]
    assert [r["EventKey"] for r in written.indexed] == [b["EventKey"]]
    lane = claimer_of(app).lane
    mine = [row for row in index_rows(app, "k") if row["RowKey"] == claim_row(2, lane)]
    assert [unpack_ids(bytes(row["K"])) for row in mine] == [[event_id(b["EventKey"])]]
    assert_clean(app, [warm, a, b])
