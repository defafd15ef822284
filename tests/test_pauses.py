"""Pauses: a writer frozen at each step of its write (a frozen VM, a long GC pause, an SDK
stuck in retries) past the takeover time, while another path, a retry of the same input,
retention's sweep or `verify --repair` runs; then resumed. Nothing may be archived twice or
lost, and `verify` ends clean: the commit is fenced by its manifest row's ETag, not a clock.

The writer runs in a thread of its own and blocks just before the chosen storage call; what
runs meanwhile sees the world an hour later (its clock, or retention's `as_of`), so the frozen
writer's rows are as stale as a 15-minute pause would make them.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.bootstrap import Runtime, build_runtime
from shared.core.archive_keys import STATE, pack_ids, unpack_ids
from shared.core.normalize import normalize_input
from shared.core.records import NormalizedRecord
from shared.core.retention_policy import RetentionPolicy
from shared.core.written import WriteResult
from shared.services.archive_write import ArchiveWriter, ClaimedElsewhere
from shared.services.delivery import DeliveryReport, EventBody, deliver
from shared.services.repair import repair
from shared.services.retention import enforce_retention
from shared.services.verify import verify
from shared.services.verify_report import VerifyReport
from tests.archive_view import archived_keys, claim_rows, committed_blobs
from tests.events import activity_event, envelope

LATER = timedelta(hours=1)  # past CLAIM_TIMEOUT (15 minutes) for whatever runs meanwhile
# A write's storage calls, in order: the method of the runtime's adapter that makes each.
STEPS = {
    "begin": ("tables", "insert_rows"),
    "claims": ("claim_logs", "append"),  # the writer's claim logs: its lane's transaction
    "uploads": ("archive", "put"),
    "postings": ("tables", "upsert"),
    "commit": ("tables", "replace_if"),
}


def records_of(numbers: range) -> list[NormalizedRecord]:
    return normalize_input(envelope([activity_event(n) for n in numbers]), "x")[0]


@dataclass
class Frozen:
    """A writer in a thread, frozen before its first call of one step until released."""

    instance: Runtime
    step: str
    records: list[NormalizedRecord]
    at_step: threading.Event = field(default_factory=threading.Event)
    go: threading.Event = field(default_factory=threading.Event)
    outcome: list[Any] = field(default_factory=list)
    thread: threading.Thread | None = None
    work: Callable[[], Any] | None = None  # what the thread runs; the instance's write if None

    def start(self) -> Frozen:
        adapter, method = STEPS[self.step]
        target = (
            self.instance.writer._claims.logs
            if adapter == "claim_logs"
            else getattr(self.instance, adapter)
        )
        real = getattr(target, method)
        frozen = threading.Event()

        def call(*args: Any, **kwargs: Any) -> Any:
            fencing = self.step == "commit" and STATE in args[1]  # replace_if also fences
            if not frozen.is_set() and not fencing:
                frozen.set()
                self.at_step.set()
                assert self.go.wait(120), "never released"
            return real(*args, **kwargs)

        object.__setattr__(target, method, call)
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        assert self.at_step.wait(60), f"the writer never reached {self.step}"
        return self

    def _run(self) -> None:
        try:
            work = self.work or (lambda: self.instance.writer.write(self.records))
            self.outcome.append(work())
        except BaseException as error:  # surfaced by resume()
            self.outcome.append(error)

    def resume(self) -> Any:
        self.go.set()
        assert self.thread is not None
        self.thread.join(timeout=120)
        assert self.outcome, "the writer did not finish"
        return self.outcome[0]


def killed_before_commit(app: Runtime, records: list[NormalizedRecord]) -> None:
    """A write of its own instance killed at its commit: pending row, claims, blob, postings."""
    crashed = build_runtime(app.settings)

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("killed")

    object.__setattr__(crashed.tables, "replace_if", crash)
    with pytest.raises(RuntimeError):
        crashed.writer.write(records)


def later_writer(app: Runtime) -> ArchiveWriter:
    return ArchiveWriter(app.tables, app.archive, clock=lambda: datetime.now(UTC) + LATER)


def verified(app: Runtime, now: datetime | None = None) -> VerifyReport:
    return verify(
        app.tables,
        app.archive,
        app.reader,
        since=None,
        until=None,
        now=now or datetime.now(UTC),
    )


def sweep(app: Runtime) -> None:
    """Retention an hour later: nothing is due (years kept), its orphan sweep runs."""
    report = enforce_retention(app.stores, RetentionPolicy(3650), as_of=datetime.now(UTC) + LATER)
    assert report.complete


def assert_once_and_clean(app: Runtime, records: list[NormalizedRecord]) -> None:
    """Each event archived once, nothing else; verify clean now and an hour from now."""
    keys = archived_keys(app)
    doubled = sorted(key for key, count in Counter(keys).items() if count > 1)
    assert doubled == [], f"{len(doubled)} events archived twice"
    assert sorted(set(keys)) == sorted({r["EventKey"] for r in records}), "events lost"
    for now in (datetime.now(UTC), datetime.now(UTC) + LATER):
        report = verified(app, now)
        assert report.ok, {kind: report.problems[kind][:3] for kind in report.counts}


def finish(app: Runtime, records: list[NormalizedRecord]) -> None:
    """What a user's system does next: the frozen input retried later, then retention."""
    later_writer(app).write(records)
    sweep(app)


