"""The function app indexes its triggers with the bindings the platform needs."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from functions import (
    archive_blob_trigger,
    catchup_timer,
    compaction_timer,
    eventhub_trigger,
    retention_timer,
    shell,
)
from shared import settings as names
from shared.tools.local_host import indexed_functions

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bindings() -> dict[str, list[dict[str, Any]]]:
    # The function.json the worker reports to the host for each function.
    return {
        name: json.loads(function.get_function_json())["bindings"]
        for name, function in indexed_functions().items()
    }


def _trigger(bindings: list[dict[str, Any]]) -> dict[str, Any]:
    (trigger,) = [b for b in bindings if b["type"].endswith("Trigger")]
    return trigger


def test_every_trigger_is_registered(bindings: dict[str, list[dict[str, Any]]]) -> None:
    assert set(bindings) == {
        "activity_events",
        "archive_blob",
        "archive_catchup",
        "retention",
        "compaction",
        "activity",
        "activity_histogram",
        "search",
        "search_assets",
        "search_activity",
        "search_histogram",
    }


def test_compaction_runs_hourly_off_the_hour(bindings: dict[str, list[dict[str, Any]]]) -> None:
    trigger = _trigger(bindings["compaction"])
    assert trigger["type"] == "timerTrigger"
    assert trigger["schedule"] == compaction_timer.SCHEDULE == "0 20 * * * *"


def test_event_hub_trigger_reads_hub_group_and_connection_from_settings(
    bindings: dict[str, list[dict[str, Any]]],
) -> None:
    trigger = _trigger(bindings["activity_events"])
    assert trigger["type"] == "eventHubTrigger"
    assert trigger["cardinality"].lower() == "many"
    assert trigger["eventHubName"] == f"%{names.EVENTHUB_NAME}%"
    assert trigger["consumerGroup"] == f"%{names.EVENTHUB_CONSUMER_GROUP}%"
    assert trigger["connection"] == names.EVENTHUB_CONNECTION


def test_event_hub_function_has_a_retry_policy_that_holds_the_checkpoint() -> None:
    function = indexed_functions()["activity_events"]
    retry = function.get_setting("retry_policy").get_dict_repr()
    assert retry["strategy"] == "exponential_backoff"
    assert int(retry["max_retry_count"]) == eventhub_trigger.MAX_RETRIES >= 3
    assert (retry["minimum_interval"], retry["maximum_interval"]) == (
        eventhub_trigger.FIRST_RETRY_AFTER,
        eventhub_trigger.LONGEST_RETRY_AFTER,
    )


@pytest.mark.parametrize(
    "module",
    [archive_blob_trigger, catchup_timer, compaction_timer, eventhub_trigger, retention_timer],
)
def test_each_trigger_names_its_span_after_its_registered_function(module: Any) -> None:
    # functions.shell names the span (and `activitylog.function`) from the module's TRIGGER.
    registered = indexed_functions()[module.TRIGGER.function]
    assert registered.get_user_function().__module__ == module.__name__
    assert module.TRIGGER.log.name == module.__name__  # the pipeline reads counts by logger


def test_blob_trigger_watches_the_archive_container(
    bindings: dict[str, list[dict[str, Any]]],
) -> None:
    trigger = _trigger(bindings["archive_blob"])
    assert trigger["type"] == "blobTrigger"
    assert trigger["path"] == f"%{names.ARCHIVE_CONTAINER}%/{{name}}"
    assert trigger["connection"] == names.STORAGE_CONNECTION
    assert trigger["source"] == "EventGrid"


@pytest.mark.parametrize(
    ("function", "setting"),
    [("archive_catchup", names.CATCHUP_SCHEDULE), ("retention", names.RETENTION_SCHEDULE)],
)
def test_timers_take_their_schedule_from_a_setting(
    bindings: dict[str, list[dict[str, Any]]], function: str, setting: str
) -> None:
    trigger = _trigger(bindings[function])
    assert trigger["type"] == "timerTrigger"
    assert trigger["schedule"] == f"%{setting}%"


def test_query_is_an_authenticated_get(bindings: dict[str, list[dict[str, Any]]]) -> None:
    trigger = _trigger(bindings["activity"])
    assert trigger["type"] == "httpTrigger"
    assert trigger["methods"] == ["GET"]
    assert trigger["authLevel"] == "FUNCTION"
    assert trigger["route"] == "activity"
    histogram = _trigger(bindings["activity_histogram"])
    assert (histogram["type"], histogram["methods"]) == ("httpTrigger", ["GET"])
    assert (histogram["authLevel"], histogram["route"]) == ("FUNCTION", "activity/histogram")


@pytest.mark.parametrize(
    ("function", "route"),
    [
        ("search", "search"),
        ("search_assets", "search/assets/{name}"),
        ("search_activity", "search/activity"),
        ("search_histogram", "search/histogram"),
    ],
)
def test_the_search_page_is_anonymous_at_the_host_behind_sign_in(
    bindings: dict[str, list[dict[str, Any]]], function: str, route: str
) -> None:
    # No function key in a browser: Entra ID sign-in in front, checked in code by each route
    # (tests/test_page_http.py).
    trigger = _trigger(bindings[function])
    assert (trigger["type"], trigger["methods"]) == ("httpTrigger", ["GET"])
    assert (trigger["authLevel"], trigger["route"]) == ("ANONYMOUS", route)


@dataclass
class Done:
    count: int

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count}


def test_the_shell_runs_the_use_case_on_the_runtime_then_records_and_logs_its_report(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    worker = object()
    monkeypatch.setattr(shell, "runtime", lambda: worker)
    recorded: list[Done] = []
    trigger = shell.Trigger(
        "f", "test", logging.getLogger("functions.f"), "f done", recorded.append
    )

    with caplog.at_level(logging.INFO, logger="functions.f"):
        report = shell.run(trigger, lambda app: Done(3 if app is worker else 0), blob="b")
    assert report == Done(3) and recorded == [report]
    (line,) = caplog.records
    assert (line.name, line.message, line.__dict__["blob"], line.__dict__["count"]) == (
        "functions.f",
        "f done",
        "b",
        3,
    )

    with pytest.raises(ZeroDivisionError):  # raised unchanged, nothing recorded nor logged
        shell.run(trigger, lambda app: Done(1 // 0))
    assert recorded == [report] and len(caplog.records) == 1


def test_host_json_pins_the_extension_bundle_and_batches() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensionBundle"]["version"] == "[4.0.0, 5.0.0)"
    # The largest batch one invocation gets, as the code knows it (the CLI's ingest batches).
    assert host["extensions"]["eventHubs"]["maxEventBatchSize"] == (
        eventhub_trigger.MAX_EVENT_BATCH_SIZE
    )


def test_local_settings_example_sets_every_setting_the_app_reads() -> None:
    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    read_by_code = {
        value
        for name, value in vars(names).items()
        if name.isupper()
        and isinstance(value, str)
        and (
            value.startswith("ACTIVITYLOG_")
            or value in ("AzureWebJobsStorage", "APPLICATIONINSIGHTS_CONNECTION_STRING")
        )
    }
    assert read_by_code <= set(example)
    extra = set(example) - read_by_code - {"FUNCTIONS_WORKER_RUNTIME"}
    assert not extra, f"settings nobody reads: {extra}"


# A function's own bad setting (retention's, say) no longer stops the app, only that function:
# tests/test_settings_per_function.py. What every path needs still stops it at startup.
@pytest.mark.parametrize(
    ("setting", "value"),
    [(names.STORE_PREFIX, "Bad_Prefix"), (names.ARCHIVE_CONTAINER, "UPPER")],
)
def test_the_app_refuses_to_start_on_a_bad_setting_and_names_it(setting: str, value: str) -> None:
    import os
    import subprocess
    import sys

    started = subprocess.run(
        [sys.executable, "-c", "import function_app"],
        cwd=ROOT,
        env={**os.environ, setting: value},
        capture_output=True,
        text=True,
        check=False,
    )
    assert started.returncode != 0
    assert "SettingsError" in started.stderr and setting in started.stderr.splitlines()[-1]
