"""Dead letters keep their input byte for byte, and are claimed before anyone acts on them.

On Azurite, with the loopback Logs Ingestion endpoint: what a replay re-drives is exactly what
arrived (a body holding bytes that are not UTF-8 is neither altered nor doubled), and two
replays at once, or a replay and a redelivery, send each record to Log Analytics once.
"""

from __future__ import annotations

import base64
import functools
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from azure.storage.blob import BlobLeaseClient

from shared import settings as names
from shared.adapters import deadletters as deadletter_module
from shared.adapters import log_analytics as forward
from shared.adapters.deadletters import (
    NOT_FORWARDED,
    REJECTED,
    UNDELIVERED,
    DeadLetter,
    DeadLetterStore,
)
from shared.bootstrap import Runtime, build_runtime, runtime
from shared.core.normalize import normalize_input
from shared.services.delivery import EventBody, RetryableDeliveryError, deliver
from shared.services.forward_range import ForwardRangeReport
from shared.services.forwarding import not_forwarded_letter
from shared.services.replay import replay
from shared.settings import Settings, load_settings
from shared.tools.local_host import Invocation, Retry, app_settings, event_hub_batch, registered
from tests.archive_view import archived_keys, archived_records, committed_blobs, unreachable_writer
from tests.events import SUBSCRIPTION, activity_event, envelope, jsonl
from tests.logs_ingestion_server import LogsIngestionServer, StaticTokenCredential
from tests.test_cli import shared_cli

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RULE_ID = "dcr-00000000000000000000000000000000"
STREAM = "Custom-ActivityLog_CL"
REPLACEMENT = "\ufffd"


# --- helpers -----------------------------------------------------------------------------------


def indexed_keys(app: Runtime) -> list[str]:
    """EventKeys of every record in a committed archive blob, sorted, duplicates kept."""
    return archived_keys(app)


def indexed_bodies(app: Runtime) -> list[Any]:
    return list(archived_records(app))


def stored_letters(app: Runtime) -> dict[str, bytes]:
    """Every dead letter blob as stored, by name."""
    container = app.stores.deadletter
    return {
        blob.name: container.download_blob(blob.name).readall() for blob in container.list_blobs()
    }


def keys_of(records: list[dict[str, Any]]) -> list[str]:
    return sorted(str(record["EventKey"]) for record in records)


def at_once(*work: Callable[[], dict[str, Any]]) -> list[dict[str, Any]]:
    """Run each callable in its own thread, all released together; their results in order."""
    start = threading.Barrier(len(work))
    results: list[dict[str, Any]] = [{} for _ in work]
    errors: list[BaseException] = []

    def run(slot: int, job: Callable[[], dict[str, Any]]) -> None:
        try:
            start.wait()
            results[slot] = job()
        except BaseException as error:  # re-raised in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=pair) for pair in enumerate(work)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    return results


@dataclass
class Forwarding:
    settings: Settings
    server: LogsIngestionServer

    def app(self) -> Runtime:
        """A runtime of its own (clients, forwarder), as another process would have."""
        return build_runtime(self.settings)

    def environment(self) -> dict[str, str]:
        """A child process's environment: this store, forwarding to this server."""
        return {
            **os.environ,
            names.STORAGE_CONNECTION: self.settings.storage_connection,
            names.STORE_PREFIX: self.settings.store_prefix,
            names.LOGS_INGESTION_ENDPOINT: self.server.endpoint,
            names.LOGS_INGESTION_RULE_ID: RULE_ID,
            names.LOGS_INGESTION_STREAM: STREAM,
        }

    def sent(self) -> Counter[str]:
        return Counter(str(record["EventKey"]) for record in self.server.records)


@pytest.fixture
def forwarding(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Forwarding]:
    yield from forwarding_to_loopback(settings, monkeypatch)


def forwarding_to_loopback(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Forwarding]:
    """Storage on Azurite, forwarding to the loopback Logs Ingestion endpoint."""
    monkeypatch.setattr(
        "shared.adapters.storage.credential_for", lambda _settings: StaticTokenCredential()
    )
    quick = functools.partial(forward.build_client, retry_total=2, retry_backoff_factor=0.05)
    monkeypatch.setattr("shared.adapters.log_analytics.build_client", quick)
    with LogsIngestionServer(RULE_ID, STREAM) as server:
        values = {
            names.STORAGE_CONNECTION: settings.storage_connection,
            names.STORE_PREFIX: settings.store_prefix,
            names.LOGS_INGESTION_ENDPOINT: server.endpoint,
            names.LOGS_INGESTION_RULE_ID: RULE_ID,
            names.LOGS_INGESTION_STREAM: STREAM,
        }
        yield Forwarding(load_settings(values), server)