# --- while a writer is frozen: another path, a retry, retention, repair -------------------------


def backfill(app: Runtime, records: list[NormalizedRecord]) -> None:
    """The same events and fifty more (the PT1H.json blob), an hour later: another plan."""
    more = records_of(range(1000, 1050))
    written = later_writer(build_runtime(app.settings)).write(records + more)
    assert len(written.indexed) + len(written.existing) == len(records) + len(more)


def retry_same(app: Runtime, records: list[NormalizedRecord]) -> None:
    """The same input again at once (a redelivery): the same plan, taken over without waiting."""
    written = build_runtime(app.settings).writer.write(records)
    assert len(written.indexed) + len(written.existing) == len(records)


def retention(app: Runtime, records: list[NormalizedRecord]) -> None:
    sweep(app)


def repair_later(app: Runtime, records: list[NormalizedRecord]) -> None:
    later = datetime.now(UTC) + LATER
    instance = build_runtime(app.settings)
    report = verified(instance, later)
    writer = ArchiveWriter(instance.tables, instance.archive, clock=lambda: later)
    repair(instance.tables, instance.archive, writer, report, apply=True)


MEANWHILE: dict[str, Callable[[Runtime, list[NormalizedRecord]], None]] = {
    "backfill": backfill,
    "retry-same": retry_same,
    "retention": retention,
    "repair": repair_later,
}


@pytest.mark.parametrize("meanwhile", list(MEANWHILE))
@pytest.mark.parametrize("step", list(STEPS))
def test_a_writer_frozen_at_each_step_then_resumed_archives_each_event_once(
    app: Runtime, step: str, meanwhile: str
) -> None:
    records = records_of(range(200))
    frozen = Frozen(build_runtime(app.settings), step, records).start()
    MEANWHILE[meanwhile](app, records)
    outcome = frozen.resume()
    assert isinstance(outcome, Exception) is isinstance(outcome, ClaimedElsewhere), outcome
    finish(app, records)
    extra = records_of(range(1000, 1050)) if meanwhile == "backfill" else []
    assert_once_and_clean(app, records + extra)


def test_a_writer_frozen_at_its_commit_is_fenced_by_the_taker_and_removes_its_blob(
    app: Runtime,
) -> None:
    records = records_of(range(200))
    frozen = Frozen(build_runtime(app.settings), "commit", records).start()
    names_before = {blob.name for blob in app.archive.blobs()}
    assert len(names_before) == 1  # uploaded, not committed
    backfill(app, records)
    outcome = frozen.resume()
    assert isinstance(outcome, ClaimedElsewhere), "a fenced writer committed"
    assert "taken over" in str(outcome)
    assert not names_before & {blob.name for blob in app.archive.blobs()}, "its blob stayed"
    assert_once_and_clean(app, records + records_of(range(1000, 1050)))


