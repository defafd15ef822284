"""`python -m shared run`: the whole pipeline on one machine, through the app's own functions.

It generates a realistic day of Activity Log traffic (or takes a user's folder), writes it
the two ways Azure delivers it (PT1H.json append blobs that grow during their hour, and Event
Hub batches), drives the functions function_app registered (blob trigger, catch-up timer,
Event Hub, retention) with the real azure.functions binding types, and ends with what was
indexed and a few example queries. Counts come from what the functions themselves report.
"""

from __future__ import annotations

import itertools
import logging
import random
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import orjson
from azure.functions.timer import TimerRequest  # the worker's concrete timer binding

from functions.eventhub_trigger import MAX_EVENT_BATCH_SIZE as BATCH
from functions.eventhub_trigger import MAX_RETRIES
from shared import settings as names
from shared.bootstrap import Runtime, runtime
from shared.core.pt1h import BlobPath, blob_name
from shared.core.query_spec import parse_query
from shared.services.query import run_query
from shared.tools.azurite import local_storage
from shared.tools.generate import generate_events
from shared.tools.local_host import Invocation, Retry, app_settings, event_hub_batch, registered
from shared.tools.query_cli import format_table

COUNTED = ("events", "indexed", "duplicates", "deadlettered")
BLOCK_BYTES = 4 * 1024 * 1024  # an append block holds at most 4 MiB


@dataclass
class Tally:
    """What the functions reported, summed per path (read from their own log records)."""

    by_path: dict[str, dict[str, int]] = field(default_factory=dict)
    retention: dict[str, Any] = field(default_factory=dict)

    def add(self, path: str, counts: dict[str, Any]) -> None:
        totals = self.by_path.setdefault(path, dict.fromkeys(COUNTED, 0))
        for name in COUNTED:
            totals[name] += int(counts.get(name, 0))

    def total(self) -> dict[str, int]:
        return {name: sum(path[name] for path in self.by_path.values()) for name in COUNTED}


class _ReportCollector(logging.Handler):
    """Collects the counts each function logs with its report (its structured dimensions)."""

    def __init__(self, tally: Tally) -> None:
        super().__init__(logging.INFO)
        self._tally = tally

    def emit(self, record: logging.LogRecord) -> None:
        fields = record.__dict__
        if record.name.startswith("functions.retention"):
            self._tally.retention = {
                k: fields[k]
                for k in ("records_deleted", "records_kept", "blobs_deleted", "dry_run")
                if k in fields
            }
        elif all(name in fields for name in COUNTED):
            path = (
                record.name.removeprefix("functions.")
                .removesuffix("_trigger")
                .removesuffix("_timer")
            )
            self._tally.add(path, fields)


@contextmanager
def _collecting(tally: Tally) -> Iterator[None]:
    collector = _ReportCollector(tally)
    logger = logging.getLogger("functions")
    previous = logger.level
    logger.addHandler(collector)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(collector)
        logger.setLevel(previous)


def _event_time(event: dict[str, Any]) -> datetime:
    text = str(event.get("time") or event.get("eventTimestamp"))
    return datetime.fromisoformat(text[:19]).replace(tzinfo=UTC)


def _subscription_of(event: dict[str, Any]) -> str:
    resource = str(event.get("resourceId") or "")
    parts = resource.split("/")
    if len(parts) > 2 and parts[1].lower() == "subscriptions":
        return parts[2].lower()
    return str(event.get("subscriptionId") or "")


