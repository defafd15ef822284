"""The blob path: PT1H.json append blobs indexed incrementally on Azurite, none missed."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime, timedelta

import orjson
from azure.storage.blob import BlobClient, ContainerClient

from shared import settings as names
from shared.adapters.blobs import ArchiveBlob
from shared.adapters.cursors import Watermark
from shared.adapters.deadletters import REJECTED
from shared.bootstrap import Runtime, runtime
from shared.core.keys import LOOKUP_COLUMNS
from shared.core.normalize import normalize_input
from shared.core.pt1h import BlobPath, blob_name, hours_back
from shared.services.archive_write import ClaimedElsewhere
from shared.services.blob_indexing import BlobIndexer
from shared.services.catchup import catch_up
from shared.services.delivery import EventBody, deliver
from shared.services.report import BlobReport
from shared.settings import Settings
from shared.tools.local_host import app_settings, registered
from tests.archive_view import archived_keys, archived_records, posting_places
from tests.events import SUBSCRIPTION, activity_event, envelope, jsonl

HOUR = datetime(2024, 5, 1, 10, tzinfo=UTC)
RETRIES = 20


def pt1h_name(hour: datetime = HOUR, subscription: str = SUBSCRIPTION) -> str:
    return (
        f"resourceId=/SUBSCRIPTIONS/{subscription.upper()}/y={hour:%Y}/m={hour:%m}/d={hour:%d}"
        f"/h={hour:%H}/m=00/PT1H.json"
    )


def archive(app: Runtime) -> ContainerClient:
    container = app.stores.archive
    if not container.exists():
        container.create_container()
    return container


def append_blob(app: Runtime, name: str) -> BlobClient:
    blob = archive(app).get_blob_client(name)
    blob.create_append_blob()
    return blob


def indexed_keys(app: Runtime) -> list[str]:
    """EventKeys in the archive's committed blobs, sorted, duplicates kept."""
    return archived_keys(app)


def keys_of(data: bytes) -> list[str]:
    return sorted(record["EventKey"] for record in normalize_input(data, "x")[0])


def test_a_growing_blob_is_read_once_with_appends_ending_mid_line(archive_app: Runtime) -> None:
    app = archive_app
    name = pt1h_name()
    blob = append_blob(app, name)
    data = jsonl([activity_event(n) for n in range(60)])
    cuts = sorted({0, len(data), *range(97, len(data), 331)})
    bytes_read = 0
    reports = []
    for start, end in itertools.pairwise(cuts):
        blob.append_block(data[start:end])
        report = app.blob_indexer.index(ArchiveBlob(app.stores.archive, name))
        reports.append(report)
        bytes_read += report.bytes_read
    assert indexed_keys(app) == keys_of(data)
    assert sum(r.indexed for r in reports) == 60
    assert sum(r.duplicates for r in reports) == 0
    longest_line = max(len(line) + 1 for line in data.split(b"\n"))
    # Each byte once, plus at most one partial line re-read per read.
    assert len(data) <= bytes_read <= len(data) + len(reports) * longest_line
    again = app.blob_indexer.index(ArchiveBlob(app.stores.archive, name))
    assert (again.bytes_read, again.events) == (0, 0)


def test_an_unterminated_last_line_waits_until_it_parses(archive_app: Runtime) -> None:
    app = archive_app
    name = pt1h_name()
    blob = append_blob(app, name)
    line = orjson.dumps(activity_event(1))
    blob.append_block(line[:50])
    assert app.blob_indexer.index(ArchiveBlob(app.stores.archive, name)).events == 0
    # Complete, with no newline yet: one whole JSON object is a complete line (the spec).
    blob.append_block(line[50:])
    assert app.blob_indexer.index(ArchiveBlob(app.stores.archive, name)).indexed == 1
    blob.append_block(b"\n")  # its newline, later: a blank line, nothing new
    again = app.blob_indexer.index(ArchiveBlob(app.stores.archive, name))
    assert (again.events, again.deadlettered) == (0, 0)


def index_retrying(indexer: BlobIndexer, source: ArchiveBlob) -> BlobReport | Exception:
    """Index, trying again for a few seconds while another writer holds some of the events
    (ClaimedElsewhere), as a trigger's retry or the next catch-up run would; what it ended in."""
    for _ in range(RETRIES):
        try:
            return indexer.index(source)
        except ClaimedElsewhere:
            time.sleep(0.25)
        except Exception as error:  # reported by the test, not lost in its thread
            return error
    return ClaimedElsewhere(f"still held after {RETRIES} tries")