def not_forwarded_letters(forwarding: Forwarding, count: int) -> tuple[Runtime, list[str]]:
    """`count` records indexed whose copy Log Analytics refused (400): one letter each."""
    app = forwarding.app()
    events = [activity_event(n) for n in range(count)]
    forwarding.server.script([400])  # the one call carrying them all is refused
    report = deliver(
        [EventBody(envelope(events), "0", 1)],
        writer=app.writer,
        deadletters=app.deadletters,
        forwarding=app.forwarding,
    )
    assert (report.indexed, report.not_forwarded) == (count, count)
    assert len(list(app.deadletters.list(NOT_FORWARDED))) == count
    assert forwarding.server.records == []
    return app, indexed_keys(app)


# --- item 7: bytes that are not UTF-8 are kept and replayed exactly ---------------------------

GOOD = activity_event(1)
BAD_LINES = {
    # An event whose caller holds the byte 0xE9 (Latin-1 "é"): not UTF-8, so not JSON.
    "event": b'{"time": "2024-05-01T10:00:02.0000000Z", "category": "Administrative", '
    b'"caller": "caf\xe9"}',
    "text": b"caf\xe9",
}


@pytest.mark.parametrize("bad", sorted(BAD_LINES))
def test_an_undelivered_body_with_a_non_utf8_line_is_replayed_byte_for_byte(
    bad: str, settings: Settings
) -> None:
    bad_line = BAD_LINES[bad]
    body = jsonl([GOOD]) + bad_line + b"\n"
    with app_settings(
        {
            names.STORAGE_CONNECTION: settings.storage_connection,
            names.STORE_PREFIX: settings.store_prefix,
        }
    ):
        app = runtime()
        object.__setattr__(app, "writer", unreachable_writer(settings))  # storage goes away
        last_attempt = Invocation("activity_events", Retry(8, 8))
        registered("activity_events")(event_hub_batch([body], partition="5"), last_attempt)
    app = build_runtime(settings)  # storage is back
    assert indexed_keys(app) == []
    assert len(list(app.deadletters.list(UNDELIVERED))) == 1

    summary = replay(app)

    assert summary == {"replayed": 1, "still_failing": 1}  # the body; the bad line stays
    assert indexed_keys(app) == keys_of(normalize_input(jsonl([GOOD]), "x")[0])
    (rejected,) = app.deadletters.list()
    assert rejected.kind == REJECTED
    assert rejected.raw_bytes == bad_line
    assert rejected.source == "eventhub:partition=5:sequence=0:2"
    assert REPLACEMENT not in rejected.raw
    assert "\\xe9" in rejected.raw  # readable text, the byte shown as an escape
    for blob in stored_letters(app).values():
        assert REPLACEMENT not in blob.decode("utf-8")
    assert not any(REPLACEMENT in orjson.dumps(body).decode() for body in indexed_bodies(app))
    # Replayed again: nothing changes.
    assert replay(app) == {"replayed": 0, "still_failing": 1}
    assert len(stored_letters(app)) == 1


def test_the_stored_letter_shows_text_and_keeps_the_exact_bytes(app: Runtime) -> None:
    exact = b'{"caller": "caf\xe9 \xff"}'
    letter = DeadLetter(
        kind=UNDELIVERED,
        reason="index unavailable",
        source="eventhub:partition=0:sequence=9",
        raw=exact.decode("utf-8", "backslashreplace"),
        data=exact,
    )
    name = app.deadletters.put(letter)
    assert app.deadletters.put(letter) == name  # the same letter, the same blob

    (stored,) = stored_letters(app).values()
    as_json = orjson.loads(stored)
    assert as_json["raw"] == '{"caller": "caf\\xe9 \\xff"}'
    assert base64.b64decode(as_json["raw_base64"]) == exact
    read = app.deadletters.get(name)
    assert read is not None
    assert (read.raw_bytes, read.raw, read.name) == (exact, letter.raw, name)
    assert read.blob_name() == name

    # UTF-8 input is stored as before: its text is exact, no second copy.
    plain = DeadLetter(kind=REJECTED, reason="not JSON", source="x:1", raw="café")
    plain_name = app.deadletters.put(plain)
    assert "raw_base64" not in orjson.loads(stored_letters(app)[plain_name])
    read = app.deadletters.get(plain_name)
    assert read is not None and read.raw_bytes == "café".encode()


