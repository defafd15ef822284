"""The storage calls' shared threads: order, width, failures, nesting and fork."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from shared.adapters.thread_pools import MAX_THREADS, side_by_side


def test_results_come_in_the_items_order_whatever_finishes_first() -> None:
    def slow_first(item: int) -> int:
        time.sleep(0.02 if item == 0 else 0)
        return item * 10

    assert side_by_side(slow_first, list(range(20)), 4) == [n * 10 for n in range(20)]


def test_a_call_runs_at_most_its_width_at_once_while_another_caller_runs_its_own() -> None:
    lock = threading.Lock()
    running: dict[str, int] = {"a": 0, "b": 0}
    peak: dict[str, int] = {"a": 0, "b": 0}

    def work(tag: str) -> None:
        with lock:
            running[tag] += 1
            peak[tag] = max(peak[tag], running[tag])
        time.sleep(0.01)
        with lock:
            running[tag] -= 1

    other = threading.Thread(target=side_by_side, args=(work, ["b"] * 24, 6))
    other.start()
    side_by_side(work, ["a"] * 24, 3)
    other.join()
    assert peak == {"a": 3, "b": 6}


def test_the_first_failure_in_order_is_raised_and_nothing_begins_after_it() -> None:
    begun: list[int] = []

    def work(item: int) -> int:
        begun.append(item)
        if item in (3, 5):
            raise ValueError(f"item {item}")
        time.sleep(0.005)
        return item

    with pytest.raises(ValueError, match="item 3"):
        side_by_side(work, list(range(40)), 2)
    assert len(begun) < 40


def test_work_that_goes_side_by_side_itself_never_waits_on_its_own_threads() -> None:
    # Every shared thread busy with an outer item that itself waits on inner items.
    def inner(item: int) -> int:
        time.sleep(0.001)
        return item

    def outer(item: int) -> int:
        return sum(side_by_side(inner, list(range(8)), 8)) + item

    done = side_by_side(outer, list(range(MAX_THREADS * 2)), MAX_THREADS)
    assert done == [28 + n for n in range(MAX_THREADS * 2)]


def _in_child(connection: object) -> None:
    connection.send(side_by_side(lambda n: n + 1, [1, 2, 3], 3))  # type: ignore[attr-defined]


def test_a_forked_child_gets_threads_of_its_own() -> None:
    side_by_side(lambda n: n, [1, 2, 3], 3)  # the parent's threads exist before the fork
    context = multiprocessing.get_context("fork")
    mine, theirs = context.Pipe()
    child = context.Process(target=_in_child, args=(theirs,))
    child.start()
    assert mine.poll(20), "the child's call never finished"
    assert mine.recv() == [2, 3, 4]
    child.join(5)
    assert child.exitcode == 0