def test_two_takeovers_in_a_row_while_both_earlier_writers_are_frozen(app: Runtime) -> None:
    records = records_of(range(120))
    first = Frozen(build_runtime(app.settings), "uploads", records).start()
    second_instance = build_runtime(app.settings)
    object.__setattr__(second_instance, "writer", later_writer(second_instance))
    second = Frozen(second_instance, "commit", records[:80]).start()  # takes 80 over
    third = ArchiveWriter(app.tables, app.archive, clock=lambda: datetime.now(UTC) + 2 * LATER)
    assert len(third.write(records[40:]).indexed) == 80  # takes 40 from each over, once
    assert isinstance(second.resume(), ClaimedElsewhere)
    assert isinstance(first.resume(), ClaimedElsewhere)
    finish(app, records)
    assert_once_and_clean(app, records)


def test_a_crash_then_the_same_input_frozen_then_retention_then_resumed(app: Runtime) -> None:
    """Killed before its manifest; the same input again while the claims are young, frozen
    at its manifest past the takeover time; retention sweeps; resumed."""
    records = records_of(range(200))
    killed_before_commit(app, records)
    frozen = Frozen(build_runtime(app.settings), "commit", records).start()
    sweep(app)
    assert isinstance(frozen.resume(), ClaimedElsewhere)
    finish(app, records)
    assert_once_and_clean(app, records)


