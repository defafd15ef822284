"""The one shell every handler runs in: span, runtime, use case, telemetry, log.

A trigger module only turns its binding into the use case's input and hands the shell a
function of the worker's `Runtime`; the shell does the rest, the same way for every trigger:

    span (`telemetry.invocation`, with the trigger's attributes)
      -> `runtime()` (built once per worker, inside the span so a failure to build it is
         recorded on it)
      -> the use case
      -> its report's metrics and span attributes (`telemetry.record_*`)
      -> one structured log line: the trigger's attributes and the report's counts as `extra=`
         (custom dimensions once exported), on the trigger module's own logger (`functions.*`,
         which the local pipeline run reads its counts from)

An exception from the use case is recorded on the span and raised unchanged: the host answers
it (the Event Hub retry policy, the blob trigger's retries up to host.json's
poisonBlobThreshold), or the timer's next run does. The HTTP function maps its own errors to
responses and has no report: it uses `invoke` alone.

A bad app setting of the function's own (shared.settings: retention's, the catch-up's, the
seal) raises SettingsError where the use case reads it: the shell logs it as an error naming
the setting and counts it in `activitylog.settings.invalid` (function, setting), on every
run, then raises it. A section the trigger runs without (`runs_without`: forwarding, for every
path that indexes) is logged and counted the same way, and the run goes on without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from shared.adapters import telemetry
from shared.adapters.telemetry import AttributeValue
from shared.bootstrap import Runtime, runtime
from shared.settings import Section, SettingsError

log = logging.getLogger(__name__)


class Report(Protocol):
    """What a use case returns: counts that its log line carries as dimensions."""

    def as_dict(self) -> dict[str, Any]: ...


T = TypeVar("T")
R = TypeVar("R", bound=Report)


@dataclass(frozen=True, slots=True)
class Trigger(Generic[R]):
    """What a trigger module declares once: how its invocations are named, recorded and logged."""

    function: str  # the function's name: the span's name and `activitylog.function`
    path: str  # the `path` attribute and metric dimension (telemetry.EVENTHUB, ...)
    log: logging.Logger  # the trigger module's own logger
    message: str  # the log line's message
    record: Callable[[R], None]  # the telemetry.record_* that takes this report
    # Sections of settings this function runs without when they are bad, saying so every run.
    runs_without: tuple[Section, ...] = ()


def invoke(
    function: str, use_case: Callable[[Runtime], T], /, *, path: str, **attributes: AttributeValue
) -> T:
    """Run the use case on the worker's runtime inside the invocation's span."""
    with telemetry.invocation(function, path=path, **attributes):
        try:
            return use_case(runtime())
        except SettingsError as error:
            _refused(function, log, error)
            raise


def run(
    trigger: Trigger[R], use_case: Callable[[Runtime], R], /, **attributes: AttributeValue
) -> R:
    """`invoke`, then the report's telemetry and its log line, all inside the span.

    The attributes go on the span and, before the report's counts, into the log line. (Not
    built on `invoke`: one frame between a trigger and its use case keeps tracebacks short.)
    """
    with telemetry.invocation(trigger.function, path=trigger.path, **attributes):
        try:
            app = runtime()
            _without(trigger, app)
            report = use_case(app)
        except SettingsError as error:
            _refused(trigger.function, trigger.log, error)
            raise
        trigger.record(report)
        trigger.log.info(trigger.message, extra={**attributes, **report.as_dict()})
        return report


def _refused(function: str, logger: logging.Logger, error: SettingsError) -> None:
    """A bad setting stopped this invocation: an error line naming it, and the metric."""
    telemetry.record_settings_invalid(function, error.setting)
    logger.error("%s did not run: %s", function, error, extra={"setting": error.setting})


def _without(trigger: Trigger[R], app: Runtime) -> None:
    """Say, on every run, which bad sections this invocation goes on without."""
    if not trigger.runs_without:
        return
    invalid = app.settings.invalid
    for section in trigger.runs_without:
        error = invalid.get(section)
        if error is not None:
            telemetry.record_settings_invalid(trigger.function, error.setting)
            trigger.log.error(
                "%s runs without %s: %s",
                trigger.function,
                section,
                error,
                extra={"setting": error.setting},
            )
