"""`python -m shared run`: the whole pipeline on one machine, through the registered functions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from shared import settings as names
from shared.settings import Settings
from tests.events import SUBSCRIPTION, activity_event, envelope, jsonl

COUNTS = ("events", "indexed", "duplicates", "deadlettered")


def run(settings: Settings, *args: str) -> dict[str, object]:
    environment = {
        **os.environ,
        names.STORAGE_CONNECTION: settings.storage_connection,
        names.STORE_PREFIX: settings.store_prefix,
        names.ARCHIVE_CONTAINER: f"{settings.store_prefix}-archive",
    }
    result = subprocess.run(
        [sys.executable, "-m", "shared", "run", "--json", *args],
        env=environment,
        capture_output=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    summary: dict[str, object] = orjson.loads(result.stdout.splitlines()[-1])
    return summary


def test_a_generated_day_through_every_function_adds_up(settings: Settings) -> None:
    summary = run(settings, "--events", "400", "--seed", "7")
    events, indexed, duplicates, deadlettered = (summary[name] for name in COUNTS)
    assert events == summary["sent"]
    assert events == indexed + duplicates + deadlettered  # type: ignore[operator]
    assert indexed == 400  # every generated event, once, whichever way it came
    assert duplicates and deadlettered == 2  # sent both ways; the two planted bad inputs
    by_path, retention = summary["by_path"], summary["retention"]
    assert isinstance(by_path, dict) and isinstance(retention, dict)
    assert set(by_path) >= {"eventhub", "archive_blob", "catchup"}
    assert retention["records_kept"] == 400


def test_a_users_archive_folder(settings: Settings, tmp_path: Path) -> None:
    for hour in range(3):
        folder = (
            tmp_path
            / f"resourceId=/SUBSCRIPTIONS/{SUBSCRIPTION.upper()}/y=2024/m=05/d=01/h={hour:02d}/m=00"
        )
        folder.mkdir(parents=True)
        events = [
            activity_event(hour * 10 + n, time=f"2024-05-01T{hour:02d}:0{n}:00Z") for n in range(4)
        ]
        (folder / "PT1H.json").write_bytes(jsonl(events) + b"not an event\n")
    summary = run(settings, "--source", str(tmp_path))
    assert [summary[name] for name in COUNTS] == [15, 12, 0, 3]


def test_a_folder_of_event_hub_bodies(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "one.json").write_bytes(envelope([activity_event(n) for n in range(5)]))
    (tmp_path / "more.jsonl").write_bytes(
        envelope([activity_event(n) for n in range(3, 8)]) + b"\nnot json\n"
    )
    summary = run(settings, "--source", str(tmp_path))
    assert [summary[name] for name in COUNTS] == [11, 8, 2, 1]