def test_rejections_keep_their_exact_bytes_and_redelivery_leaves_one_letter(
    app: Runtime,
) -> None:
    whole = b"caf\xe9"  # a body that is not UTF-8 at all
    line = b'{"time": "2024-05-01T10:00:00Z", "caller": "\xff"}'
    bodies = [EventBody(whole, "1", 1), EventBody(jsonl([GOOD]) + line, "1", 2)]
    for _ in range(2):  # redelivered
        deliver(bodies, writer=app.writer, deadletters=app.deadletters)
    letters = {letter.source: letter for letter in app.deadletters.list(REJECTED)}
    assert {source: letter.raw_bytes for source, letter in letters.items()} == {
        "eventhub:partition=1:sequence=1": whole,
        "eventhub:partition=1:sequence=2:2": line,
    }
    assert len(stored_letters(app)) == 2


def test_a_rejected_letter_is_replayed_from_its_bytes_not_from_its_escaped_text(
    app: Runtime,
) -> None:
    # A backslash then the byte 0xE9: not UTF-8. Its text, `\\xe9`, is valid JSON (an escaped
    # backslash, then "xe9"): replaying the text would index an event nobody sent.
    line = (
        b'{"time": "2024-05-01T10:00:00Z", "category": "Administrative", '
        b'"operationName": "X/WRITE", "caller": "a\\\xe9"}'
    )
    report = deliver([EventBody(line, "0", 3)], writer=app.writer, deadletters=app.deadletters)
    assert report.deadlettered == 1
    (letter,) = app.deadletters.list(REJECTED)
    assert normalize_input(letter.raw, letter.source)[0]  # the text alone would parse...

    assert replay(app) == {"replayed": 0, "still_failing": 1}  # ...the bytes do not

    assert indexed_keys(app) == []
    (kept,) = app.deadletters.list(REJECTED)
    assert kept.raw_bytes == line


# --- item 8: a letter is claimed before it is acted on -----------------------------------------


def test_two_replays_at_once_forward_each_not_forwarded_record_once(
    forwarding: Forwarding,
) -> None:
    app, keys = not_forwarded_letters(forwarding, 50)
    first, second = forwarding.app(), forwarding.app()

    summaries = at_once(lambda: replay(first), lambda: replay(second))

    sent = forwarding.sent()
    assert sorted(key for key, count in sent.items() if count > 1) == []  # nothing doubled
    assert sorted(sent) == keys
    assert stored_letters(app) == {}
    assert sum(summary["replayed"] for summary in summaries) == 50
    assert all(summary["still_failing"] == 0 for summary in summaries)
    for summary in summaries:  # what one replay did not do, it counted as claimed elsewhere
        assert summary["replayed"] + summary.get("claimed_elsewhere", 0) <= 50
    assert app.marks.unforwarded(archived_records(app)) == set()  # every record marked


def test_two_replays_at_once_deliver_each_undelivered_body_once(
    forwarding: Forwarding,
) -> None:
    app = forwarding.app()
    bodies = [EventBody(envelope([activity_event(n)]), "4", n) for n in range(50)]
    report = deliver(
        bodies,
        writer=unreachable_writer(forwarding.settings),
        deadletters=app.deadletters,
        forwarding=app.forwarding,
    )
    assert report.deadlettered == 50
    assert len(list(app.deadletters.list(UNDELIVERED))) == 50
    first, second = forwarding.app(), forwarding.app()

    summaries = at_once(lambda: replay(first), lambda: replay(second))

    expected = keys_of(normalize_input(envelope([activity_event(n) for n in range(50)]), "x")[0])
    sent = forwarding.sent()
    assert sorted(key for key, count in sent.items() if count > 1) == []
    assert sorted(sent) == expected == indexed_keys(app)
    assert stored_letters(app) == {}
    assert sum(summary["replayed"] for summary in summaries) == 50


REPLAY_WHEN_TOLD = """
import os, sys, time
from pathlib import Path
from shared.tools import cli
from shared.adapters import storage
from tests.logs_ingestion_server import StaticTokenCredential

storage.credential_for = lambda settings: StaticTokenCredential()
(Path(os.environ["READY"]) / str(os.getpid())).touch()
go = Path(os.environ["GO"])
while not go.exists():
    time.sleep(0.01)
sys.exit(cli.main(["deadletter", "replay", "--json"]))
"""