def _grow_blob(
    app: Runtime, name: str, data: bytes, trigger: Callable[..., Any], *, growing: bool
) -> None:
    """Write a PT1H.json as Azure does: created, then appended to, in pieces that cut lines.

    Event Grid announces the blob once, when it is created: what grows after that is the
    catch-up timer's. A finished blob (a user's archive) is announced once it is whole.
    """
    blob = app.stores.archive.get_blob_client(name)
    blob.create_append_blob()
    pieces = 4 if growing else 1
    cuts = sorted(
        {0, len(data), *(min(len(data), len(data) * k // pieces + 7) for k in range(1, pieces))}
    )
    for index, (start, end) in enumerate(itertools.pairwise(cuts)):
        for offset in range(start, end, BLOCK_BYTES):
            blob.append_block(data[offset : min(end, offset + BLOCK_BYTES)])
        if index == 0:
            trigger(blob)
    if not growing and not data:
        trigger(blob)


def _generated_day(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)  # noqa: S311 - demo data
    subscriptions = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(3)]
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return generate_events(
        count,
        seed=seed,
        start=end - timedelta(days=1),
        span=timedelta(days=1),
        subscriptions=subscriptions,
    )


def _drive_generated(app: Runtime, count: int, seed: int, say: Callable[[str], None]) -> int:
    """Send a day of traffic both ways; returns how many events (instances) were sent."""
    events = _generated_day(count, seed)
    rng = random.Random(seed + 1)  # noqa: S311 - demo data
    by_blob: dict[str, list[bytes]] = {}
    hub_bodies: list[bytes] = []
    pending: list[dict[str, Any]] = []
    sent = 0
    for number, event in enumerate(events):
        line = orjson.dumps(event) + b"\n"
        if number % 2 == 0:
            name = blob_name(
                _subscription_of(event), _event_time(event).replace(minute=0, second=0)
            )
            by_blob.setdefault(name, []).append(line)
            sent += 1
            if number % 40 == 0:
                pending.append(event)  # Azure sends it both ways: one index row all the same
                sent += 1
        else:
            pending.append(event)
            sent += 1
        if len(pending) >= rng.randint(1, 6):
            hub_bodies.append(orjson.dumps({"records": pending}))
            pending = []
    if pending:
        hub_bodies.append(orjson.dumps({"records": pending}))
    # Real exports carry the odd broken line or body: they end as dead letters, with reasons.
    first_blob = next(iter(by_blob))
    by_blob[first_blob].insert(1, b'{"time": "not a time", "category": "Administrative"}\n')
    hub_bodies.insert(len(hub_bodies) // 2, b"\x1f\x8b this body is not JSON")
    sent += 2

    say(f"writing {len(by_blob)} PT1H.json append blobs and {len(hub_bodies)} Event Hub bodies")
    blob_trigger = registered("archive_blob")
    for name, lines in by_blob.items():
        _grow_blob(app, name, b"".join(lines), blob_trigger, growing=True)
    registered("archive_catchup")(TimerRequest(past_due=False))
    event_hub = registered("activity_events")
    for start in range(0, len(hub_bodies), BATCH):
        batch = event_hub_batch(
            hub_bodies[start : start + BATCH],
            partition=str(start // BATCH % 4),
            first_sequence=start,
        )
        event_hub(batch, Invocation("activity_events", Retry(0, MAX_RETRIES)))
    return sent


def _drive_source(app: Runtime, source: Path, say: Callable[[str], None]) -> int:
    """A user's folder: an archive container's copy (PT1H layout), or files of hub bodies."""
    from shared.tools.cli import event_hub_bodies

    files = sorted(path for path in source.rglob("*") if path.is_file())
    archive = [path for path in files if BlobPath.parse(path.relative_to(source).as_posix()).hour]
    if archive:
        say(f"indexing {len(archive)} archived blobs from {source}")
        trigger = registered("archive_blob")
        for path in archive:
            name = path.relative_to(source).as_posix()
            _grow_blob(app, name, path.read_bytes(), trigger, growing=False)
        registered("archive_catchup")(TimerRequest(past_due=False))
        return 0
    bodies = [
        body.body for path in files for body in event_hub_bodies(str(path), path.read_bytes())
    ]
    say(f"delivering {len(bodies)} Event Hub bodies from {source}")
    event_hub = registered("activity_events")
    for start in range(0, len(bodies), BATCH):
        event_hub(
            event_hub_batch(bodies[start : start + BATCH]),
            Invocation("activity_events", Retry(0, MAX_RETRIES)),
        )
    return 0


def _examples(app: Runtime, out: TextIO) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    newest = run_query(
        parse_query({"limit": "1", "since": "30d"}, now), tables=app.tables, reader=app.reader
    ).records
    if not newest:
        return []
    sample = newest[0]
    examples = [
        ("the 5 newest records", {"limit": "5", "since": "2d"}),
        (
            f"subscription {sample['SubscriptionId']}, last 6 hours",
            {"subscription": sample["SubscriptionId"], "since": "6h", "limit": "5"},
        ),
        (
            f"everything {sample['Caller'] or 'the newest caller'} did",
            {"caller": sample["Caller"], "since": "2d", "limit": "5"},
        ),
        ("Security events", {"category": "Security", "since": "2d", "limit": "5"}),
    ]
    shown = []
    for title, params in examples:
        if any(value == "" for value in params.values()):
            continue
        page = run_query(parse_query(params, now), tables=app.tables, reader=app.reader)
        flags = " ".join(f"--{name.replace('_', '-')} {value!r}" for name, value in params.items())
        out.write(f"\n$ python -m shared query {flags} --format table   # {title}\n")
        out.write(format_table(page.records))
        shown.append({"query": params, "records": len(page.records)})
    return shown


def run(*, source: Path | None, count: int, seed: int | None, as_json: bool) -> dict[str, Any]:
    messages = sys.stderr if as_json else sys.stdout

    def say(text: str) -> None:
        messages.write(f"• {text}\n")
        messages.flush()

    tally = Tally()
    with local_storage(say) as connection:
        settings = {
            # The demo's day reaches back 24 hours: the catch-up looks back over all of it.
            names.CATCHUP_LOOKBACK_HOURS: "26",
            **({names.STORAGE_CONNECTION: connection} if connection else {}),
        }
        with app_settings(settings), _collecting(tally):
            app = runtime()
            if not app.stores.archive.exists():
                app.stores.archive.create_container()
            seed = seed if seed is not None else int(datetime.now(UTC).timestamp())
            sent = (
                _drive_source(app, source, say)
                if source
                else _drive_generated(app, count, seed, say)
            )
            registered("retention")(TimerRequest(past_due=False))
            summary: dict[str, Any] = {**tally.total(), "by_path": tally.by_path}
            if sent:
                summary["sent"] = sent
            summary["retention"] = tally.retention
            summary["dead_letters"] = sorted(
                {letter.reason.split(":")[0] for letter in app.deadletters.list()}
            )
            examples_out = sys.stderr if as_json else sys.stdout
            summary["examples"] = _examples(app, examples_out)
    return summary
