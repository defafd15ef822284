"""The archive writer on Azurite: each event archived and indexed once, crashes repaired."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.bootstrap import Runtime, build_runtime
from shared.core.archive_keys import PENDING, STATE
from shared.core.normalize import normalize_input
from shared.core.records import NormalizedRecord
from shared.services.archive_write import ArchiveWriter, ClaimedElsewhere
from tests.archive_view import archived_keys, committed_blobs, index_rows
from tests.events import activity_event, envelope


def _records(numbers: range, **overrides: object) -> list[NormalizedRecord]:
    records, rejections = normalize_input(
        envelope([activity_event(n, **overrides) for n in numbers]), "test"
    )
    assert not rejections
    return records


def test_each_record_is_archived_once_and_reads_back(app: Runtime) -> None:
    records = _records(range(300))
    first = app.writer.write(records)
    assert len(first.indexed) == 300 and not first.duplicates
    again = app.writer.write(records + records[:5])
    assert not again.indexed and len(again.duplicates) == 305 and len(again.existing) == 300
    keys = archived_keys(app)
    assert keys == sorted(r["EventKey"] for r in records)
    [ref] = committed_blobs(app)
    places = [(ref, ordinal) for ordinal in range(len(records))]
    fetched = app.reader.fetch(places)
    assert sorted(r["EventKey"] for r in fetched if isinstance(r, dict)) == sorted(
        r["EventKey"] for r in records
    )


def test_a_different_grouping_of_the_same_events_is_all_duplicates(app: Runtime) -> None:
    records = _records(range(50))
    app.writer.write(records[:30])
    second = app.writer.write(records[20:])
    assert len(second.indexed) == 20 and len(second.existing) == 10
    assert sorted(archived_keys(app)) == sorted(r["EventKey"] for r in records)


def test_a_write_stopped_before_its_commit_is_finished_by_the_retry(
    app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _records(range(40))
    monkeypatch.setattr(app.tables, "replace_if", _fail_on_commit(app.tables.replace_if))
    with pytest.raises(RuntimeError):
        app.writer.write(records)
    monkeypatch.undo()
    assert archived_keys(app) == []  # uploaded, not committed: not there
    retry = app.writer.write(records)
    assert len(retry.indexed) == 40
    assert sorted(archived_keys(app)) == sorted(r["EventKey"] for r in records)


def test_a_fresh_claim_of_another_blob_is_left_to_its_writer_then_taken_over(
    app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _records(range(10))
    monkeypatch.setattr(app.tables, "replace_if", _fail_on_commit(app.tables.replace_if))
    with pytest.raises(RuntimeError):
        app.writer.write(records)  # claims all ten for a blob it never commits
    monkeypatch.undo()
    with pytest.raises(ClaimedElsewhere):
        app.writer.write(records[:5])  # another grouping: another blob
    later = ArchiveWriter(
        app.tables, app.archive, clock=lambda: datetime.now(UTC) + timedelta(hours=1)
    )
    taken = later.write(records[:5])
    assert len(taken.indexed) == 5
    rest = later.write(records)
    assert len(rest.indexed) == 5 and len(rest.existing) == 5
    assert sorted(archived_keys(app)) == sorted(r["EventKey"] for r in records)


def _fail_on_commit(replace_if: Callable[..., Any]) -> Callable[..., Any]:
    """`IndexTables.replace_if`, failing when it would commit a manifest (not when it fences):
    a crash before the commit."""

    def failing(month: str, entity: dict[str, Any], etag: str) -> Any:
        if STATE not in entity:
            raise RuntimeError("stopped before the commit")
        return replace_if(month, entity, etag)

    return failing


def test_a_writer_that_knows_an_old_log_rereads_it_and_doubles_nothing(app: Runtime) -> None:
    """Two processes (two writers, two claim caches): the one whose cache is behind finds out
    by its failed append, reads what is new and takes none of the other's events."""
    records = _records(range(60))
    first = ArchiveWriter(app.tables, app.archive)
    second = ArchiveWriter(app.tables, app.archive)
    first.write(records[:10])  # `first` now knows the slot's log
    second.write(records[10:40])  # appended behind `first`'s back
    again = first.write(records[30:60])
    assert len(again.indexed) == 20 and len(again.existing) == 10
    assert archived_keys(app) == sorted(r["EventKey"] for r in records)


def test_writers_at_once_on_overlapping_batches_archive_each_event_once(app: Runtime) -> None:
    records = _records(range(200))
    batches = [records[start : start + 80] for start in range(0, 200, 40)]
    writers = [ArchiveWriter(app.tables, app.archive) for _ in batches]

    def write(item: tuple[ArchiveWriter, list[NormalizedRecord]]) -> int:
        writer, batch = item
        for _ in range(50):  # as a retry policy would
            try:
                return len(writer.write(batch).indexed)
            except ClaimedElsewhere:
                time.sleep(0.05)
        raise AssertionError("a writer never got through")

    with ThreadPoolExecutor(max_workers=len(batches)) as pool:
        indexed = sum(pool.map(write, zip(writers, batches, strict=True)))
    assert indexed == 200
    assert archived_keys(app) == sorted(r["EventKey"] for r in records)


