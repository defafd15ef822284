"""`python -m shared`: the verbs' contracts (arguments, output, exit codes), run as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared import settings as names
from shared.bootstrap import Runtime
from shared.core.normalize import normalize_input
from shared.core.records import COLUMNS
from shared.settings import Settings
from tests.conftest import SAMPLES
from tests.events import SUBSCRIPTION, activity_event, envelope, jsonl


def shared_cli(
    *args: str,
    settings: Settings | None = None,
    stdin: bytes = b"",
    extra: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    environment = {**os.environ, **(extra or {})}
    if settings is not None:
        environment[names.STORAGE_CONNECTION] = settings.storage_connection
        environment[names.STORE_PREFIX] = settings.store_prefix
    return subprocess.run(
        [sys.executable, "-m", "shared", *args],
        input=stdin,
        env=environment,
        capture_output=True,
        check=False,
        timeout=300,
    )


def json_lines(data: bytes) -> list[Any]:
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def test_normalize_writes_records_and_exits_zero(tmp_path: Path) -> None:
    events = [activity_event(n) for n in range(3)]
    source = tmp_path / "batch.json"
    source.write_bytes(envelope(events))
    result = shared_cli("normalize", str(source))
    assert result.returncode == 0, result.stderr
    records = json_lines(result.stdout)
    assert records == normalize_input(envelope(events), str(source))[0]
    assert all(list(record) == list(COLUMNS) for record in records)
    assert result.stderr == b""


def test_normalize_reads_standard_input_and_reports_rejections_with_exit_three() -> None:
    data = jsonl([activity_event(1)]) + b"not json\n" + jsonl([activity_event(2)])
    result = shared_cli("normalize", stdin=data)
    assert result.returncode == 3
    assert len(json_lines(result.stdout)) == 2
    (rejection,) = json_lines(result.stderr)
    assert set(rejection) == {"reason", "source", "raw"}
    assert rejection["raw"] == "not json"
    assert rejection["source"] == "stdin:2"


def test_normalize_an_unreadable_file_is_exit_two_with_one_line(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_bytes(envelope([activity_event(1)]))
    result = shared_cli("normalize", str(tmp_path / "missing.json"), str(good))
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1
    assert "missing.json" in result.stderr.decode()
    assert len(json_lines(result.stdout)) == 1  # the readable file is still normalized


def test_bad_arguments_are_exit_two_with_one_line() -> None:
    for args in (["frobnicate"], ["normalize", "--bogus"], []):
        result = shared_cli(*args)
        assert result.returncode == 2, args
        assert result.stderr.decode().strip().count("\n") == 0, result.stderr


@pytest.mark.parametrize(
    "verb",
    [
        "",
        "normalize",
        "ingest",
        "query",
        "backfill",
        "forward",
        "retention",
        "compact",
        "run",
        "deadletter",
    ],
)
def test_help_says_what_each_verb_does(verb: str) -> None:
    result = shared_cli(*([verb] if verb else []), "--help")
    assert result.returncode == 0
    assert len(result.stdout.decode().split()) > 20


def test_normalize_accounts_for_every_published_sample() -> None:
    if not SAMPLES.is_dir():
        pytest.skip("the team's samples (../shared/samples) are not beside this checkout")
    files = sorted(str(path) for path in SAMPLES.iterdir() if path.suffix in (".json", ".jsonl"))
    result = shared_cli("normalize", *files)
    assert result.returncode == 3  # the published Policy sample is invalid JSON
    rejections = json_lines(result.stderr)
    assert [Path(r["source"]).name for r in rejections] == ["docs-schema-policy.json"]
    expected = sum(len(normalize_input(Path(f).read_bytes(), f)[0]) for f in files)
    assert len(json_lines(result.stdout)) == expected


def test_a_container_name_storage_cannot_take_is_a_usage_error(settings: Settings) -> None:
    # Found from outside: the service's 400 for it read "storage unavailable ... run it again".
    for name in ("Bad Name", "a", "double--hyphen", "trailing-"):
        done = shared_cli("backfill", "--container", name, settings=settings)
        assert done.returncode == 2, (name, done.stderr)
        assert b"not a container name" in done.stderr


def test_a_byte_order_mark_does_not_make_json_lines_one_body() -> None:
    # Found from outside: a BOM-prefixed JSON Lines file was one body (its first line did not
    # parse with the mark before it), where the same file without it was one body a line.
    from shared.tools.cli import event_hub_bodies

    lines = [envelope([activity_event(n)]) for n in range(3)]
    plain = event_hub_bodies("f", b"\n".join(lines))
    marked = event_hub_bodies("f", b"\xef\xbb\xbf" + b"\n".join(lines))
    assert [body.body for body in marked] == [body.body for body in plain] == lines


def test_ingest_goes_through_the_event_hub_path_and_is_idempotent(
    tmp_path: Path, settings: Settings
) -> None:
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_bytes(
        envelope([activity_event(n) for n in range(5)])
        + b"\n"
        + b"not json at all\n"
        + envelope([activity_event(n) for n in range(5, 8)])
        + b"\n"
    )
    single = tmp_path / "single.json"
    single.write_bytes(b"{\n" + envelope([activity_event(9)])[1:])  # one JSON value: one body
    first = shared_cli("ingest", "--json", str(bodies), str(single), settings=settings)
    summary = orjson.loads(first.stdout)
    assert first.returncode == 3, first.stderr  # something was dead-lettered
    assert (
        summary["events"],
        summary["indexed"],
        summary["duplicates"],
        summary["deadlettered"],
    ) == (10, 9, 0, 1)
    again = orjson.loads(
        shared_cli("ingest", "--json", str(bodies), str(single), settings=settings).stdout
    )
    assert (again["indexed"], again["duplicates"], again["deadlettered"]) == (0, 9, 1)

    listed = json_lines(shared_cli("deadletter", "list", settings=settings).stdout)
    assert len(listed) == 1
    assert listed[0]["raw"] == "not json at all"
    assert listed[0]["source"] == f"{bodies}:2"
    assert listed[0]["reason"].startswith("not JSON")
    replayed = shared_cli("deadletter", "replay", "--json", settings=settings)
    assert orjson.loads(replayed.stdout) == {"replayed": 0, "still_failing": 1}  # still not JSON


def _archive_folder(root: Path, hours: int, per_hour: int) -> list[bytes]:
    blobs = []
    for hour in range(hours):
        folder = (
            root
            / f"resourceId=/SUBSCRIPTIONS/{SUBSCRIPTION.upper()}/y=2024/m=05/d=01/h={hour:02d}/m=00"
        )
        folder.mkdir(parents=True)
        data = jsonl(
            [
                activity_event(hour * 100 + n, time=f"2024-05-01T{hour:02d}:{n:02d}:00Z")
                for n in range(per_hour)
            ]
        )
        (folder / "PT1H.json").write_bytes(data)
        blobs.append(data)
    return blobs


def test_backfill_a_local_folder_twice_indexes_nothing_twice(
    tmp_path: Path, settings: Settings
) -> None:
    blobs = _archive_folder(tmp_path / "archive", hours=4, per_hour=6)
    first = shared_cli("backfill", str(tmp_path / "archive"), "--json", settings=settings)
    assert first.returncode == 0, first.stderr
    summary = orjson.loads(first.stdout)
    assert (
        summary["blobs"],
        summary["events"],
        summary["indexed"],
        summary["duplicates"],
        summary["deadlettered"],
    ) == (4, 24, 24, 0, 0)
    second = orjson.loads(
        shared_cli("backfill", str(tmp_path / "archive"), "--json", settings=settings).stdout
    )
    assert (second["blobs"], second["events"], second["indexed"]) == (4, 0, 0)
    assert sum(len(normalize_input(b, "x")[0]) for b in blobs) == 24


def test_backfill_a_container_narrowed_by_time(
    tmp_path: Path, settings: Settings, app: Runtime
) -> None:
    root = tmp_path / "archive"
    _archive_folder(root, hours=5, per_hour=3)
    container = app.stores.blob_service.get_container_client(f"{settings.store_prefix}-archive")
    container.create_container()
    for path in root.rglob("PT1H.json"):
        container.upload_blob(path.relative_to(root).as_posix(), path.read_bytes())
    container.upload_blob("not-a-pt1h/notes.txt", b"hello, not an event\n")
    narrowed = shared_cli(
        "backfill",
        "--container",
        container.container_name,
        "--since",
        "2024-05-01T01:00:00Z",
        "--until",
        "2024-05-01T03:00:00Z",
        "--json",
        settings=settings,
    )
    summary = orjson.loads(narrowed.stdout)
    assert (summary["blobs"], summary["indexed"]) == (2, 6)
    everything = orjson.loads(
        shared_cli(
            "backfill", "--container", container.container_name, "--json", settings=settings
        ).stdout
    )
    # The other three hours, and the stray file: indexed from its content, a dead letter here.
    assert (everything["blobs"], everything["indexed"], everything["deadlettered"]) == (6, 9, 1)
    bad_date = shared_cli("backfill", "--since", "yesterday-ish", settings=settings)
    assert bad_date.returncode == 2 and bad_date.stderr.decode().count("\n") == 1


def test_storage_that_cannot_be_reached_is_exit_one_with_one_line(tmp_path: Path) -> None:
    from shared.tools.azurite import _free_port, connection_string

    closed = _free_port()  # nothing listens there
    body = tmp_path / "batch.json"
    body.write_bytes(envelope([activity_event(1)]))
    for verb in (["ingest", str(body)], ["query"], ["retention", "--dry-run"]):
        result = shared_cli(
            *verb, extra={names.STORAGE_CONNECTION: connection_string(closed, closed, closed)}
        )
        assert result.returncode == 1, (verb, result.stderr)
        message = result.stderr.decode()
        assert message.count("\n") == 1 and "storage unavailable" in message, message
        assert "Traceback" not in message


def test_without_storage_settings_azurite_is_started_and_keeps_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.tools import azurite
    from shared.tools.azurite import _free_port, _listening, local_storage

    ports = (_free_port(), _free_port(), _free_port())
    monkeypatch.setattr(azurite, "DEFAULT_PORTS", ports)
    monkeypatch.setattr(azurite, "LOCAL_DATA", tmp_path / "azurite")
    said: list[str] = []
    with local_storage(said.append, env={}) as connection:
        assert connection == azurite.connection_string(*ports)
        assert all(_listening(port) for port in ports)
        assert said == [f"Azurite started on 127.0.0.1:{ports[0]} (data in .azurite/)"]
        # One already listening on the default ports is used as it is, not started again.
        with local_storage(said.append, env={}) as again:
            assert again == connection and len(said) == 1
    assert not any(_listening(port) for port in ports)
    assert (tmp_path / "azurite" / "__azurite_db_table__.json").exists()
    # Configured storage (a connection string or identity settings) is never replaced.
    for env in ({names.STORAGE_CONNECTION: "x"}, {names.STORAGE_CONNECTION + "__accountName": "a"}):
        with local_storage(said.append, env=env) as configured:
            assert configured is None
    assert len(said) == 1


def test_compact_merges_closed_days_and_lookups_find_the_same(
    tmp_path: Path, settings: Settings
) -> None:
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_bytes(envelope([activity_event(n) for n in range(6)]) + b"\n")
    assert shared_cli("ingest", str(bodies), settings=settings).returncode == 0
    lookup = ("query", "--subscription", SUBSCRIPTION, "--limit", "100")
    before = json_lines(shared_cli(*lookup, settings=settings).stdout)
    early = shared_cli("compact", "--json", "--as-of", "2000-01-01T00:00:00Z", settings=settings)
    assert (early.returncode, orjson.loads(early.stdout)["units"]) == (0, 0)  # nothing closed
    done = shared_cli("compact", "--json", settings=settings)
    assert done.returncode == 0, done.stderr
    merged = orjson.loads(done.stdout)
    assert merged["units"] > 0 and merged["fresh_rows"] > 0 and merged["days_left"] == 0
    assert json_lines(shared_cli(*lookup, settings=settings).stdout) == before
    assert len(before) == 6
    again = orjson.loads(shared_cli("compact", "--json", settings=settings).stdout)
    assert again["units"] == 0  # idempotent: nothing fresh is left


# Every time flag of the command line reads times one way: ISO 8601 or a time ago (15m, 12h,
# 7d), as `query` and `verify` read --since and --until.
@pytest.mark.parametrize("verb", [("retention", "--dry-run"), ("compact",)])
def test_as_of_takes_a_time_ago_as_query_and_verify_do(
    verb: tuple[str, ...], settings: Settings
) -> None:
    result = shared_cli(*verb, "--json", "--as-of", "7d", settings=settings)
    assert result.returncode == 0, result.stderr
    if verb[0] == "retention":
        as_of = datetime.fromisoformat(orjson.loads(result.stdout)["as_of"])
        assert abs(as_of - (datetime.now(UTC) - timedelta(days=7))) < timedelta(minutes=5)


@pytest.mark.parametrize(
    "args",
    [
        ("retention", "--dry-run", "--as-of", "7 days"),
        ("retention", "--dry-run", "--as-of", "\uff17d"),
        ("compact", "--as-of", "yesterday"),
        ("backfill", "--since", "\uff12\uff10\uff12\uff14-05-01"),
        ("run", "--events", "\uff11\uff12"),
        ("run", "--events", "1_2"),
        ("backfill", "--parallel", "\uff14"),
        ("serve", "--port", "\uff17\uff10\uff17\uff11"),
    ],
)
def test_a_flag_in_other_digits_or_words_is_a_usage_error(
    args: tuple[str, ...], settings: Settings
) -> None:
    result = shared_cli(*args, settings=settings)
    assert result.returncode == 2, result.stderr  # usage
    assert args[-2].encode() in result.stderr and b"Traceback" not in result.stderr
