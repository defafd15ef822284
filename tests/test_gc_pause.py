"""The collector's pause around a batch: nesting, threads, failures, and the paths using it."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator, Sequence

import pytest

from shared.adapters.blobs import ArchiveBlob
from shared.bootstrap import Runtime
from shared.core.records import NormalizedRecord
from shared.core.written import WriteResult
from shared.services import gc_pause
from shared.services.archive_write import ArchiveWriter
from shared.services.delivery import EventBody, deliver
from shared.services.gc_pause import collection_paused
from tests.events import SUBSCRIPTION, activity_event, envelope, jsonl


@pytest.fixture(autouse=True)
def _collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def test_the_collector_is_off_inside_and_on_again_after_even_when_the_work_fails() -> None:
    with collection_paused():
        assert not gc.isenabled()
        with collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause is still under way
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collection_paused():
        raise RuntimeError("a write failed")
    assert gc.isenabled()


def test_a_collector_turned_off_before_stays_off() -> None:
    gc.disable()
    with collection_paused():
        pass
    assert not gc.isenabled()


def test_overlapping_pauses_in_two_threads_end_when_the_last_one_ends() -> None:
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with collection_paused():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    with collection_paused():
        thread.start()
        assert inside.wait(10)
    assert not gc.isenabled()  # the other thread's pause is still under way
    leave.set()
    thread.join(10)
    assert gc.isenabled()


def test_a_delivery_decodes_and_writes_with_the_collector_paused(app: Runtime) -> None:
    seen: list[bool] = []

    class Watched(ArchiveWriter):
        def write(self, records: Sequence[NormalizedRecord]) -> WriteResult:
            seen.append(gc.isenabled())
            return super().write(records)

    writer = Watched(app.tables, app.archive)
    events = [activity_event(n) for n in range(30)]
    report = deliver(
        [EventBody(envelope(events), "0", 1)], writer=writer, deadletters=app.deadletters
    )
    assert report.indexed == 30
    assert seen == [False]
    assert gc.isenabled()


def test_the_blob_path_parses_and_writes_each_piece_with_the_collector_paused(
    archive_app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = archive_app
    seen: list[bool] = []
    write = app.writer.write

    def watched(records: Sequence[NormalizedRecord]) -> WriteResult:
        seen.append(gc.isenabled())
        return write(records)

    monkeypatch.setattr(app.writer, "write", watched)
    container = app.stores.archive
    if not container.exists():
        container.create_container()
    name = f"resourceId=/SUBSCRIPTIONS/{SUBSCRIPTION.upper()}/y=2024/m=05/d=01/h=10/m=00/PT1H.json"
    blob = container.get_blob_client(name)
    blob.create_append_blob()
    blob.append_block(jsonl([activity_event(n) for n in range(20)]))
    assert app.blob_indexer.index(ArchiveBlob(container, name)).indexed == 20
    assert seen == [False]
    assert gc.isenabled()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_pauses_overlapping_without_end_still_collect_cycles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(gc_pause, "_clock", lambda: now[0])
    first_in, first_out, second_in = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with collection_paused():
            first_in.set()
            first_out.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    assert first_in.wait(10)
    with collection_paused():  # the second pause begins while the first goes on
        garbage = weakref.ref(_Cycle())
        first_out.set()
        thread.join(10)  # the first ends within COLLECT_EVERY: nothing collected yet
        assert garbage() is not None
        refreshed = threading.Thread(target=lambda: _pause_once(second_in))
        now[0] += gc_pause.COLLECT_EVERY + 1
        refreshed.start()
        refreshed.join(10)  # a third, ending with this one still under way, collects
        assert second_in.is_set()
        assert garbage() is None
        assert not gc.isenabled()
    assert gc.isenabled()


def _pause_once(inside: threading.Event) -> None:
    with collection_paused():
        inside.set()