def test_two_replay_commands_at_once_forward_each_record_once(
    forwarding: Forwarding, tmp_path: Path
) -> None:
    app, keys = not_forwarded_letters(forwarding, 50)
    environment = {
        **forwarding.environment(),
        "GO": str(tmp_path / "go"),
        "READY": str(tmp_path / "ready"),
    }
    (tmp_path / "ready").mkdir()
    commands = [
        subprocess.Popen(
            [sys.executable, "-c", REPLAY_WHEN_TOLD],
            cwd=PROJECT_ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    deadline = time.monotonic() + 120
    while len(list((tmp_path / "ready").iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # both processes have started and wait for the word
    (tmp_path / "go").touch()
    outputs = [command.communicate(timeout=300) for command in commands]

    assert [command.returncode for command in commands] == [0, 0], outputs
    sent = forwarding.sent()
    assert sorted(key for key, count in sent.items() if count > 1) == []
    assert sorted(sent) == keys
    assert stored_letters(app) == {}
    summaries = [orjson.loads(stdout) for stdout, _ in outputs]
    assert sum(summary["replayed"] for summary in summaries) == 50
    assert sum(summary.get("claimed_elsewhere", 0) for summary in summaries) > 0


def test_a_letter_claimed_elsewhere_is_skipped_and_counted(forwarding: Forwarding) -> None:
    app, keys = not_forwarded_letters(forwarding, 3)
    busy = sorted(app.deadletters.names())[0]
    claim = app.deadletters.claim(busy)  # another replay is at work on it
    assert claim is not None
    with pytest.raises(deadletter_module.LetterHeld):
        forwarding.app().deadletters.claim(busy)

    assert replay(forwarding.app()) == {"replayed": 2, "still_failing": 0, "claimed_elsewhere": 1}
    assert list(stored_letters(app)) == [busy]  # untouched
    assert len(forwarding.server.records) == 2

    claim.release()
    assert replay(forwarding.app()) == {"replayed": 1, "still_failing": 0}
    assert sorted(forwarding.sent()) == keys
    assert max(forwarding.sent().values()) == 1
    assert app.deadletters.claim(busy) is None  # gone: a claim on it finds nothing


def test_a_claim_outlives_its_lease_while_the_work_goes_on(
    app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deadletter_module, "LEASE_SECONDS", 15)  # the shortest lease there is
    monkeypatch.setattr(deadletter_module, "RENEW_SECONDS", 2)
    name = app.deadletters.put(DeadLetter(kind=REJECTED, reason="r", source="s", raw="x"))
    other = DeadLetterStore(app.stores.deadletter)
    claim = app.deadletters.claim(name)
    assert claim is not None
    with app.deadletters.holding([claim]):
        time.sleep(17)  # longer than the lease itself
        with pytest.raises(deadletter_module.LetterHeld):
            other.claim(name)
    # Released when the work is over (the letter stays): the next one may claim it at once.
    again = other.claim(name)
    assert again is not None
    again.release()


def test_a_letter_another_replay_finished_under_this_one_is_counted_by_that_one(
    app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found from outside: a replay paused past its lease, the letter replayed and removed by
    # another meanwhile, counted it `replayed` too when it resumed (its remove found the
    # letter gone, or its lease lost): 4 replayed of 3 letters.
    import shared.services.replay as replay_module

    names_ = [
        app.deadletters.put(DeadLetter(kind=REJECTED, reason="r", source=f"s{n}", raw="x"))
        for n in range(3)
    ]
    finished_elsewhere = names_[0]

    def replayed_while_another_finishes(runtime: Runtime, letter: DeadLetter) -> bool:
        if letter.source == "s0":  # the other replay takes it over and removes it meanwhile
            client = app.stores.deadletter.get_blob_client(finished_elsewhere)
            BlobLeaseClient(client).break_lease(lease_break_period=0)
            client.delete_blob()
        return True

    monkeypatch.setattr(replay_module, "_replay_one", replayed_while_another_finishes)
    assert replay(app) == {"replayed": 2, "still_failing": 0, "claimed_elsewhere": 1}
    assert list(app.deadletters.names()) == []


# --- siblings: deliveries meet claims ----------------------------------------------------------


def test_a_redelivery_leaves_a_record_whose_letter_a_replay_holds_to_that_replay(
    forwarding: Forwarding,
) -> None:
    app, keys = not_forwarded_letters(forwarding, 5)
    held_name = sorted(app.deadletters.names(NOT_FORWARDED))[0]
    held = app.deadletters.get(held_name)
    assert held is not None
    held_key = orjson.loads(held.raw_bytes)["EventKey"]
    claim = app.deadletters.claim(held_name)  # a replay is at work on this letter
    assert claim is not None

    # The batch comes again (the host's at-least-once delivery): its records are unforwarded
    # duplicates, forwarded now; not the one whose letter the replay holds.
    events = [activity_event(n) for n in range(5)]
    other = forwarding.app()
    deliver(
        [EventBody(envelope(events), "0", 1)],
        writer=other.writer,
        deadletters=other.deadletters,
        forwarding=other.forwarding,
    )
    assert sorted(forwarding.sent()) == sorted(set(keys) - {held_key})
    assert list(stored_letters(app)) == [held_name]  # the others' letters are void: removed

    claim.release()  # the replay gave up; the next one sends it
    assert replay(forwarding.app()) == {"replayed": 1, "still_failing": 0}
    assert sorted(forwarding.sent()) == keys
    assert max(forwarding.sent().values()) == 1


def test_a_replay_finishing_between_a_redeliverys_index_read_and_its_forwarding(
    forwarding: Forwarding, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, keys = not_forwarded_letters(forwarding, 5)
    delivering = forwarding.app()
    real_write = delivering.writer.write

    def write_then_a_replay_runs(records: Any) -> Any:
        written = real_write(records)  # the redelivery reads the marks: none is set...
        assert replay(forwarding.app()) == {"replayed": 5, "still_failing": 0}  # ...now all are
        return written

    monkeypatch.setattr(delivering.writer, "write", write_then_a_replay_runs)
    deliver(
        [EventBody(envelope([activity_event(n) for n in range(5)]), "0", 1)],
        writer=delivering.writer,
        deadletters=delivering.deadletters,
        forwarding=delivering.forwarding,
    )

    assert sorted(forwarding.sent()) == keys
    assert max(forwarding.sent().values()) == 1
    assert stored_letters(app) == {}


def test_a_replay_and_a_redelivery_at_once_send_each_record_once(
    forwarding: Forwarding,
) -> None:
    app, keys = not_forwarded_letters(forwarding, 50)
    events = [activity_event(n) for n in range(50)]
    replaying, delivering = forwarding.app(), forwarding.app()

    def redeliver() -> dict[str, Any]:
        return deliver(
            [EventBody(envelope(events[i : i + 5]), "0", i) for i in range(0, 50, 5)],
            writer=delivering.writer,
            deadletters=delivering.deadletters,
            forwarding=delivering.forwarding,
        ).as_dict()

    at_once(lambda: replay(replaying), redeliver)

    sent = forwarding.sent()
    assert sorted(key for key, count in sent.items() if count > 1) == []
    assert sorted(sent) == keys
    assert stored_letters(app) == {}


def test_a_letter_written_again_while_a_replay_holds_it_is_left_to_the_replay(
    app: Runtime,
) -> None:
    bodies = [EventBody(b"not json", "0", 1)]
    deliver(bodies, writer=app.writer, deadletters=app.deadletters)
    (name,) = app.deadletters.names()
    claim = app.deadletters.claim(name)
    assert claim is not None

    again = deliver(bodies, writer=app.writer, deadletters=app.deadletters)  # must not raise

    assert again.deadlettered == 1
    assert list(stored_letters(app)) == [name]
    claim.release()


def test_a_record_twice_in_a_batch_is_forwarded_once_on_redelivery(
    forwarding: Forwarding,
) -> None:
    app = forwarding.app()
    event = activity_event(7)
    bodies = [EventBody(envelope([event, event]), "0", 1), EventBody(orjson.dumps(event), "0", 2)]
    forwarding.server.fail_persistently(500)
    with pytest.raises(RetryableDeliveryError):
        deliver(
            bodies,
            writer=app.writer,
            deadletters=app.deadletters,
            forwarding=app.forwarding,
            final_attempt=False,
        )
    forwarding.server.fail_persistently(None)
    deliver(bodies, writer=app.writer, deadletters=app.deadletters, forwarding=app.forwarding)
    assert list(forwarding.sent().values()) == [1]


def test_a_replayed_rejection_is_forwarded_as_its_path_forwards(
    forwarding: Forwarding,
) -> None:
    app = forwarding.app()
    event = activity_event(3)
    del event["resourceId"]  # its subscription then comes from where it was found, if anywhere
    raw = orjson.dumps(event)
    # Letters the normalizer of the time refused and today's accepts (a fix since).
    app.deadletters.put(
        DeadLetter(
            kind=REJECTED,
            reason="old reason",
            source="eventhub:partition=0:sequence=1",
            raw=raw.decode(),
            coordinates={"partition": "0"},
            path="eventhub",
        )
    )
    blob = f"resourceId=/SUBSCRIPTIONS/{SUBSCRIPTION.upper()}/y=2024/m=05/d=01/h=10/m=00/PT1H.json"
    from_blob = {**event, "operationName": "MICROSOFT.COMPUTE/VIRTUALMACHINES/DELETE"}
    blob_raw = orjson.dumps(from_blob)
    app.deadletters.put(
        DeadLetter(
            kind=REJECTED,
            reason="old reason",
            source=f"{blob}:4",
            raw=blob_raw.decode(),
            coordinates={"blob": blob, "line": 4},
            path="blob",
        )
    )

    assert replay(app) == {"replayed": 2, "still_failing": 0}

    (hub_record,) = normalize_input(raw, "x")[0]
    (blob_record,) = normalize_input(blob_raw, "x", SUBSCRIPTION)[0]
    assert blob_record["SubscriptionId"] == SUBSCRIPTION  # as the archive path indexed it
    assert sorted(indexed_keys(app)) == sorted([hub_record["EventKey"], blob_record["EventKey"]])
    # Both paths forward what they index, so both replayed records reach Log Analytics.
    assert keys_of(forwarding.server.records) == sorted(
        [hub_record["EventKey"], blob_record["EventKey"]]
    )
    assert stored_letters(app) == {}


# --- a dead letter that is not one (damaged, or put there by hand) -----------------------


def test_an_unreadable_letter_is_reported_and_never_stops_the_others(settings: Settings) -> None:
    app = build_runtime(settings)
    good = jsonl([activity_event(1)])
    deliver(
        [EventBody(b"not json\n" + good, "0", 1)], writer=app.writer, deadletters=app.deadletters
    )
    container = app.stores.deadletter
    damaged = {
        "cli/rejected/not-json.json": b"{not json",
        "cli/rejected/wrong-shape.json": b'{"kind": 5}',
        "cli/rejected/a-list.json": b"[1, 2]",
        "cli/rejected/bad-base64.json": orjson.dumps(
            {"kind": "rejected", "reason": "r", "source": "s", "raw": "x", "raw_base64": "%%"}
        ),
    }
    for name, data in damaged.items():
        container.upload_blob(name, data, overwrite=True)
    listed = shared_cli("deadletter", "list", settings=settings)
    assert listed.returncode == 0, listed.stderr
    names = [orjson.loads(line)["name"] for line in listed.stdout.splitlines()]
    assert len(names) == 1 and names[0] not in damaged  # the real letter, still listed
    for name in damaged:
        assert name.encode() in listed.stderr  # each damaged one named, with why
    replayed = shared_cli("deadletter", "replay", "--json", settings=settings)
    assert replayed.returncode == 3, replayed.stderr  # something stays: exit 3, no traceback
    assert b"Traceback" not in replayed.stderr
    assert orjson.loads(replayed.stdout) == {"replayed": 0, "still_failing": 5}
    assert sorted(app.deadletters.names()) == sorted([*damaged, names[0]])  # nothing lost


def test_a_replay_without_forwarding_settings_says_why_not_forwarded_letters_stay(
    settings: Settings, app: Runtime
) -> None:
    # Found from outside: `still_failing 3`, exit 3, and not a word about why.
    record = normalize_input(envelope([activity_event(1)]), "x")[0][0]
    app.deadletters.put(not_forwarded_letter(record, "HTTP 401", "eventhub"))
    replayed = shared_cli("deadletter", "replay", settings=settings)
    assert replayed.returncode == 3, replayed.stderr
    said = replayed.stderr.decode()
    assert "forwarding to Log Analytics is not configured" in said
    assert names.LOGS_INGESTION_ENDPOINT in said
    assert len(list(app.deadletters.list(NOT_FORWARDED))) == 1  # kept for a replay that can


# --- the forwarding gap: records indexed where forwarding was not configured -----------------


def sent_over(app: Runtime, *, since: datetime | str, until: datetime | str) -> ForwardRangeReport:
    """`forward` over [since, until): times, or canonical TimeGenerated texts."""
    from shared.adapters.forwarding_declaration import ForwardLock
    from shared.core.query_spec import canonical
    from shared.services.forward_range import forward_range

    assert app.forwarding is not None
    low = since if isinstance(since, str) else canonical(since)
    high = until if isinstance(until, str) else canonical(until)
    lock = ForwardLock(app.stores.runs)
    return forward_range(
        app.tables, app.reader, app.forwarding, app.deadletters, since=low, until=high, lock=lock
    )


def test_records_indexed_without_forwarding_are_sent_once_by_forward_over_their_range(
    forwarding: Forwarding, app: Runtime
) -> None:
    """Found from outside: records indexed from a shell without the Logs Ingestion settings
    (backfill, ingest, a replay of undelivered bodies) while the app forwards were never sent
    and left no letter. `forward` sends what a range holds that Log Analytics has not
    accepted, once, whoever sent the rest."""
    plain = deliver(
        [EventBody(envelope([activity_event(n) for n in range(30)]), "0", 1)],
        writer=app.writer, deadletters=app.deadletters, forwarding=None,
    )  # fmt: skip
    assert plain.indexed == 30 and forwarding.server.records == []
    forwarder = forwarding.app()
    sent = deliver(
        [EventBody(envelope([activity_event(n) for n in range(30, 50)]), "1", 1)],
        writer=forwarder.writer, deadletters=forwarder.deadletters,
        forwarding=forwarder.forwarding,
    )  # fmt: skip
    assert sent.forwarded == 20
    assert forwarder.forwarding is not None
    span = {"since": datetime(2024, 1, 1, tzinfo=UTC), "until": datetime(2025, 1, 1, tzinfo=UTC)}
    report = sent_over(forwarder, **span)
    assert (report.records, report.forwarded, report.already_sent) == (50, 30, 20)
    assert sorted(forwarding.sent()) == indexed_keys(app)
    assert set(forwarding.sent().values()) == {1}
    again = sent_over(forwarder, **span)
    assert (again.records, again.forwarded, again.already_sent) == (50, 0, 50)
    assert set(forwarding.sent().values()) == {1}
    # Any range, the calendar's whole: it walks the index's months, not ten thousand years.
    ever = {"since": datetime.min.replace(tzinfo=UTC), "until": datetime.max.replace(tzinfo=UTC)}
    whole = sent_over(forwarder, **ever)
    assert (whole.records, whole.forwarded, whole.days) == (50, 0, again.days)


def test_forward_sends_only_its_range_and_letters_what_log_analytics_refuses(
    forwarding: Forwarding, app: Runtime
) -> None:
    events = [activity_event(n) for n in range(10)]
    deliver([EventBody(envelope(events), "0", 1)], writer=app.writer,
            deadletters=app.deadletters, forwarding=None)  # fmt: skip
    times = sorted(record["TimeGenerated"] for record in archived_records(app))
    middle = datetime.fromisoformat(times[5].replace("Z", "+00:00")[:26] + "+00:00")
    forwarder = forwarding.app()
    forwarding.server.script([400])  # the one call is refused for what it carries
    report = sent_over(forwarder, since=middle, until=datetime(2025, 1, 1, tzinfo=UTC))
    assert (report.records, report.forwarded, report.not_forwarded) == (5, 0, 5)
    assert len(list(app.deadletters.list(NOT_FORWARDED))) == 5
    assert forwarding.server.records == []


def test_a_shell_without_forwarding_says_that_the_app_forwards_and_how_to_send(
    forwarding: Forwarding, settings: Settings, tmp_path: Path
) -> None:
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_bytes(envelope([activity_event(n) for n in range(3)]) + b"\n")
    quiet = shared_cli("ingest", str(bodies), settings=settings)
    assert quiet.returncode == 0 and b"forward" not in quiet.stderr  # nothing forwards yet
    forwarder = forwarding.app()
    assert forwarder.forwarding is not None
    deliver([EventBody(envelope([activity_event(9)]), "0", 1)], writer=forwarder.writer,
            deadletters=forwarder.deadletters, forwarding=forwarder.forwarding)  # fmt: skip
    said = shared_cli("ingest", str(bodies), settings=settings)
    assert said.returncode == 0, said.stderr
    warning = said.stderr.decode()
    assert "forwards to Log Analytics" in warning and STREAM in warning
    assert "python -m shared forward" in warning


def test_forward_without_forwarding_settings_is_a_usage_error(settings: Settings) -> None:
    result = shared_cli("forward", "--since", "7d", settings=settings)
    assert result.returncode == 2, result.stderr  # usage
    assert names.LOGS_INGESTION_ENDPOINT.encode() in result.stderr


def test_forward_names_a_blob_whose_manifest_row_is_damaged(
    forwarding: Forwarding, app: Runtime
) -> None:
    """Found from outside: `forward` skipped a damaged manifest row without counting it."""
    deliver([EventBody(envelope([activity_event(n) for n in range(4)]), "0", 1)],
            writer=app.writer, deadletters=app.deadletters, forwarding=None)  # fmt: skip
    (victim,) = committed_blobs(app)
    partition, row = victim.manifest_keys
    found = app.tables.get(victim.month, partition, row)
    assert found is not None
    app.tables.upsert(victim.month, [{**found, "H": "not a digest"}])
    span = {"since": "2024-01-01T00:00:00.0000000Z", "until": "2025-01-01T00:00:00.0000000Z"}
    report = sent_over(forwarding.app(), **span)
    assert (report.records, report.unreadable_blobs) == (0, 1)
    assert report.unreadable == [victim.name]


def test_forward_reads_its_range_to_the_100_ns_as_query_does(
    forwarding: Forwarding, app: Runtime
) -> None:
    """Found from outside: the 100 ns digit of --since/--until was dropped, so a record just
    before --since was sent and one just before --until was not."""
    deliver([EventBody(envelope([activity_event(n) for n in range(5)]), "0", 1)],
            writer=app.writer, deadletters=app.deadletters, forwarding=None)  # fmt: skip
    times = sorted(record["TimeGenerated"] for record in archived_records(app))
    since, until = times[1][:-2] + "5Z", times[3][:-2] + "5Z"  # just after [1], after [3]
    report = sent_over(forwarding.app(), since=since, until=until)
    assert report.forwarded == 2
    assert sorted(str(r["TimeGenerated"]) for r in forwarding.server.records) == times[2:4]


@pytest.mark.parametrize(
    "args",
    [
        ("--since", "0001-01-01T00:00:00+01:00"),
        ("--since", "2024-01-01", "--until", "9999-12-31T23:59:59-01:00"),
        ("--since", "1d", "--until", "2d"),
    ],
)
def test_forward_refuses_a_range_it_cannot_read_without_a_traceback(
    forwarding: Forwarding, args: tuple[str, ...]
) -> None:
    environment = forwarding.environment()
    result = subprocess.run(
        [sys.executable, "-m", "shared", "forward", *args],
        env=environment, capture_output=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr  # usage
    assert b"Traceback" not in result.stderr and b"--" in result.stderr


FORWARD_COMMAND = """
import sys
from shared.tools import cli
from shared.adapters import storage
from tests.logs_ingestion_server import StaticTokenCredential

storage.credential_for = lambda settings: StaticTokenCredential()
sys.exit(cli.main(["forward", *sys.argv[1:]]))
"""


def test_the_forward_command_sends_what_a_shell_indexed_and_says_so(
    forwarding: Forwarding, settings: Settings, tmp_path: Path
) -> None:
    """The gap end to end, as a user meets it: the app forwards, a shell without the
    settings ingests (and is told), `forward` where they are set sends those records once."""
    forwarder = forwarding.app()
    deliver([EventBody(envelope([activity_event(99)]), "0", 1)], writer=forwarder.writer,
            deadletters=forwarder.deadletters, forwarding=forwarder.forwarding)  # fmt: skip
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_bytes(envelope([activity_event(n) for n in range(12)]) + b"\n")
    shell = shared_cli("ingest", str(bodies), settings=settings)
    assert shell.returncode == 0 and b"python -m shared forward" in shell.stderr
    assert len(forwarding.sent()) == 1

    def forward(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-c", FORWARD_COMMAND, *args, "--json"],
            cwd=PROJECT_ROOT, env=forwarding.environment(), capture_output=True,
            check=False, timeout=300,
        )  # fmt: skip

    done = forward("--since", "2024-05-01", "--until", "2024-05-02")
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout)
    assert (summary["records"], summary["forwarded"], summary["already_sent"]) == (13, 12, 1)
    assert sorted(forwarding.sent()) == indexed_keys(forwarder)
    assert set(forwarding.sent().values()) == {1}
    again = orjson.loads(forward("--since", "2024-05-01", "--until", "2024-05-02").stdout)
    assert again["forwarded"] == 0 and set(forwarding.sent().values()) == {1}


def test_one_forward_at_a_time_and_a_stale_one_is_taken_over_and_stops(
    forwarding: Forwarding, app: Runtime
) -> None:
    """Found from outside: two `forward` runs over the same records each sent those without
    a letter (up to 3 copies with four senders). A run holds the store's forward lock; a
    second is refused until it ends; a holder paused past the lock's time is taken over,
    and its next batch stops instead of sending."""
    from shared.adapters.forwarding_declaration import LOCK_TIME, ForwardHeld, ForwardLock

    deliver([EventBody(envelope([activity_event(n) for n in range(6)]), "0", 1)],
            writer=app.writer, deadletters=app.deadletters, forwarding=None)  # fmt: skip
    moment = [datetime(2026, 1, 1, tzinfo=UTC)]
    first = ForwardLock(app.stores.runs, clock=lambda: moment[0])
    second = ForwardLock(app.stores.runs, clock=lambda: moment[0])
    first.acquire()
    with pytest.raises(ForwardHeld, match="another forward"):
        second.acquire()
    first.renew()
    moment[0] += LOCK_TIME + timedelta(seconds=1)  # the first holder froze past its time
    second.acquire()
    with pytest.raises(ForwardHeld, match="taken over"):
        first.renew()
    second.release()
    span = {"since": "2024-01-01T00:00:00.0000000Z", "until": "2025-01-01T00:00:00.0000000Z"}
    sender = forwarding.app()
    assert sent_over(sender, **span).forwarded == 6  # the lock is free again
    held = ForwardLock(app.stores.runs)
    held.acquire()
    with pytest.raises(ForwardHeld):
        sent_over(sender, **span)
    held.release()
    assert set(forwarding.sent().values()) == {1}