def test_two_indexers_at_once_on_one_blob_neither_skip_nor_double(archive_app: Runtime) -> None:
    app = archive_app
    name = pt1h_name()
    blob = append_blob(app, name)
    data = jsonl([activity_event(n) for n in range(400)])
    for start in range(0, len(data), 20_000):
        blob.append_block(data[start : start + 20_000])
    first = BlobIndexer(app.writer, app.cursors, app.deadletters, chunk_bytes=16_384)
    second = BlobIndexer(app.writer, app.cursors, app.deadletters, chunk_bytes=24_576)
    reports: list[BlobReport | Exception] = []
    workers = [
        threading.Thread(
            target=lambda i=i: reports.append(
                index_retrying(i, ArchiveBlob(app.stores.archive, name))
            )
        )
        for i in (first, second)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done = [r for r in reports if isinstance(r, BlobReport)]
    assert len(done) == 2, reports  # each finishes (the other's claims do not hold it for long)
    assert indexed_keys(app) == keys_of(data)
    assert sum(r.indexed for r in done) == 400  # each record indexed by exactly one
    cursor = app.cursors.load(name, HOUR)
    assert cursor.offset == len(data)


def test_catch_up_alone_finds_every_blob_no_trigger_announced(archive_app: Runtime) -> None:
    app = archive_app
    now = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    expected: list[str] = []
    for number, hour in enumerate([now - timedelta(hours=h) for h in range(4)]):
        for second, subscription in enumerate(
            (SUBSCRIPTION, "0a1b2c3d-0000-4000-8000-000000000001")
        ):
            data = jsonl(
                [
                    activity_event(
                        number * 100 + n,
                        time=(hour + timedelta(minutes=n, seconds=second)).isoformat(),
                    )
                    for n in range(5)
                ]
            )
            append_blob(app, pt1h_name(hour.replace(minute=0), subscription)).append_block(data)
            expected += keys_of(data)
    report = catch_up(app.blob_indexer, app.stores.archive, now=now, hours=5)
    assert report.failed == []
    assert indexed_keys(app) == sorted(expected)
    assert catch_up(app.blob_indexer, app.stores.archive, now=now, hours=5).indexed == 0


def test_sealed_blobs_are_skipped_by_catch_up(archive_app: Runtime) -> None:
    app = archive_app
    name = pt1h_name(HOUR)
    append_blob(app, name).append_block(jsonl([activity_event(1)]))
    later = datetime.now(UTC) + timedelta(hours=3)
    app.blob_indexer.index(ArchiveBlob(app.stores.archive, name), now=later)
    assert app.cursors.load(name, HOUR).sealed


def test_the_blob_trigger_function_indexes_the_blob_it_is_handed(
    settings: Settings, archive_app: Runtime
) -> None:
    app = archive_app
    name = pt1h_name()
    data = jsonl([activity_event(n) for n in range(7)])
    blob = append_blob(app, name)
    blob.append_block(data)
    with app_settings(
        {
            names.STORAGE_CONNECTION: settings.storage_connection,
            names.STORE_PREFIX: settings.store_prefix,
            names.ARCHIVE_CONTAINER: app.stores.archive.container_name,
        }
    ):
        registered("archive_blob")(blob)  # the SDK-type binding hands over a BlobClient
        function_app = runtime()
    assert indexed_keys(function_app) == keys_of(data)


def test_the_pre_2018_envelope_form(archive_app: Runtime) -> None:
    app = archive_app
    name = pt1h_name()
    data = envelope([activity_event(n) for n in range(12)])
    append_blob(app, name).append_block(data)
    report = app.blob_indexer.index(ArchiveBlob(app.stores.archive, name))
    assert (report.events, report.indexed) == (12, 12)
    assert indexed_keys(app) == keys_of(data)


def test_subscription_comes_from_the_path_when_the_record_lacks_it(archive_app: Runtime) -> None:
    app = archive_app
    event = activity_event(1, resourceId="")
    append_blob(app, pt1h_name()).append_block(jsonl([event]))
    app.blob_indexer.index(ArchiveBlob(app.stores.archive, pt1h_name()))
    (record,) = archived_records(app)
    assert record["SubscriptionId"] == SUBSCRIPTION


def test_the_name_builder_and_the_parser_share_one_grammar() -> None:
    assert blob_name(SUBSCRIPTION, HOUR) == pt1h_name()
    assert BlobPath.parse(blob_name(SUBSCRIPTION, HOUR)) == BlobPath(
        SUBSCRIPTION.lower(), HOUR, listed=True
    )
    early = datetime(999, 1, 2, 3, tzinfo=UTC)  # years before 1000 keep four digits
    assert "/y=0999/m=01/d=02/h=03/m=00/PT1H.json" in blob_name(SUBSCRIPTION, early)
    assert BlobPath.parse(blob_name(SUBSCRIPTION, early)).hour == early


def test_a_blob_outside_the_layout_is_indexed_from_its_content(archive_app: Runtime) -> None:
    app = archive_app
    append_blob(app, "exports/manual.json").append_block(jsonl([activity_event(3)]))
    assert BlobPath.parse("exports/manual.json").hour is None
    assert (
        app.blob_indexer.index(ArchiveBlob(app.stores.archive, "exports/manual.json")).indexed == 1
    )


def test_poison_lines_and_blobs_are_dead_lettered_with_blob_and_line(archive_app: Runtime) -> None:
    app = archive_app
    good = [activity_event(n) for n in range(3)]
    data = (
        jsonl(good[:1])
        + b"not an event\n"
        + jsonl(good[1:2])
        + b'{"time": "yesterday"}\n'
        + jsonl(good[2:])
    )
    name = pt1h_name()
    append_blob(app, name).append_block(data)
    garbage = pt1h_name(HOUR - timedelta(hours=1))
    append_blob(app, garbage).append_block(b"\x00\x01 binary junk, not JSON at all\n")
    report = app.blob_indexer.index(ArchiveBlob(app.stores.archive, name))
    assert (report.events, report.indexed, report.deadlettered) == (5, 3, 2)
    junk = app.blob_indexer.index(ArchiveBlob(app.stores.archive, garbage))
    assert (junk.events, junk.deadlettered) == (1, 1)
    letters = {
        letter.coordinates["line"]: letter
        for letter in app.deadletters.list(REJECTED)
        if letter.coordinates["blob"] == name
    }
    assert sorted(letters) == [2, 4]
    assert letters[2].raw == "not an event"
    assert letters[2].source == f"{name}:2"


def test_a_two_megabyte_record_and_huge_hostile_key_values_are_archived_whole(
    archive_app: Runtime,
) -> None:
    """Records of any size go into the archive blob whole; key values of any size or content
    (10 KB, control characters, `/ \\ # ?`) become posting rows Table storage accepts."""
    app = archive_app
    long_id = (
        f"/subscriptions/{SUBSCRIPTION}/resourcegroups/rg/providers/microsoft.web/sites/"
        + "s" * 10_240
    )
    events = [
        activity_event(1, properties={"statusCode": "OK", "huge": "q" * 2_000_000}),
        activity_event(
            2,
            resourceId=long_id,
            caller="c\x00\x1b[31m/\\#?\u0085" * 1000,
            correlationId="corr/\\#?\x07\x7f\r\n x",
        ),
        activity_event(
            3,
            resourceId=f"/subscriptions/{SUBSCRIPTION}/resourceGroups/r#g/providers/a.b/n?x\\y\x01",
            operationName="Op/\\#?\t",
        ),
    ]
    data = jsonl(events)
    name = pt1h_name()
    append_blob(app, name).append_block(data[:1_000_000])
    append_blob_client = app.stores.archive.get_blob_client(name)
    for start in range(1_000_000, len(data), 1_000_000):
        append_blob_client.append_block(data[start : start + 1_000_000])
    indexer = BlobIndexer(app.writer, app.cursors, app.deadletters, chunk_bytes=256 * 1024)
    report = indexer.index(ArchiveBlob(app.stores.archive, name))
    assert (report.indexed, report.deadlettered) == (3, 0)
    records = sorted(normalize_input(data, "x")[0], key=lambda r: r["EventKey"])
    assert max(len(orjson.dumps(r)) for r in records) > 2_000_000
    assert max(len(r["ResourceId"]) for r in records) > 10_240
    # Whole, never truncated: the archive holds each record as normalized.
    assert sorted(archived_records(app), key=lambda r: r["EventKey"]) == records
    for record in records:
        for kind, column in LOOKUP_COLUMNS.items():
            value = record[column]
            if not (isinstance(value, str) and value.strip()):
                continue
            # The value's posting row was stored, and leads back to the record itself.
            fetched = app.reader.fetch(posting_places(app, kind, value))
            assert record in fetched, (kind, value[:60])


def test_one_event_by_event_hub_and_by_blob_is_one_row(archive_app: Runtime) -> None:
    app = archive_app
    event = activity_event(9)
    by_hub = deliver([EventBody(envelope([event]))], writer=app.writer, deadletters=app.deadletters)
    append_blob(app, pt1h_name()).append_block(
        b" " + orjson.dumps(event, option=orjson.OPT_SORT_KEYS) + b"\n"
    )
    by_blob = app.blob_indexer.index(ArchiveBlob(app.stores.archive, pt1h_name()))
    assert (by_hub.indexed, by_blob.indexed, by_blob.duplicates) == (1, 0, 1)
    assert len(indexed_keys(app)) == 1


def test_a_blob_that_keeps_failing_never_stalls_the_others(archive_app: Runtime) -> None:
    app = archive_app
    now = datetime(2024, 5, 1, 11, 30, tzinfo=UTC)
    names_and_data = {}
    for number, subscription in enumerate(
        (
            SUBSCRIPTION,
            "0a1b2c3d-0000-4000-8000-000000000001",
            "0a1b2c3d-0000-4000-8000-000000000002",
        )
    ):
        name = pt1h_name(HOUR, subscription)
        data = jsonl([activity_event(number * 10 + n) for n in range(4)])
        append_blob(app, name).append_block(data)
        names_and_data[name] = data
    broken = pt1h_name(HOUR, SUBSCRIPTION)
    # A damaged cursor (its offset is not a number) makes this blob fail on every run.
    app.stores.cursors.upsert_entity(
        {**app.cursors.load(broken, HOUR).entity(), "Offset": "not a number"}
    )
    for _ in range(2):
        report = catch_up(app.blob_indexer, app.stores.archive, now=now, hours=2)
        assert report.failed == [broken]
    healthy = b"".join(data for name, data in names_and_data.items() if name != broken)
    assert indexed_keys(app) == keys_of(healthy)


# --- the catch-up watermark: an outage longer than the lookback misses nothing ----------------


def write_events(
    app: Runtime, hour: datetime, first: int, count: int, subscription: str = SUBSCRIPTION
) -> bytes:
    """Append `count` events (numbered from `first`) to the hour's PT1H.json, made if new."""
    blob = archive(app).get_blob_client(pt1h_name(hour, subscription))
    if not blob.exists():
        blob.create_append_blob()
    data = jsonl(
        [
            activity_event(first + n, time=(hour + timedelta(minutes=n)).isoformat())
            for n in range(count)
        ]
    )
    blob.append_block(data)
    return data


def test_an_outage_longer_than_the_lookback_misses_nothing(archive_app: Runtime) -> None:
    app = archive_app
    before = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    data = write_events(app, HOUR, 0, 4) + write_events(app, HOUR + timedelta(hours=2), 10, 4)
    first = catch_up(app.blob_indexer, app.stores.archive, now=before, hours=5)
    assert (first.failed, first.indexed) == ([], 8)
    # The first run ever looks at the recent hours only, and marks where they start.
    assert app.cursors.watermark().hour == hours_back(before, 5)[-1]

    # Down for 30 hours: a blob that had been indexed grows, and new hours are written.
    later = before + timedelta(hours=30)
    outage = [
        write_events(app, HOUR + timedelta(hours=2), 14, 3),
        write_events(app, HOUR + timedelta(hours=3), 20, 5),
        write_events(app, HOUR + timedelta(hours=3), 30, 2, "0a1b2c3d-0000-4000-8000-000000000001"),
        write_events(app, HOUR + timedelta(hours=9), 40, 3),
        write_events(app, HOUR + timedelta(hours=20), 50, 6),
    ]
    assert HOUR + timedelta(hours=20) < hours_back(later, 5)[-1]  # all out of the window
    recent = write_events(app, later.replace(minute=0), 60, 2)
    missed = b"".join(outage) + recent

    report = catch_up(app.blob_indexer, app.stores.archive, now=later, hours=5)
    assert report.failed == []
    assert (report.events, report.indexed, report.duplicates) == (21, 21, 0)
    assert indexed_keys(app) == keys_of(data + missed)
    assert app.cursors.watermark().hour == hours_back(later, 5)[-1]
    again = catch_up(app.blob_indexer, app.stores.archive, now=later, hours=5)
    assert (again.events, again.indexed, again.duplicates) == (0, 0, 0)


def test_a_long_outage_is_covered_over_several_runs_oldest_first(archive_app: Runtime) -> None:
    app = archive_app
    archive(app)
    before = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    catch_up(app.blob_indexer, app.stores.archive, now=before, hours=2, max_hours=4)
    assert app.cursors.watermark().hour == HOUR  # 12:00 minus two hours

    # Fourteen hours written while down (10:00 to 23:00), two events each, and one recent.
    by_hour = {
        HOUR + timedelta(hours=h): write_events(app, HOUR + timedelta(hours=h), h * 10, 2)
        for h in range(14)
    }
    later = datetime(2024, 5, 2, 2, 30, tzinfo=UTC)
    start = hours_back(later, 2)[-1]  # 00:00 on the 2nd
    recent = write_events(app, later.replace(minute=0), 500, 3)

    done, previous = recent, HOUR
    expected_marks = [HOUR + timedelta(hours=h) for h in (4, 8, 12)] + [start]
    for run, mark in enumerate(expected_marks):
        report = catch_up(app.blob_indexer, app.stores.archive, now=later, hours=2, max_hours=4)
        # Each run takes the oldest four hours of the backlog (and the recent ones, each time).
        covered = [hour for hour in by_hour if previous <= hour < mark]
        assert len(covered) == (4 if mark < start else 2)
        fresh = sum(len(keys_of(by_hour[hour])) for hour in covered)
        assert report.failed == []
        assert (report.indexed, report.duplicates) == (fresh + (3 if run == 0 else 0), 0)
        assert app.cursors.watermark().hour == mark
        done += b"".join(by_hour[hour] for hour in covered)
        assert indexed_keys(app) == keys_of(done)  # nothing newer in the backlog yet
        previous = mark
    assert indexed_keys(app) == keys_of(recent + b"".join(by_hour.values()))
    final = catch_up(app.blob_indexer, app.stores.archive, now=later, hours=2, max_hours=4)
    assert (final.indexed, final.duplicates) == (0, 0)
    assert app.cursors.watermark().hour == start


def test_a_failing_blob_holds_the_watermark_at_its_hour(archive_app: Runtime) -> None:
    app = archive_app
    archive(app)
    catch_up(
        app.blob_indexer,
        app.stores.archive,
        now=datetime(2024, 5, 1, 8, 30, tzinfo=UTC),
        hours=2,
    )
    assert app.cursors.watermark().hour == HOUR - timedelta(hours=4)  # 06:00
    other = "0a1b2c3d-0000-4000-8000-000000000001"
    broken = pt1h_name(HOUR - timedelta(hours=3))  # 07:00
    held = write_events(app, HOUR - timedelta(hours=3), 0, 3)
    healthy = (
        write_events(app, HOUR - timedelta(hours=3), 10, 3, other)
        + write_events(app, HOUR - timedelta(hours=1), 20, 3)
        + write_events(app, HOUR + timedelta(hours=5), 30, 3, other)
    )
    # A damaged cursor (its offset is not a number) makes this blob fail on every run.
    damaged = {**app.cursors.load(broken, HOUR - timedelta(hours=3)).entity()}
    app.stores.cursors.upsert_entity({**damaged, "Offset": "not a number"})

    later = datetime(2024, 5, 2, 8, 30, tzinfo=UTC)
    for run in range(2):
        report = catch_up(app.blob_indexer, app.stores.archive, now=later, hours=2)
        assert report.failed == [broken]
        assert report.indexed == (9 if run == 0 else 0)
        assert indexed_keys(app) == keys_of(healthy)
        # Forward to the failed blob's hour, not past it: the next run looks there again.
        assert app.cursors.watermark().hour == HOUR - timedelta(hours=3)

    app.stores.cursors.delete_entity(damaged["PartitionKey"], damaged["RowKey"])  # repaired
    report = catch_up(app.blob_indexer, app.stores.archive, now=later, hours=2)
    assert (report.failed, report.indexed, report.duplicates) == ([], 3, 0)
    assert indexed_keys(app) == keys_of(healthy + held)
    assert app.cursors.watermark().hour == hours_back(later, 2)[-1]


def test_the_watermark_write_is_conditional_and_a_lost_race_is_ignored(
    archive_app: Runtime,
) -> None:
    app = archive_app
    cursors = app.cursors
    assert cursors.watermark() == Watermark()
    assert cursors.move_watermark(Watermark(), HOUR)
    assert not cursors.move_watermark(Watermark(), HOUR + timedelta(hours=5))  # created meanwhile
    read = cursors.watermark()
    assert read.hour == HOUR
    assert cursors.move_watermark(read, HOUR + timedelta(hours=1))
    assert not cursors.move_watermark(read, HOUR + timedelta(hours=9))  # moved meanwhile
    assert cursors.watermark().hour == HOUR + timedelta(hours=1)
    # Unreadable: looked at as absent (the recent hours only), then replaced by the next run.
    app.stores.cursors.upsert_entity(
        {"PartitionKey": "catchup", "RowKey": "watermark", "Hour": "garbage"}
    )
    assert cursors.watermark().hour is None
    now = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    catch_up(app.blob_indexer, archive(app), now=now, hours=2)
    assert cursors.watermark().hour == HOUR
