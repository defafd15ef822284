"""Threads for storage calls sent side by side, started once per process and kept.

A pool made for each call started its threads anew every time: about 2 ms of CPU a thread
while other threads hold the GIL, some 30 threads in a 1,000-event archive write (15% of its
CPU, measured with cProfile on Azurite). A call made from one of these threads (side-by-side
work inside side-by-side work, such as a claim that reads several claim logs) gets threads of
its own, as before: waiting on the shared queue from inside it could wait on itself.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")

# Lanes of every call at once across the process (threads start as needed, up to this): a
# call runs at most its width of them, so callers on several threads (invocations, catch-up
# workers) each keep theirs, as with a pool a call.
MAX_THREADS = 64

_shared: ThreadPoolExecutor | None = None
_shared_lock = threading.Lock()
_here = threading.local()


def _mark_worker() -> None:
    _here.worker = True


def _pool() -> ThreadPoolExecutor:
    global _shared  # noqa: PLW0603 - one pool a process, made on first use
    with _shared_lock:
        if _shared is None:
            _shared = ThreadPoolExecutor(
                max_workers=MAX_THREADS, thread_name_prefix="storage", initializer=_mark_worker
            )
        return _shared


def side_by_side(work: Callable[[_T], _R], items: Sequence[_T], width: int) -> list[_R]:
    """`work` on each item, at most `width` at once; the results in the items' order. The
    first failure (in the items' order) is raised once the items begun are done; no item is
    begun after a failure."""
    if len(items) <= 1 or width <= 1:
        return [work(item) for item in items]
    lanes = min(width, len(items))
    if getattr(_here, "worker", False):
        with ThreadPoolExecutor(max_workers=lanes) as own:
            return list(own.map(work, items))
    results: list[_R | None] = [None] * len(items)
    errors: dict[int, BaseException] = {}
    order = iter(range(len(items)))
    order_lock = threading.Lock()

    def lane() -> None:
        while not errors:
            with order_lock:
                index = next(order, None)
            if index is None:
                return
            try:
                results[index] = work(items[index])
            except BaseException as error:  # raised again in the caller, as a pool's map does
                errors[index] = error

    for done in [_pool().submit(lane) for _ in range(lanes)]:
        done.result()
    if errors:
        raise errors[min(errors)]
    return results  # type: ignore[return-value]  # every item has its result


def _forget_after_fork() -> None:
    # A forked child has none of the parent's threads: a pool made before the fork would
    # queue work that no thread runs. The child makes its own.
    global _shared, _shared_lock  # noqa: PLW0603
    _shared = None
    _shared_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
