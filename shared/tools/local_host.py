"""A stand-in for the Functions host on one machine: real binding objects, registered functions.

No Event Hubs emulator runs here (nor, locally, Event Grid), so the local pipeline run and the
tests build the binding objects the Python worker would (EventHubEvent with its trigger
metadata, the retry context, TimerRequest) and call the functions function_app registered.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
import orjson
from azure.functions._abc import Context, RetryContext, TraceContext
from azure.functions.meta import Datum


class Retry(RetryContext):
    def __init__(self, retry_count: int, max_retry_count: int) -> None:
        self._count, self._max = retry_count, max_retry_count

    @property
    def retry_count(self) -> int:
        return self._count

    @property
    def max_retry_count(self) -> int:
        return self._max

    @property
    def exception(self) -> Any:
        return None


class Invocation(Context):
    """A func.Context as the worker builds it: ids, and the retry attempt."""

    def __init__(self, name: str, retry: Retry | None = None) -> None:
        self._name, self._retry = name, retry

    @property
    def invocation_id(self) -> str:
        return "00000000-0000-0000-0000-000000000001"

    @property
    def function_name(self) -> str:
        return self._name

    @property
    def function_directory(self) -> str:
        return os.getcwd()

    @property
    def trace_context(self) -> TraceContext:
        raise NotImplementedError  # no function here reads it

    @property
    def retry_context(self) -> RetryContext:
        return self._retry  # type: ignore[return-value]  # None: no retry policy applied

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return threading.local


def event_hub_batch(
    bodies: Sequence[bytes], *, partition: str = "0", first_sequence: int = 0
) -> list[func.EventHubEvent]:
    """A cardinality=many batch: every event shares the batch's trigger metadata."""
    metadata = {
        "PartitionContext": Datum(
            orjson.dumps(
                {"PartitionId": partition, "EventHubName": "insights-activity-logs"}
            ).decode(),
            "json",
        )
    }
    enqueued = datetime.now(UTC)
    return [
        func.EventHubEvent(
            body=body,
            trigger_metadata=metadata,
            enqueued_time=enqueued,
            sequence_number=first_sequence + number,
            offset=str(4096 * (first_sequence + number)),
        )
        for number, body in enumerate(bodies)
    ]


@functools.cache
def indexed_functions() -> dict[str, Any]:
    """function_app's functions as the worker indexes them (get_functions runs once only)."""
    from function_app import app

    return {str(function.get_function_name()): function for function in app.get_functions()}


def registered(function_name: str) -> Callable[..., Any]:
    """The user function that function_app registered under this name."""
    user_function: Callable[..., Any] = indexed_functions()[function_name].get_user_function()
    return user_function


@contextmanager
def app_settings(values: Mapping[str, str]) -> Iterator[None]:
    """Run with these app settings in the environment, as the host provides them."""
    from shared.bootstrap import runtime

    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    runtime.cache_clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        runtime.cache_clear()