def test_a_write_held_up_elsewhere_takes_back_its_own_claims(
    app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that finds some of its events held by a live writer claims none of them, so
    the other writer, retrying another grouping, is never held up by it in turn."""
    records = _records(range(20))
    monkeypatch.setattr(app.tables, "replace_if", _fail_on_commit(app.tables.replace_if))
    with pytest.raises(RuntimeError):
        app.writer.write(records[:10])  # holds 0-9, never commits
    monkeypatch.undo()
    claims_before = index_rows(app, "k")
    with pytest.raises(ClaimedElsewhere):
        ArchiveWriter(app.tables, app.archive).write(records[5:20])
    assert index_rows(app, "k") == claims_before
    # The first writer's retry of its own batch goes through; the rest follows.
    assert len(app.writer.write(records[:10]).indexed) == 10
    rest = ArchiveWriter(app.tables, app.archive).write(records[5:20])
    assert len(rest.indexed) == 10 and len(rest.existing) == 5
    assert archived_keys(app) == sorted(r["EventKey"] for r in records)


def test_an_append_lost_to_another_writer_counts_each_event_once(app: Runtime) -> None:
    """An event settled on the first look (archived already) is not settled again when the
    slot is read anew after the claim of the others (another writer's claims read then)."""
    a, b, c = _records(range(3))
    first = ArchiveWriter(app.tables, app.archive)
    first.write([a])  # `first` knows the slot's claims: a's
    ArchiveWriter(app.tables, app.archive).write([b])  # claimed behind its back
    again = first.write([a, c])  # a: archived; c: claimed, then b's claim read
    assert [r["EventKey"] for r in again.existing] == [a["EventKey"]]
    assert [r["EventKey"] for r in again.indexed] == [c["EventKey"]]
    assert archived_keys(app) == sorted(r["EventKey"] for r in (a, b, c))


def _three_classes() -> list[NormalizedRecord]:
    """Events of one day in three archive classes: a write makes three blobs."""
    return [
        *_records(range(0, 20)),
        *_records(range(20, 40), category="Policy"),
        *_records(range(40, 60), category="Security"),
    ]


def test_the_blobs_of_a_day_commit_in_one_request(settings: Any) -> None:
    """A write's commits are one conditional transaction a day, not a request a blob."""
    commits: list[str] = []

    def count(request: Any) -> None:
        http = request.http_request
        body = http.content if isinstance(http.content, bytes) else b""
        if (http.method == "PUT" and "PartitionKey='m" in http.url) or (
            http.url.endswith("$batch") and b"If-Match: W/" in body
        ):
            commits.append(http.method)

    app = build_runtime(settings, raw_request_hook=count)
    records = _three_classes()
    assert len(app.writer.write(records).indexed) == 60
    assert len(committed_blobs(app)) == 3
    assert commits == ["POST"]
    assert archived_keys(app) == sorted(r["EventKey"] for r in records)


def test_a_blob_fenced_before_a_commit_of_several_leaves_the_others_committed(
    app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One blob of three taken over between its postings and its commit: the day's commit
    transaction fails as a whole, so each blob commits alone: two do, the fenced one is
    removed, and the retry archives its events once."""
    records = _three_classes()
    real_upsert = app.tables.upsert
    fenced: list[str] = []

    def upsert_then_fence_one(month: str, entities: Any) -> None:
        real_upsert(month, entities)
        pending = [r for r in index_rows(app, "m") if r.get(STATE) == PENDING]
        victim = sorted(pending, key=lambda r: str(r["RowKey"]))[1]
        found = app.tables.read(month, victim["PartitionKey"], victim["RowKey"])
        assert found is not None
        fence = {"PartitionKey": victim["PartitionKey"], "RowKey": victim["RowKey"], STATE: "f"}
        assert app.tables.replace_if(month, fence, found[1]) is not None
        fenced.append(str(victim["RowKey"]))

    monkeypatch.setattr(app.tables, "upsert", upsert_then_fence_one)
    with pytest.raises(ClaimedElsewhere, match="taken over"):
        app.writer.write(records)
    monkeypatch.undo()
    assert len(fenced) == 1 and len(committed_blobs(app)) == 2
    assert len(archived_keys(app)) == 40
    later = ArchiveWriter(
        app.tables, app.archive, clock=lambda: datetime.now(UTC) + timedelta(hours=1)
    )
    again = later.write(records)
    assert len(again.indexed) == 20 and len(again.existing) == 40
    assert archived_keys(app) == sorted(r["EventKey"] for r in records)
