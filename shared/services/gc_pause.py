"""Python's cyclic garbage collector paused while a batch is decoded and written.

A write holds thousands of records (dicts of strings: no reference cycles) alive at once, and
the collector, started every 700 allocations, walks them again and again and frees nothing:
in one 5,000-event Event Hub delivery, about 150 young, 13 middle and 1-2 full collections,
80-125 ms, 12-15% of the delivery (measured with `gc.callbacks` on Azurite; `bench/
bench_storage.py`, "ingest time / normalize time"). Reference counting still frees whatever
is not in a cycle; the few cycles a batch makes (an exception's traceback) wait for the next
collection after the last pause ends. Pauses nest and overlap across threads (invocations of
one worker run side by side): the collector is on again when the last of them ends, and only
if it was on before the first. Pauses that overlap without end (busy partitions delivering
back to back on one instance) would never collect a cycle: a pause that ends while others
go on runs a full collection itself when none ran for COLLECT_EVERY seconds.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_paused = 0  # pauses under way, in every thread
_was_enabled = False  # whether the collector was on when the first of them began
_collected = 0.0  # when the collector last ran or was last on, while pauses are under way
COLLECT_EVERY = 30.0  # seconds
_clock = time.monotonic


@contextmanager
def collection_paused() -> Iterator[None]:
    global _paused, _was_enabled, _collected  # noqa: PLW0603 - one collector a process
    with _lock:
        if _paused == 0:
            _was_enabled = gc.isenabled()
            _collected = _clock()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _lock:
            _paused -= 1
            overdue = False
            if _paused == 0:
                if _was_enabled:
                    gc.enable()
            elif _was_enabled and _clock() - _collected > COLLECT_EVERY:
                overdue, _collected = True, _clock()
        if overdue:
            gc.collect()