def test_retention_frozen_before_its_fence_never_deletes_a_blob_committed_meanwhile(
    app: Runtime,
) -> None:
    """Retention judges a pending blob stale and is frozen before it fences it; the writer
    resumes and commits first; retention's fence then fails and the blob stays."""
    records = records_of(range(50))
    writer = Frozen(build_runtime(app.settings), "commit", records).start()
    sweeper = build_runtime(app.settings)
    at_fence, go = threading.Event(), threading.Event()
    real = type(sweeper.tables).replace_if

    def frozen_fence(self: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not writer.thread:
            at_fence.set()
            assert go.wait(60)
        return real(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(sweeper.tables), "replace_if", frozen_fence)
        swept = threading.Thread(target=sweep, args=(sweeper,))
        swept.start()
        assert at_fence.wait(60)
        assert not isinstance(writer.resume(), Exception)  # committed before the fence
        go.set()
        swept.join(timeout=60)
    assert_once_and_clean(app, records)


def test_two_live_writers_of_one_hour_with_different_plans_never_share_a_blob(
    app: Runtime,
) -> None:
    """The blob-id sibling: tenant-level events in the PT1H.json blobs of two subscriptions;
    one backfill frozen at its upload, the other runs to the end, the first resumes."""
    tenant_level = [
        activity_event(n, resourceId=f"/providers/Microsoft.Management/managementGroups/mg-{n}")
        for n in range(12)
    ]
    body = envelope(tenant_level)
    of_a = normalize_input(body, "a", "11111111-1111-4111-8111-111111111111")[0]
    of_b = normalize_input(body, "b", "22222222-2222-4222-8222-222222222222")[0]
    frozen = Frozen(build_runtime(app.settings), "uploads", of_a).start()
    assert len(later_writer(build_runtime(app.settings)).write(of_b).indexed) == 12
    assert isinstance(frozen.resume(), ClaimedElsewhere)
    assert_once_and_clean(app, of_b)


# --- an Event Hub invocation's last attempt, frozen or held up ---------------------------------


def bodies_of(numbers: range, size: int = 50) -> list[EventBody]:
    return [
        EventBody(envelope([activity_event(n) for n in range(start, start + size)]), "0", start)
        for start in range(numbers.start, numbers.stop, size)
    ]


def last_attempt(instance: Runtime, bodies: list[EventBody]) -> Callable[[], Any]:
    return lambda: deliver(
        bodies, writer=instance.writer, deadletters=instance.deadletters, final_attempt=True
    )


def test_a_last_attempt_frozen_and_taken_over_dead_letters_nothing_archived(
    app: Runtime,
) -> None:
    # Found from outside: the fenced write's ClaimedElsewhere was taken for storage down, and
    # every body dead-lettered although the taker had archived each event: 200 events both
    # archived and in letters, until someone replayed them.
    records = records_of(range(200))
    instance = build_runtime(app.settings)
    frozen = Frozen(instance, "commit", records, work=last_attempt(instance, bodies_of(range(200))))
    frozen.start()
    backfill(app, records)  # an hour later: takes the 200 over, archives them
    report = frozen.resume()
    assert isinstance(report, DeliveryReport), report
    assert (report.deadlettered, report.duplicates) == (0, 200)
    assert list(app.deadletters.list()) == []
    assert_once_and_clean(app, records + records_of(range(1000, 1050)))


def test_a_last_attempt_held_up_by_a_live_writer_waits_for_its_commit(app: Runtime) -> None:
    # The sibling: the same events in a live writer's hands (not stale: nothing to take over).
    # It commits within seconds; the last attempt tries again meanwhile, as the blob path
    # does, and letters nothing.
    records, more = records_of(range(100)), records_of(range(1000, 1050))
    # Another plan (a PT1H.json blob: the same events and more): nothing to take over at once.
    holder = Frozen(build_runtime(app.settings), "uploads", records + more).start()
    threading.Timer(0.5, holder.go.set).start()  # the holder goes on half a second later
    report = last_attempt(build_runtime(app.settings), bodies_of(range(100)))()
    assert isinstance(holder.resume(), WriteResult)
    assert (report.deadlettered, report.duplicates) == (0, 100)
    assert list(app.deadletters.list()) == []
    assert_once_and_clean(app, records + more)


class StoppedOnce(ArchiveWriter):
    """A writer whose first write commits half the events, then is stopped (taken over) for
    the rest; the next write finds that half archived and writes the other."""

    def write(self, records: Sequence[NormalizedRecord]) -> WriteResult:
        half = len(records) // 2
        if not getattr(self, "stopped", False):
            self.stopped = True
            done = WriteResult(indexed=list(records[:half]))
            raise ClaimedElsewhere("taken over", written=done)
        earlier = list(records[:half])
        return WriteResult(indexed=list(records[half:]), duplicates=earlier, existing=earlier)


def test_a_write_tried_again_counts_what_its_stopped_try_committed_as_indexed(
    app: Runtime,
) -> None:
    # Found from outside: three `ingest` runs of the same 20,000 events at once archived each
    # once, but their summaries said 16,467 to 19,148 indexed: a try that committed some blobs
    # and was then stopped had its indexed records counted as the next try's duplicates.
    records = records_of(range(40))
    written = StoppedOnce(app.tables, app.archive).write_when_free(records)
    assert (len(written.indexed), written.duplicates, written.existing) == (40, [], [])


class PartlyCommitted:
    """A writer whose write committed the first body's events, then was fenced (taken over)
    for the rest, still after its tries within seconds."""

    def __init__(self, committed: list[NormalizedRecord]) -> None:
        self.committed = committed

    def write_when_free(self, records: list[NormalizedRecord]) -> WriteResult:
        raise ClaimedElsewhere("taken over", written=WriteResult(indexed=self.committed))


def test_a_last_attempt_letters_only_the_bodies_its_write_did_not_commit(app: Runtime) -> None:
    first, second = bodies_of(range(100))
    committed = normalize_input(first.body, first.source)[0]
    writer: Any = PartlyCommitted(committed)
    report = deliver([first, second], writer=writer, deadletters=app.deadletters)
    assert (report.indexed, report.deadlettered) == (50, 50)
    [letter] = app.deadletters.list()
    assert letter.raw_bytes == second.body  # the body not committed, whole


def test_a_body_partly_committed_is_lettered_whole_and_each_record_counted_once(
    app: Runtime,
) -> None:
    first, second = bodies_of(range(100))
    committed = [
        *normalize_input(first.body, first.source)[0],
        *normalize_input(second.body, second.source)[0][:25],
    ]
    writer: Any = PartlyCommitted(committed)
    report = deliver([first, second], writer=writer, deadletters=app.deadletters)
    assert (report.events, report.indexed, report.deadlettered) == (100, 75, 25)
    [letter] = app.deadletters.list()
    assert letter.raw_bytes == second.body  # whole: a replay counts its 25 as duplicates


def test_verify_repair_is_a_dry_run_until_applied_and_loses_no_event(app: Runtime) -> None:
    """A write killed before its commit, never retried: verify an hour later names its blob
    orphaned; --repair says what it would do and changes nothing; applied, the events the
    orphan held are archived once in a blob of their own and verify is clean."""
    records = records_of(range(30))
    killed_before_commit(app, records)
    later = datetime.now(UTC) + LATER
    report = verified(app, later)
    assert report.counts["orphaned"] == 1 and not report.ok
    writer = ArchiveWriter(app.tables, app.archive, clock=lambda: later)
    dry = repair(app.tables, app.archive, writer, report, apply=False)
    assert [a.kind for a in dry.actions] == ["orphaned"] and dry.rearchived == 0
    assert verified(app, later).counts["orphaned"] == 1  # nothing changed
    done = repair(app.tables, app.archive, writer, report, apply=True)
    assert (done.rearchived, done.failed) == (30, [])
    assert_once_and_clean(app, records)


def test_a_repair_stopped_after_its_fence_loses_nothing_to_retentions_sweep(
    app: Runtime,
) -> None:
    """Found from outside: a repair fences a committed blob, then re-archives its records;
    stopped between the two (a kill, a storage error), the fenced blob was their only copy,
    and retention's sweep deleted it as abandoned: every record lost, without a letter. The
    sweep now leaves a blob a repair fenced, `verify` names it, and the repair finishes."""
    records = records_of(range(30))
    app.writer.write(records)
    [ref] = committed_blobs(app)
    [claim] = claim_rows(app, ref)
    ids = unpack_ids(bytes(claim["K"]))
    app.tables.upsert(ref.month, [{**claim, "K": pack_ids(ids[:3] + ids[4:])}])  # one lost
    later = datetime.now(UTC) + LATER
    damaged = verified(app, later)
    assert damaged.counts["unindexed"] == 1

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("killed")

    stopped = ArchiveWriter(app.tables, app.archive, clock=lambda: later)
    object.__setattr__(stopped, "write", killed)
    with pytest.raises(RuntimeError):
        repair(app.tables, app.archive, stopped, damaged, apply=True)
    sweep(app)  # retention an hour later: its orphan sweep
    report = verified(app, later)
    assert report.counts.get("orphaned") == 1, report.counts  # named, for the repair to finish
    writer = ArchiveWriter(app.tables, app.archive, clock=lambda: later)
    done = repair(app.tables, app.archive, writer, report, apply=True)
    assert done.failed == []
    assert_once_and_clean(app, records)


def test_a_late_write_into_a_day_retention_deletes_then_a_redelivery_is_expiring(
    app: Runtime,
) -> None:
    """Found from outside: retention deleting a day past its age takes the day's claim rows
    as it finds them, those of a write in flight too; that write commits after, without
    claims, and a redelivery archives its events again. Both copies are past retention and
    the next run deletes them: `verify` calls them `expiring`, not `duplicated`."""
    from shared.services.retention_audit import latest_deleting_as_of

    records = records_of(range(10))  # 2024-05-01: past 90 days, in a month that stays
    as_of, policy = datetime(2024, 7, 31, 12, tzinfo=UTC), RetentionPolicy(90)
    frozen = Frozen(build_runtime(app.settings), "commit", records).start()
    assert enforce_retention(app.stores, policy, as_of=as_of).complete
    assert isinstance(frozen.resume(), WriteResult)  # committed after its claims went
    build_runtime(app.settings).writer.write(records)  # a redelivery

    def judged() -> VerifyReport:
        ran = latest_deleting_as_of(app.stores.runs)
        return verify(app.tables, app.archive, app.reader, since=None, until=None,
                      now=as_of, policy=policy, retention_ran=ran)  # fmt: skip

    report = judged()
    assert report.ok and report.counts["expiring"] > 0, report.as_dict()["counts"]
    assert enforce_retention(app.stores, policy, as_of=as_of).complete
    assert archived_keys(app) == [] and judged().ok
