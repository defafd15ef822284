"""PT1H.json blobs as real exports leave them: unterminated last lines, replaced blobs, names
outside the layout, and JSON Lines that start with a one-line envelope. Real Azurite."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from shared.adapters.blobs import ArchiveBlob, BlobState
from shared.adapters.deadletters import REJECTED
from shared.bootstrap import Runtime
from shared.core.normalize import normalize_input
from shared.core.pt1h import BlobPath
from shared.services.blob_indexing import CHANGED_TRIES
from shared.services.catchup import container_sources, index_each
from shared.settings import Settings
from shared.tools.folder import folder_sources
from tests.events import SUBSCRIPTION, activity_event, envelope, jsonl
from tests.test_blobindex import append_blob, indexed_keys, keys_of, pt1h_name
from tests.test_cli import shared_cli

HOUR = datetime(2024, 5, 1, 10, tzinfo=UTC)
# Long after the hour and after any Last-Modified: the blob can no longer grow.
LATER = datetime.now(UTC) + timedelta(days=2)


def source(app: Runtime, name: str) -> ArchiveBlob:
    return ArchiveBlob(app.stores.archive, name)


def rejected_letters(app: Runtime) -> list[dict[str, str]]:
    return [
        {"reason": letter.reason, "source": letter.source, "raw": letter.raw}
        for letter in app.deadletters.list(REJECTED)
    ]


# --- 1. a last line without its newline ---------------------------------------------------


def test_a_finished_blob_whose_last_line_has_no_newline_indexes_that_event(
    archive_app: Runtime,
) -> None:
    app = archive_app
    name = pt1h_name(HOUR)
    data = jsonl([activity_event(n) for n in range(5)]).rstrip(b"\n")
    append_blob(app, name).append_block(data)
    report = app.blob_indexer.index(source(app, name), now=LATER)
    assert (report.events, report.indexed, report.deadlettered) == (5, 5, 0)
    assert indexed_keys(app) == keys_of(data)
    cursor = app.cursors.load(name, HOUR)
    assert (cursor.offset, cursor.sealed) == (len(data), True)


def test_a_complete_unterminated_line_is_indexed_now_and_its_later_newline_is_blank(
    archive_app: Runtime,
) -> None:
    app = archive_app
    name = pt1h_name(HOUR)
    blob = append_blob(app, name)
    first = orjson.dumps(activity_event(1))
    blob.append_block(first)  # complete, no newline yet
    assert app.blob_indexer.index(source(app, name)).indexed == 1
    blob.append_block(b"\n" + jsonl([activity_event(2)]) + b"not json\n")
    report = app.blob_indexer.index(source(app, name))
    assert (report.events, report.indexed, report.duplicates, report.deadlettered) == (2, 1, 0, 1)
    # Line numbers count the lines of the blob: the newline did not start a line of its own.
    assert [letter["source"] for letter in rejected_letters(app)] == [f"{name}:3"]


def test_an_unparseable_tail_waits_while_the_blob_may_grow_then_is_dead_lettered(
    archive_app: Runtime,
) -> None:
    app = archive_app
    name = pt1h_name(HOUR)
    tail = orjson.dumps(activity_event(9))[:40]
    data = jsonl([activity_event(n) for n in range(3)]) + tail
    append_blob(app, name).append_block(data)
    soon = datetime.now(UTC)  # Last-Modified is now: the blob may still grow
    report = app.blob_indexer.index(source(app, name), now=soon)
    assert (report.indexed, report.deadlettered) == (3, 0)
    assert not app.cursors.load(name, HOUR).sealed
    sealed = app.blob_indexer.index(source(app, name), now=LATER)
    assert (sealed.events, sealed.indexed, sealed.deadlettered) == (1, 0, 1)
    (letter,) = rejected_letters(app)
    assert letter["raw"] == tail.decode()
    assert letter["source"] == f"{name}:4"
    assert "last line" in letter["reason"]
    cursor = app.cursors.load(name, HOUR)
    assert (cursor.offset, cursor.sealed) == (len(data), True)
    assert app.blob_indexer.index(source(app, name), now=LATER).events == 0


def test_a_sealed_blob_ending_in_blank_space_seals(archive_app: Runtime) -> None:
    app = archive_app
    name = pt1h_name(HOUR)
    data = jsonl([activity_event(1)]) + b"  \r"
    append_blob(app, name).append_block(data)
    report = app.blob_indexer.index(source(app, name), now=LATER)
    assert (report.indexed, report.deadlettered) == (1, 0)
    assert app.cursors.load(name, HOUR).sealed


def write_archive(root: Path, blobs: dict[str, bytes]) -> None:
    for name, data in blobs.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_backfill_of_an_archive_copied_today_indexes_every_event_in_one_run(
    settings: Settings, archive_app: Runtime, tmp_path: Path
) -> None:
    app = archive_app
    blobs = {
        pt1h_name(HOUR + timedelta(hours=h)): jsonl(
            [activity_event(h * 10 + n) for n in range(4)]
        ).rstrip(b"\n")
        for h in range(3)
    }
    write_archive(tmp_path / "archive", blobs)  # every file modified just now
    result = shared_cli("backfill", str(tmp_path / "archive"), "--json", settings=settings)
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout)
    assert (summary["events"], summary["indexed"], summary["deadlettered"]) == (12, 12, 0)
    # The same bytes uploaded under the same names are the blobs already indexed, not new ones.
    for name, data in blobs.items():
        app.stores.archive.upload_blob(name, data)
    report = index_each(app.blob_indexer, container_sources(app.stores.archive))
    assert (report.events, report.indexed, report.failed) == (0, 0, [])


# --- 2. a blob replaced by other content ---------------------------------------------------


@pytest.mark.parametrize("longer", [True, False])
def test_a_blob_replaced_by_other_content_is_indexed_anew(
    archive_app: Runtime, longer: bool
) -> None:
    app = archive_app
    name = pt1h_name(HOUR)
    old = jsonl([activity_event(n) for n in range(10)])
    append_blob(app, name).append_block(old)
    assert app.blob_indexer.index(source(app, name)).indexed == 10
    # Replaced: other events, as long as before or longer, so the size alone says nothing.
    count = 20 if longer else 10
    new = jsonl([activity_event(n, location="northeurop") for n in range(count)])
    assert len(new) > len(old) if longer else len(new) == len(old)
    app.stores.archive.delete_blob(name)
    append_blob(app, name).append_block(new)
    report = app.blob_indexer.index(source(app, name))
    assert report.deadlettered == 0
    assert report.indexed == len(keys_of(new))
    assert indexed_keys(app) == sorted(keys_of(old) + keys_of(new))


def test_a_blob_overwritten_in_place_with_a_longer_body_is_indexed_anew(
    archive_app: Runtime,
) -> None:
    app = archive_app
    name = pt1h_name(HOUR)
    old = jsonl([activity_event(n) for n in range(10)])
    app.stores.archive.upload_blob(name, old)
    assert app.blob_indexer.index(source(app, name)).indexed == 10
    new = jsonl([activity_event(n, location="elsewhere") for n in range(20)])
    app.stores.archive.upload_blob(name, new, overwrite=True)
    report = app.blob_indexer.index(source(app, name))
    assert (report.indexed, report.deadlettered) == (20, 0)
    assert indexed_keys(app) == sorted(keys_of(old) + keys_of(new))


class SameSecond(ArchiveBlob):
    """A blob whose properties say the creation time of another: what a blob replaced within
    the second it was made says (creation times have whole seconds)."""

    def __init__(self, app: Runtime, name: str, created: datetime | None) -> None:
        super().__init__(app.stores.archive, name)
        self.created = created

    def properties(self) -> BlobState:
        return replace(super().properties(), created=self.created)


def test_a_blob_replaced_within_its_second_holding_the_same_last_line_is_indexed_anew(
    archive_app: Runtime,
) -> None:
    # Found from outside: the cursor remembered only the line before its offset, so a new
    # blob with that very line (the same event) at that very place, after other events of the
    # same lengths, passed for the old one grown: its other events were never read.
    app = archive_app
    name = pt1h_name(HOUR)
    events = [activity_event(n) for n in range(6)]
    old, new = jsonl([events[0], events[1], events[2]]), jsonl([events[n] for n in (3, 4, 2, 5)])
    assert new[: len(old)].endswith(jsonl([events[2]])) and new[: len(old)] != old
    append_blob(app, name).append_block(old)
    created = source(app, name).properties().created
    assert app.blob_indexer.index(source(app, name)).indexed == 3
    app.stores.archive.delete_blob(name)
    append_blob(app, name).append_block(new)
    report = app.blob_indexer.index(SameSecond(app, name, created))
    assert (report.indexed, report.duplicates, report.deadlettered) == (3, 1, 0)
    assert indexed_keys(app) == sorted(set(keys_of(old + new)))


class ReplacedAtRead(ArchiveBlob):
    """A blob replaced by other content just before the first read at `offset`."""

    def __init__(self, app: Runtime, name: str, offset: int, new: bytes) -> None:
        super().__init__(app.stores.archive, name)
        self.app, self.offset, self.new, self.done = app, offset, new, False

    def read(self, offset: int, length: int) -> bytes:
        if offset == self.offset and not self.done:
            self.done = True
            self.app.stores.archive.delete_blob(self.name)
            append_blob(self.app, self.name).append_block(self.new)
        return super().read(offset, length)


def test_a_blob_replaced_between_its_check_and_its_read_is_indexed_anew(
    archive_app: Runtime,
) -> None:
    # Found from outside: a run checked the blob (its properties, the line before its
    # cursor), then read on from its offset in the blob that had replaced it meanwhile: a
    # fragment of a line dead-lettered, and the new blob's earlier events never read.
    app = archive_app
    name = pt1h_name(HOUR)
    old = jsonl([activity_event(n) for n in range(3)])
    new = jsonl([activity_event(n, location="elsewhere") for n in range(100, 108)])
    blob = append_blob(app, name)
    blob.append_block(old)
    assert app.blob_indexer.index(source(app, name)).indexed == 3
    blob.append_block(jsonl([activity_event(3)]))  # grown: then replaced before it is read
    app.blob_indexer.index(ReplacedAtRead(app, name, len(old), new))
    app.blob_indexer.index(source(app, name))
    assert rejected_letters(app) == []
    assert indexed_keys(app) == sorted(keys_of(old + new))


class AppendedAtRead(ArchiveBlob):
    """A blob appended to just before each of its first `times` reads."""

    def __init__(self, app: Runtime, name: str, more: list[bytes]) -> None:
        super().__init__(app.stores.archive, name)
        self.app, self.more = app, more

    def read(self, offset: int, length: int) -> bytes:
        if self.more:
            self.app.stores.archive.get_blob_client(self.name).append_block(self.more.pop(0))
        return super().read(offset, length)


@pytest.mark.parametrize("appends", [1, CHANGED_TRIES])
def test_a_blob_appended_to_while_read_is_read_on_not_failed(
    archive_app: Runtime, appends: int
) -> None:
    # Reads are of the blob as the run looked at it: an append in between fails the read
    # (412), and the run looks again and reads on; a blob that keeps changing is left, told,
    # to the next run, which reads what is left.
    app = archive_app
    name = pt1h_name(HOUR)
    first = jsonl([activity_event(n) for n in range(4)])
    more = [jsonl([activity_event(10 + n)]) for n in range(appends)]
    append_blob(app, name).append_block(first)
    report = app.blob_indexer.index(AppendedAtRead(app, name, list(more)))
    assert (report.deadlettered, report.indexed) == (0, 0 if appends == CHANGED_TRIES else 5)
    app.blob_indexer.index(source(app, name))
    assert indexed_keys(app) == sorted(keys_of(first + b"".join(more)))


def test_appends_are_not_mistaken_for_a_replacement(archive_app: Runtime) -> None:
    app = archive_app
    name = pt1h_name(HOUR)
    blob = append_blob(app, name)
    for part in range(4):
        blob.append_block(jsonl([activity_event(part * 5 + n) for n in range(5)]))
        report = app.blob_indexer.index(source(app, name))
        assert (report.indexed, report.duplicates) == (5, 0)
    assert app.cursors.load(name, HOUR).offset == blob.get_blob_properties().size


# --- 3. names outside the layout -----------------------------------------------------------


IMPOSSIBLE = (
    f"resourceId=/SUBSCRIPTIONS/{SUBSCRIPTION.upper()}/y=2024/m=02/d=30/h=10/m=00/PT1H.json",
    f"resourceId=/SUBSCRIPTIONS/{SUBSCRIPTION.upper()}/y=2024/m=05/d=01/h=24/m=00/PT1H.json",
)


# Digits other than ASCII's, and letters that fold to ASCII ones only under Unicode case
# rules (U+017F long s folds to "s"): Python's `\d` and IGNORECASE take them, Azure never
# writes them, and int() reads "\u0662\u0660\u0662\u0664" as 2024.
NOT_AZURES = (
    f"resourceId=/SUBSCRIPTIONS/{SUBSCRIPTION}/y=\u0662\u0660\u0662\u0664/m=05/d=01/h=10/m=00/PT1H.json",
    f"resourceId=/SUBSCRIPTIONS/{SUBSCRIPTION}/y=2024/m=\uff10\uff15/d=01/h=10/m=00/PT1H.json",
    f"resourceId=/SUBSCRIPTIONS/{SUBSCRIPTION}/y=2024/m=05/d=01/h=10/m=00/PT1H.j\u017fon",
)


def test_an_impossible_date_in_a_name_is_outside_the_layout() -> None:
    for name in IMPOSSIBLE:
        path = BlobPath.parse(name)
        assert path.hour is None
        assert path.subscription == SUBSCRIPTION
    for name in NOT_AZURES:
        assert BlobPath.parse(name).hour is None, name  # indexed from its content, reported


@pytest.mark.parametrize(
    "name",
    [
        f"resourceId=/subscriptions/{SUBSCRIPTION}/y=2024/m=05/d=01/h=10/m=00/PT1H.json",
        f"resourceid=/SUBSCRIPTIONS/{SUBSCRIPTION}/y=2024/m=05/d=01/h=10/m=00/PT1H.json",
        f"resourceId=/SUBSCRIPTIONS/{SUBSCRIPTION}/y=2024/m=05/d=01/h=10/m=00/pt1h.json",
        f"copy/resourceId=/SUBSCRIPTIONS/{SUBSCRIPTION}/y=2024/m=05/d=01/h=10/m=00/PT1H.json",
    ],
)
def test_a_container_blob_the_catch_up_timer_does_not_list_is_reported(
    archive_app: Runtime, name: str
) -> None:
    """The timer lists `resourceId=/SUBSCRIPTIONS/*/y=../h=../` for `PT1H.json`, exactly:
    a blob it would not list is read when announced, and its growth after that would wait
    for nobody, so the read says so (outside the layout), whatever hour its name gives."""
    app = archive_app
    append_blob(app, name).append_block(jsonl([activity_event(1), activity_event(2)]))
    report = app.blob_indexer.index(source(app, name))
    assert report.indexed == 2 and report.outside_layout == [name]
    exact = pt1h_name(HOUR)
    append_blob(app, exact).append_block(jsonl([activity_event(3)]))
    assert app.blob_indexer.index(source(app, exact)).outside_layout == []
    assert BlobPath.parse(name).hour is not None  # still placed by its hour (backfill --since)


def test_backfill_indexes_blobs_with_impossible_dates_and_the_good_ones_beside_them(
    settings: Settings, archive_app: Runtime, tmp_path: Path
) -> None:
    app = archive_app
    blobs = {name: jsonl([activity_event(50 + n)]) for n, name in enumerate(IMPOSSIBLE)}
    blobs[pt1h_name(HOUR)] = jsonl([activity_event(n) for n in range(3)])
    for name, data in blobs.items():
        app.stores.archive.upload_blob(name, data)
    report = index_each(app.blob_indexer, container_sources(app.stores.archive))
    assert (report.events, report.indexed, report.failed) == (5, 5, [])
    assert sorted(report.outside_layout) == sorted(IMPOSSIBLE)
    write_archive(tmp_path / "archive", blobs)
    result = shared_cli("backfill", str(tmp_path / "archive"), "--json", settings=settings)
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout)
    # The same bytes under the same names: already indexed, still reported.
    assert (summary["events"], summary["indexed"], summary["failed"]) == (0, 0, [])
    assert sorted(summary["outside_layout"]) == sorted(IMPOSSIBLE)
    # Narrowed by time, a name without an hour cannot be placed: it is left out, not an error.
    narrowed = folder_sources(tmp_path / "archive", since=HOUR - timedelta(hours=1))
    assert [item.name for item in narrowed] == [pt1h_name(HOUR)]


def test_a_blob_outside_the_layout_seals_by_its_last_modified_time(archive_app: Runtime) -> None:
    app = archive_app
    name = IMPOSSIBLE[0]
    data = jsonl([activity_event(1)]) + b'{"time": "2024'
    append_blob(app, name).append_block(data)
    assert app.blob_indexer.index(source(app, name)).deadlettered == 0
    report = app.blob_indexer.index(source(app, name), now=LATER)
    assert report.deadlettered == 1
    assert app.cursors.load(name, None).sealed


# --- 4. JSON Lines whose first line is an envelope -----------------------------------------


def test_a_growing_blob_whose_first_line_is_an_envelope_is_json_lines(
    archive_app: Runtime,
) -> None:
    app = archive_app
    name = pt1h_name(HOUR)
    blob = append_blob(app, name)
    first = envelope([activity_event(1), activity_event(2)]) + b"\n"
    second = orjson.dumps(activity_event(3)) + b"\n"
    blob.append_block(first + second[:30])  # the next line is half written
    report = app.blob_indexer.index(source(app, name))
    assert (report.events, report.indexed, report.deadlettered) == (2, 2, 0)
    blob.append_block(second[30:])
    report = app.blob_indexer.index(source(app, name))
    assert (report.events, report.indexed, report.deadlettered) == (1, 1, 0)
    assert indexed_keys(app) == keys_of(first + second)


def test_a_pretty_printed_pre_2018_envelope_is_still_one_value(archive_app: Runtime) -> None:
    app = archive_app
    name = pt1h_name(HOUR)
    events = [activity_event(n) for n in range(4)]
    data = orjson.dumps({"records": events}, option=orjson.OPT_INDENT_2)
    append_blob(app, name).append_block(data)
    report = app.blob_indexer.index(source(app, name))
    assert (report.events, report.indexed, report.deadlettered) == (4, 4, 0)
    assert indexed_keys(app) == sorted(r["EventKey"] for r in normalize_input(data, "x")[0])
