"""`python -m shared forward` from outside: every record the archive can hold is in reach of a
range, a run that only goes slowly keeps its lock, and records it could not read are an exit
code, not a count a script never looks at."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from shared.adapters import log_analytics
from shared.adapters.forwarding_declaration import LOCK_TIME, ForwardHeld, ForwardLock
from shared.bootstrap import Runtime
from shared.services.delivery import EventBody, deliver
from shared.services.forward_range import forward_range
from shared.settings import Settings
from tests.archive_view import committed_blobs
from tests.events import activity_event, envelope
from tests.test_cli import shared_cli
from tests.test_deadletter_replay import (
    FORWARD_COMMAND,
    PROJECT_ROOT,
    Forwarding,
    forwarding_to_loopback,
    indexed_keys,
)

# Times the normalizer archives (any year 0001-9999) that a query's range rules leave out:
# before 1970, and more than a day ahead.
ODD_TIMES = (
    "0001-01-01T00:00:00.0000000Z",
    "1969-12-31T23:59:59.0000000Z",
    "2999-01-01T00:00:00.0000000Z",
    "9999-12-31T23:59:59.0000000Z",
)
EVERYTHING = ("--since", "0001-01-01", "--until", "9999-12-31T23:59:59.9999999Z")


@pytest.fixture
def forwarding(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Forwarding]:
    yield from forwarding_to_loopback(settings, monkeypatch)


def index_unforwarded(app: Runtime, events: list[dict[str, Any]]) -> None:
    """Index events as a shell without the forwarding settings does."""
    report = deliver([EventBody(envelope(events), "0", 1)], writer=app.writer,
                     deadletters=app.deadletters, forwarding=None)  # fmt: skip
    assert report.indexed == len(events)


def forward_cli(forwarding: Forwarding, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", FORWARD_COMMAND, *args, "--json"],
        cwd=PROJECT_ROOT, env=forwarding.environment(), capture_output=True,
        check=False, timeout=300,
    )  # fmt: skip


def test_forward_and_verify_reach_every_time_the_archive_can_hold(
    forwarding: Forwarding, app: Runtime
) -> None:
    """Found from outside: `forward` refused --since before 1970 and cut --until to a day
    ahead, so records of those times (archived, and forwarded by the Event Hub path where
    forwarding is on) could never be sent; `verify` over such a range skipped them too."""
    index_unforwarded(app, [activity_event(n, time=t) for n, t in enumerate(ODD_TIMES)])
    done = forward_cli(forwarding, *EVERYTHING)
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout)
    assert (summary["records"], summary["forwarded"]) == (4, 4), summary
    assert sorted(forwarding.sent()) == indexed_keys(app)
    checked = shared_cli("verify", *EVERYTHING, "--json", settings=forwarding.settings)
    assert checked.returncode == 0, checked.stderr
    assert orjson.loads(checked.stdout)["records"] == 4


def test_forward_exits_3_when_it_cannot_read_a_blob_of_its_range(
    forwarding: Forwarding, app: Runtime
) -> None:
    """Found from outside: a damaged blob's records were left unsent with exit 0 (counted in
    `unreadable_blobs`, which a script does not read)."""
    index_unforwarded(app, [activity_event(n) for n in range(6)])
    (victim,) = committed_blobs(app)
    blob = app.stores.records.get_blob_client(victim.name)
    whole = blob.download_blob().readall()
    blob.upload_blob(whole[: len(whole) // 2], overwrite=True)
    done = forward_cli(forwarding, "--since", "2024-01-01", "--until", "2025-01-01")
    assert done.returncode == 3, done.stderr  # as when records are refused: not all sent
    assert orjson.loads(done.stdout)["unreadable"] == [victim.name]
    assert victim.name in done.stderr.decode() and "verify" in done.stderr.decode()


def test_a_run_whose_calls_are_slow_keeps_its_lock_and_a_frozen_one_stops(
    forwarding: Forwarding, app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found from outside: the lock was renewed only between batches of 5,000 records, and a
    batch's calls can outlast its time under throttling (each call up to minutes of
    Retry-After): a second run took over and both sent the same records. The holder renews
    as it goes; one frozen past the lock's time stops at its next call."""
    index_unforwarded(app, [activity_event(n) for n in range(40)])
    monkeypatch.setattr(log_analytics, "CHUNK_TARGET_BYTES", 6_000)  # several calls
    moment = [datetime(2026, 1, 1, tzinfo=UTC)]
    rival = ForwardLock(app.stores.runs, clock=lambda: moment[0])
    sender = forwarding.app()
    assert sender.forwarding is not None
    client = sender.forwarding.forwarder._client
    upload, calls, refused = client.upload, [], []

    def slow_upload(**kwargs: Any) -> None:
        calls.append(1)
        moment[0] += LOCK_TIME * 0.4  # each call takes a long while, the run is alive
        try:
            rival.acquire()
        except ForwardHeld:
            refused.append(1)
        else:
            raise AssertionError(f"a live run lost its lock at call {len(calls)}")
        upload(**kwargs)

    monkeypatch.setattr(client, "upload", slow_upload)
    span = {"since": "2024-01-01T00:00:00.0000000Z", "until": "2025-01-01T00:00:00.0000000Z"}
    lock = ForwardLock(app.stores.runs, clock=lambda: moment[0])
    report = forward_range(sender.tables, sender.reader, sender.forwarding, sender.deadletters,
                           **span, lock=lock)  # fmt: skip
    assert len(calls) >= 4 and len(refused) == len(calls)
    assert report.forwarded == 40 and set(forwarding.sent().values()) == {1}

    # Frozen past its lock's time between two calls: taken over, and it sends nothing more.
    index_unforwarded(app, [activity_event(n) for n in range(100, 140)])
    sent_before = len(forwarding.server.records)
    frozen = ForwardLock(app.stores.runs, clock=lambda: moment[0])
    rival.release()
    thawed: list[int] = []

    def freeze_after_first(**kwargs: Any) -> None:
        upload(**kwargs)
        if not thawed:  # frozen past the lock's time; another run takes over meanwhile
            thawed.append(1)
            moment[0] += LOCK_TIME + timedelta(seconds=1)
            rival.acquire()

    monkeypatch.setattr(client, "upload", freeze_after_first)
    with pytest.raises(ForwardHeld, match="taken over"):
        forward_range(sender.tables, sender.reader, sender.forwarding, sender.deadletters,
                      **span, lock=frozen)  # fmt: skip
    assert 0 < len(forwarding.server.records) - sent_before < 40  # the first call only
