"""Abuse: mutated and random input for the decoder and normalizer; hostile queries over HTTP
and the command line.

Inputs: the team's real samples (../shared/samples, tests skip without them) and generated
events (shared.tools.generate), mutated by byte flips, truncations, invalid UTF-8, type swaps, huge
and deeply nested values; and random JSON from hypothesis. Nothing may raise, and where an
input's events can be counted, records + rejections is that count.

Queries: quotes, OData operators, 10 KB strings, bad dates, negative limits, control characters
and unicode, over `GET /api/activity` (the real handler and func.HttpRequest) and
`python -m shared query`: a 400 / exit 2 with a message, or exactly the right records. The
filters reaching Table storage are captured in the client and on the wire: always one of the
constant templates, user input only ever a bound (and escaped) parameter.
"""

from __future__ import annotations

import io
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
import orjson
import pytest
from azure.data.tables import TableClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.query_http import handle_activity
from shared import settings as names
from shared.adapters.blobs import ArchiveBlob
from shared.bootstrap import Runtime, build_runtime, runtime
from shared.core.archive_format import encode_line
from shared.core.archive_keys import MAX_PACKED_BYTES, BlobRef, slot_partition
from shared.core.decode import decode_line
from shared.core.normalize import normalize, normalize_input
from shared.core.query_spec import QUERY_FILTERS, parse_query
from shared.core.records import COLUMNS, NormalizedRecord, Rejection
from shared.services.archive_write import archive_order, plan_blobs, postings
from shared.settings import Settings, load_settings
from shared.tools import cli
from shared.tools.azurite import Azurite
from shared.tools.generate import generate_events
from shared.tools.local_host import Invocation, Retry, app_settings, event_hub_batch, registered
from tests.archive_view import archived_keys
from tests.conftest import SAMPLES
from tests.events import activity_event, envelope, jsonl
from tests.fault_proxy import FaultProxy

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_FILES = (
    sorted(path for path in SAMPLES.iterdir() if path.suffix in (".json", ".jsonl"))
    if SAMPLES.is_dir()
    else []
)
needs_samples = pytest.mark.skipif(not SAMPLE_FILES, reason=f"no samples at {SAMPLES}")
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
EVENT_KEY = re.compile(r"[0-9a-f]{32}")
CANONICAL_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z")
FORBIDDEN_IN_KEYS = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
# orjson reads JSON nested up to 1024 deep but writes at most 254: an event nested deeper than
# that is rejected (dead-lettered with its raw text) by the normalizer's own safety net.
TOO_DEEP = "normalizer error: TypeError: Recursion limit reached"


# --- what every result must satisfy ----------------------------------------------------------


def check_results(
    data: bytes | str,
    records: list[NormalizedRecord],
    rejections: list[Rejection],
    *,
    events: int | None = None,
    deep: bool = False,
) -> None:
    """Records are whole and indexable, rejections carry reason, source and raw text, and
    (when the input's events are countable) nothing is lost or invented."""
    if events is not None:
        assert len(records) + len(rejections) == events
    for record in records:
        assert list(record) == list(COLUMNS)
        assert EVENT_KEY.fullmatch(record["EventKey"])
        assert CANONICAL_TIME.fullmatch(record["TimeGenerated"])
        assert isinstance(record["CategoryValue"], str)
        encode_line(record)  # storable in an archive blob
        orjson.dumps(record)  # and forwardable
    check_index_keys(records)
    for rejection in rejections:
        assert rejection.reason and rejection.source
        assert isinstance(rejection.raw, str)
        rejection.raw.encode("utf-8")  # no lone surrogates: the dead letter can be written
        if rejection.reason.startswith("normalizer error"):
            # A defect caught by the safety net; the only accepted one is orjson's depth limit.
            assert deep and rejection.reason.startswith(TOO_DEEP), rejection.reason


def check_index_keys(records: list[NormalizedRecord]) -> None:
    """Every key the archive writer would write for these records (blob name, claim slot,
    manifest and posting rows) is one Table and Blob storage accept, whatever the input."""
    unique = list({record["EventKey"]: record for record in records}.values())
    for blob in plan_blobs(unique):
        assert BlobRef.of_name(blob.ref.name) == blob.ref
        keys = [*blob.ref.manifest_keys]
        keys += [slot_partition(record["TimeGenerated"]) for record in blob.records]
        for row in postings(blob.ref, archive_order(blob.records)):
            keys += [row["PartitionKey"], row["RowKey"]]
            assert len(row["E"]) <= MAX_PACKED_BYTES
        for key in keys:
            assert len(key) <= 512 and not FORBIDDEN_IN_KEYS.search(key), key


def run(data: bytes | str, *, events: int | None = None, deep: bool = False) -> None:
    records, rejections = normalize_input(data, "fuzz")
    check_results(data, records, rejections, events=events, deep=deep)


# --- mutations -------------------------------------------------------------------------------

INVALID_UTF8 = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82")


def flip_bytes(line: bytes, rng: random.Random, count: int) -> bytes:
    """Change `count` bytes, never into or out of a newline (so the line count holds)."""
    data = bytearray(line)
    for _ in range(count):
        at = rng.randrange(len(data))
        if data[at] == 0x0A:
            continue
        value = rng.randrange(256)
        data[at] = value if value != 0x0A else 0x0B
    return bytes(data)


def insert_invalid_utf8(line: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(line) + 1)
    return line[:at] + rng.choice(INVALID_UTF8) + line[at:]


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = {"n": value} if level % 2 else [value]
    return value


def swap_value(value: Any, rng: random.Random) -> Any:
    """A value of another JSON type, or a huge / deep / odd one."""
    choices: list[Callable[[], Any]] = [
        lambda: None,
        lambda: True,
        lambda: rng.randint(-(2**63), 2**64 - 1),
        lambda: rng.uniform(-1e300, 1e300),
        lambda: "",
        lambda: " \t ",
        lambda: "x" * rng.choice((1, 1000, 70_000)),
        lambda: "\u202e\u0000\u200b\ud7ff\U0001f600\ufeff",
        lambda: [value, value],
        lambda: {"value": value, "localizedValue": 7},
        lambda: {"nested": {"deeper": [value]}},
        lambda: nested(rng.choice((10, 100))),
        lambda: str(value),
        lambda: [],
        lambda: {},
    ]
    return rng.choice(choices)()


def swap_types(event: dict[str, Any], rng: random.Random, fields: int = 3) -> dict[str, Any]:
    mutated = dict(event)
    keys = list(mutated)
    for key in rng.sample(keys, min(fields, len(keys))):
        mutated[key] = swap_value(mutated[key], rng)
    if rng.random() < 0.2:
        mutated[rng.choice(["properties", "identity", "claims", "extra"])] = nested(
            rng.choice((50, 200))
        )
    return mutated


def generated(count: int, seed: int) -> list[dict[str, Any]]:
    return generate_events(count, seed=seed)


def sample_events() -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    """Each sample's events as objects (to mutate), whatever form the sample is in."""
    for path in SAMPLE_FILES:
        records, _ = normalize_input(path.read_bytes(), path.name)
        text = path.read_text("utf-8-sig")
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            try:
                value = [orjson.loads(line) for line in text.splitlines() if line.strip()]
            except orjson.JSONDecodeError:
                continue
        if isinstance(value, dict):
            value = value.get("records") or value.get("value") or [value]
        events = [item for item in value if isinstance(item, dict)]
        if events and records:
            yield path, events


# --- fuzzing real samples and generated events --------------------------------------------------


@needs_samples
def test_mutated_samples_never_raise() -> None:
    rng = random.Random(20240501)
    for path in SAMPLE_FILES:
        data = path.read_bytes()
        for _ in range(40):
            mutated = flip_bytes(data, rng, rng.randint(1, 8))
            run(mutated)
            cut = data[: rng.randrange(len(data) + 1)]
            records, rejections = normalize_input(cut, path.name)
            check_results(cut, records, rejections)
            if cut.removeprefix(b"\xef\xbb\xbf").strip():
                assert records or rejections  # a truncated input is never silently nothing
            run(insert_invalid_utf8(data, rng))
        run(data.decode("utf-8", "replace"))  # str input takes the same path


@needs_samples
def test_type_swapped_sample_events_are_each_one_record_or_one_rejection() -> None:
    rng = random.Random(7)
    count = 0
    for _, events in sample_events():
        for _ in range(15):
            mutated = [swap_types(event, rng) for event in events]
            run(envelope(mutated), events=len(mutated), deep=True)
            run(jsonl(mutated), events=len(mutated), deep=True)
            count += 1
    assert count > 0


def mutate_lines(events: list[dict[str, Any]], rng: random.Random) -> tuple[bytes, list[int]]:
    """JSON Lines with some lines (never all) flipped or broken; which lines were broken."""
    lines = [orjson.dumps(event) for event in events]
    broken = rng.sample(range(len(lines)), rng.randint(1, len(lines) - 1))
    for number in broken:
        mutation = rng.choice(("flip", "utf8", "cut"))
        if mutation == "flip":
            lines[number] = flip_bytes(lines[number], rng, rng.randint(1, 5))
        elif mutation == "utf8":
            lines[number] = insert_invalid_utf8(lines[number], rng)
        else:
            lines[number] = lines[number][: rng.randrange(1, len(lines[number]))]
    return b"\n".join(lines) + b"\n", broken


def test_mutated_generated_lines_are_each_one_result() -> None:
    rng = random.Random(99)
    for seed in range(25):
        events = generated(12, seed)
        data, broken = mutate_lines(events, rng)
        records, rejections = normalize_input(data, "blob.json")
        check_results(data, records, rejections, events=len(events))
        # Every intact line became its own record.
        for number in set(range(len(events))) - set(broken):
            assert normalize_input(orjson.dumps(events[number]), "x")[0][0] in records
        for rejection in rejections:
            line = data.split(b"\n")[int(rejection.source.rsplit(":", 1)[1]) - 1]
            assert rejection.raw == line.strip().decode("utf-8", "backslashreplace")
            if not _is_utf8(line):
                assert rejection.reason.startswith("not UTF-8")
        # The blob path reads the same lines one by one: the same outcome, line for line.
        for number, line in enumerate(data.split(b"\n")[:-1], start=1):
            for item in decode_line(line, f"blob.json:{number}"):
                result = (
                    item
                    if isinstance(item, Rejection)
                    else normalize(item.event, source=item.source, raw=item.raw)
                )
                if isinstance(result, Rejection):
                    assert result in rejections
                else:
                    assert result in records


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_truncated_generated_inputs_count_complete_lines_and_the_cut_one() -> None:
    rng = random.Random(5)
    data = jsonl(generated(15, 1))
    for _ in range(120):
        cut = data[: rng.randrange(len(data) + 1)]
        complete = cut.count(b"\n")
        partial = 1 if cut[cut.rfind(b"\n") + 1 :].strip() else 0
        run(cut, events=complete + partial)
    body = envelope(generated(10, 2))
    for _ in range(60):
        cut = body[: rng.randrange(1, len(body))]
        records, rejections = normalize_input(cut, "body")
        check_results(cut, records, rejections, events=1)  # a cut envelope: one rejection
        assert records == []
        assert rejections[0].raw == cut.strip(b" \t\r\n").decode("utf-8", "backslashreplace")


def test_type_swapped_generated_events_and_huge_values() -> None:
    rng = random.Random(3)
    for seed in range(20):
        events = [swap_types(event, rng, fields=rng.randint(1, 6)) for event in generated(8, seed)]
        run(envelope(events), events=len(events), deep=True)
        run(jsonl(events), events=len(events), deep=True)
        run(orjson.dumps(events), events=len(events), deep=True)  # a bare array
    huge = activity_event(1, properties={"blob": "h" * 3_000_000}, caller="c" * 100_000)
    run(envelope([huge, activity_event(2)]), events=2)


def test_nesting_beyond_the_parsers_limits_is_one_rejection_each() -> None:
    deep_text = b'{"a":' * 1100 + b"1" + b"}" * 1100  # past orjson's read limit of 1024
    data = jsonl([activity_event(1)]) + deep_text + b"\n" + jsonl([activity_event(2)])
    records, rejections = normalize_input(data, "x")
    check_results(data, records, rejections, events=3)
    assert len(records) == 2
    # Readable (orjson reads 1024 levels) but not writable (it writes 254): a record all the
    # same, its part past MAX_NESTING levels kept as JSON text (shared.core.nesting; it was
    # a dead letter, and inside an envelope a crash that lost the batch, found from outside).
    too_deep = b'{"a":' * 300 + b"1" + b"}" * 300
    data = orjson.dumps(activity_event(3, properties={"deep": "@@"})).replace(b'"@@"', too_deep)
    records, rejections = normalize_input(data, "x")
    check_results(data, records, rejections, events=1)
    assert rejections == [] and "nested deeper" in records[0]["NormalizationWarnings"][-1]


def events_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def expected_count(value: Any) -> int:
    """Events in one JSON value, by the decoder's documented rules (an envelope's records, an
    array's items, anything else one event or one rejection)."""

    def envelope_length(item: Any) -> int | None:
        if not isinstance(item, dict) or "time" in item or "eventTimestamp" in item:
            return None
        lists = [item[key] for key in ("records", "value") if isinstance(item.get(key), list)]
        page = {"records", "value", "nextLink", "@odata.nextLink", "@odata.context"}
        if item.keys() - page:
            return None  # lists beside an event's fields: that event, not an envelope
        return sum(map(len, lists)) if lists else None  # both: each list's events

    if isinstance(value, list):
        return sum(length if (length := envelope_length(item)) is not None else 1 for item in value)
    length = envelope_length(value)
    return 1 if length is None else length


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["time", "records", "value", "category", "caller", "x"])
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)
times = st.sampled_from(
    ["2024-05-01T10:00:00Z", "5/1/2024 10:00:00 AM", "2024-02-30T00:00:00Z", "0000-01-01T00:00:00Z"]
) | st.text(max_size=25)
FIELDS = (
    "time", "eventTimestamp", "category", "operationName", "resourceProviderName", "resultType",
    "status", "resultSignature", "subStatus", "level", "Level", "resourceId", "subscriptionId",
    "resourceGroupName", "caller", "callerIpAddress", "correlationId", "operationId",
    "eventDataId", "location", "resultDescription", "description", "durationMs", "hierarchy",
    "tenantId", "identity", "authorization", "claims", "properties", "httpRequest",
)  # fmt: skip
events_strategy = st.fixed_dictionaries(
    {"time": times},
    optional={field: json_values for field in FIELDS if field != "time"},
)


@FUZZ
@given(data=st.binary(max_size=3000))
def test_random_bytes_never_raise(data: bytes) -> None:
    run(data)
    for item in decode_line(data, "blob:1"):
        assert isinstance(item, Rejection) or isinstance(item.event, dict)


@FUZZ
@given(value=json_values)
def test_random_json_values_are_counted(value: Any) -> None:
    run(orjson.dumps(value), events=expected_count(value))


@FUZZ
@given(values=st.lists(json_values, min_size=2, max_size=6))
def test_random_json_lines_never_raise_and_stay_counted(values: list[Any]) -> None:
    data = b"\n".join(orjson.dumps(value) for value in values) + b"\n"
    if any(isinstance(value, dict) or events_array(value) for value in values):
        # JSON Lines: one result per line, an envelope line its records, a line that is an
        # array of objects its events.
        expected = sum(
            expected_count(value) if isinstance(value, dict) or events_array(value) else 1
            for value in values
        )
        run(data, events=expected)
    else:
        run(data, events=1)  # no line is an object: not JSON Lines, one rejection


@FUZZ
@given(event=events_strategy)
def test_random_events_normalize_to_indexable_records_or_reasoned_rejections(
    event: dict[str, Any],
) -> None:
    raw = orjson.dumps(event).decode()
    result = normalize(event, source="fuzz:1", raw=raw)
    if isinstance(result, Rejection):
        check_results(raw, [], [result])
        assert result.raw == raw
    else:
        check_results(raw, [result], [])
    run(envelope([event, event]), events=2)


# --- a hostile event must not poison its batch or its blob --------------------------------------

HUGE_CATEGORY = "C" * 40_000  # over the 32K UTF-16 characters a table string property holds


def test_an_event_with_a_huge_category_does_not_poison_its_batch(settings: Settings) -> None:
    good = [activity_event(n) for n in range(6)]
    bodies = [envelope([*good[:3], activity_event(99, category=HUGE_CATEGORY), *good[3:]])]
    with app_settings(
        {
            names.STORAGE_CONNECTION: settings.storage_connection,
            names.STORE_PREFIX: settings.store_prefix,
        }
    ):
        app = runtime()
        # The input is as it will always be: retrying cannot help, the first attempt must
        # deliver what can be delivered and dead-letter the rest.
        registered("activity_events")(event_hub_batch(bodies), Invocation("x", Retry(0, 8)))
    assert_not_poisoned(app, good, activity_event(99, category=HUGE_CATEGORY))


def assert_not_poisoned(app: Runtime, good: list[Any], hostile: dict[str, Any]) -> None:
    """The good events are indexed; the hostile one is indexed or dead-lettered as rejected."""
    archived = archived_keys(app)
    assert len(archived) == len(set(archived)), "an event is archived twice"
    indexed = set(archived)
    assert {r["EventKey"] for r in normalize_input(envelope(good), "x")[0]} <= indexed
    (record,) = normalize_input(envelope([hostile]), "x")[0]
    rejected = [letter for letter in app.deadletters.list() if letter.kind == "rejected"]
    assert record["EventKey"] in indexed or len(rejected) == 1


def test_a_line_with_a_huge_category_does_not_stall_its_blob(app: Runtime) -> None:
    container = app.stores.blob_service.get_container_client(f"{app.settings.store_prefix}-archive")
    container.create_container()
    object.__setattr__(app.stores, "archive", container)
    name = (
        "resourceId=/SUBSCRIPTIONS/6F3C2A51-1D2E-4B8A-9C7D-0E1F2A3B4C5D/y=2024/m=05/d=01"
        "/h=10/m=00/PT1H.json"
    )
    blob = container.get_blob_client(name)
    blob.create_append_blob()
    good = [activity_event(n) for n in range(6)]
    blob.append_block(jsonl([*good[:3], activity_event(99, category=HUGE_CATEGORY), *good[3:]]))
    for _ in range(3):  # the trigger, then catch-up runs
        try:
            app.blob_indexer.index(ArchiveBlob(container, name))
        except Exception:
            continue
    assert_not_poisoned(app, good, activity_event(99, category=HUGE_CATEGORY))


# --- hostile queries ------------------------------------------------------------------------------

NOW = datetime(2024, 4, 15, 12, 0, tzinfo=UTC)
SPAN = {"since": "2024-03-01T00:00:00Z", "until": "2024-04-01T00:00:00Z"}
SUBSCRIPTION = "11111111-1111-1111-1111-111111111111"
FILTERS = set(QUERY_FILTERS)
# The one other filter a query sends: IndexTables.months() lists the month tables (a constant
# template too, with bound parameters), to find the oldest month a key lookup reads from.
TABLES_FILTER = "TableName ge @low and TableName lt @high"
COLUMN_OF = {
    "subscription": "SubscriptionId",
    "resource": "ResourceId",
    "caller": "Caller",
    "correlation_id": "CorrelationId",
    "operation": "OperationNameValue",
}
# Values that are hostile and yet real: each is some record's, and must find exactly it.
HOSTILE_VALUES = {
    "caller": [
        "' or 1 eq 1",
        "o'brien@contoso.com",
        "Ünïcødé@例え.jp",
        "x' or PartitionKey ne 'a",
        "@pk",
        "$filter=RowKey gt ''",
        "l" * 1000,
        # Control characters a display name may carry: an auditor follows them from the
        # event's detail, so they are searchable, not refused (found from outside).
        "esc\x1b[31mred@contoso.com",
        "tab\there\r\nnewline@contoso.com",
        "nul\x00nel\u0085@contoso.com",
    ],
    "correlation_id": ["corr') or (true", "%27%20or%201%20eq%201"],
    "operation": ["microsoft.test/ops/write' or 'a' eq 'a"],
    "resource": [f"/subscriptions/{SUBSCRIPTION}/resourceGroups/r'g/providers/a.b/c/n#?%\\"],
}


EVENT_FIELD = {
    "caller": "caller",
    "correlation_id": "correlationId",
    "operation": "operationName",
    "resource": "resourceId",
}


def hostile_record(number: int, **fields: str) -> NormalizedRecord:
    event: dict[str, Any] = {
        "time": f"2024-03-{10 + number % 15:02d}T10:00:{number % 60:02d}Z",
        "resourceId": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/a.b/c/n{number}",
        "operationName": "Microsoft.Test/ops/write",
        "category": "Administrative" if number % 2 else "Policy",
        "resultType": "Success",
        "correlationId": f"corr-{number}",
        "caller": f"user{number}@contoso.com",
        "level": "Informational",
    }
    event.update({EVENT_FIELD[field]: value for field, value in fields.items()})
    result = normalize(event, source="abuse", raw="")
    assert not isinstance(result, Rejection), result
    return result


def build_dataset() -> list[NormalizedRecord]:
    records = [hostile_record(n) for n in range(6)]
    number = 10
    for field, values in HOSTILE_VALUES.items():
        for value in values:
            records.append(hostile_record(number, **{field: value}))
            number += 1
    return records


DATASET = build_dataset()


@pytest.fixture(scope="module")
def archive(azurite: Azurite) -> Runtime:
    app = build_runtime(
        load_settings(
            {
                names.STORAGE_CONNECTION: azurite.connection_string,
                names.STORE_PREFIX: f"abuse{os.getpid()}",
            }
        )
    )
    assert len(app.writer.write(DATASET).indexed) == len(DATASET)
    return app


def expected(params: Mapping[str, str]) -> list[str]:
    """EventKeys a query must return, newest first, worked out without the index."""
    query = parse_query(params, NOW)
    since = f"{query.since:%Y-%m-%dT%H:%M:%S.%f}0Z"
    until = f"{query.until:%Y-%m-%dT%H:%M:%S.%f}0Z"
    chosen = [
        record
        for record in DATASET
        if since <= record["TimeGenerated"] < until
        and (query.category is None or record["CategoryValue"] == query.category)
        and all(
            str(record[column]).strip().lower() == str(getattr(query, field)).strip().lower()
            for field, column in COLUMN_OF.items()
            if getattr(query, field) is not None
        )
    ]
    # Newest first (no two records of the data set share a TimeGenerated).
    chosen.sort(key=lambda record: (record["TimeGenerated"], record["EventKey"]), reverse=True)
    return [record["EventKey"] for record in chosen][: query.limit]


def table_queries(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Every (filter, parameters) sent to any table from now on (the month tables are many:
    the spy is on every table client)."""
    calls: list[tuple[str, Any]] = []
    real = TableClient.query_entities

    def spy(table: TableClient, query_filter: str, *args: Any, **kw: Any) -> Any:
        calls.append((query_filter, kw.get("parameters")))
        return real(table, query_filter, *args, **kw)

    monkeypatch.setattr(TableClient, "query_entities", spy)
    return calls


@pytest.fixture
def captured(archive: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Every (filter, parameters) the query code sends to any index table."""
    return table_queries(monkeypatch)


def assert_bound_only(calls: list[tuple[str, Any]]) -> None:
    """Each filter sent is a constant template (so no input is in it); values are bound."""
    assert calls
    for query_filter, parameters in calls:
        assert query_filter in FILTERS, query_filter
        assert isinstance(parameters, dict) and parameters
        for value in parameters.values():
            assert isinstance(value, str)
            # Values are encoded before they are bound: no quote, no control character.
            assert "'" not in value and not re.search(r"[\x00-\x1f]", value), value


def request(params: Mapping[str, str]) -> func.HttpRequest:
    return func.HttpRequest(
        method="GET", url="http://localhost/api/activity", params=dict(params), body=b""
    )


def hostile_found_cases() -> list[dict[str, str]]:
    cases = [{field: value} for field, values in HOSTILE_VALUES.items() for value in values]
    cases += [
        {field: value.upper()} for field, values in HOSTILE_VALUES.items() for value in values
    ]
    cases += [
        {"caller": "' or 1 eq 1", "category": "administrative"},
        {"caller": "' or 1 eq 1", "category": "Policy"},
        {"caller": "  o'brien@contoso.com  "},
        {"caller": "' or 1 eq 1 "},
        {"subscription": f"{SUBSCRIPTION}' or PartitionKey ne '"},
        {"resource": "' or RowKey gt ''"},
        {"caller": "*"},
        {"caller": "%"},
        {"caller": "alice@contoso.com and RowKey lt @high"},
        {"operation": "eq"},
        {"caller": "🙂" * 300},
        {"correlation_id": "\u202e1 qe 1 ro '"},
        {"caller": "o\u2019brien@contoso.com"},  # a typographic apostrophe is another value
    ]
    return cases


REFUSED_CASES: list[dict[str, str]] = [
    {"caller": "x" * 10_240},
    {"caller": "\t\n "},
    {"correlation_id": "\ud800"},
    {"$filter": "PartitionKey ne ''"},
    {"filter": "1 eq 1"},
    {"caller\x00": "x"},
    {"callér": "x"},
    {"or": "1 eq 1"},
    {"since": "2024-01-01' or 1 eq 1"},
    {"since": "yesterday"},
    {"since": "2024-13-01"},
    {"since": "2024-02-30"},
    {"since": "-7d"},
    {"since": "99999999d"},
    {"since": "0001-01-01"},
    {"until": "2024-03-01", "since": "2024-04-01"},
    {"since": "2024-03-01T00:00:00+25:00"},
    {"limit": "-1"},
    {"limit": "0"},
    {"limit": "1001"},
    {"limit": "1 or 1 eq 1"},
    {"limit": "10" * 1000},
    {"limit": "0x10"},
    {"category": "Administrative' or 'a' eq 'a"},
    {"category": "Administrative eq Administrative"},
    {"category": "ADMINISTRATIVE\x00"},
    {"continuation": "' or 1 eq 1"},
    {"continuation": "A" * 10_240},
    {"continuation": "\x00"},
    {"continuation": "éé"},
]


@pytest.mark.parametrize("filters", hostile_found_cases(), ids=repr)
def test_http_hostile_values_find_exactly_their_records(
    archive: Runtime, captured: list[tuple[str, Any]], filters: dict[str, str]
) -> None:
    params = {**SPAN, "limit": "1000", **filters, "code": "' or 1 eq 1"}
    response = handle_activity(request(params), archive, NOW)
    assert response.status_code == 200, response.get_body()
    body = orjson.loads(response.get_body())
    assert set(body) == {"records", "continuation"}
    want = expected({name: value for name, value in params.items() if name != "code"})
    assert [record["EventKey"] for record in body["records"]] == want
    assert body["continuation"] is None
    assert_bound_only(captured)


def test_every_hostile_value_is_found_and_only_it(archive: Runtime) -> None:
    """The hostile data set is exercised: each hostile value finds one record, not more."""
    for field, values in HOSTILE_VALUES.items():
        for value in values:
            assert len(expected({**SPAN, field: value})) == 1, (field, value)


@pytest.mark.parametrize("params", REFUSED_CASES, ids=repr)
def test_http_hostile_parameters_are_a_400_with_a_message(
    archive: Runtime, captured: list[tuple[str, Any]], params: dict[str, str]
) -> None:
    response = handle_activity(request({**SPAN, **params}), archive, NOW)
    assert response.status_code == 400
    body = orjson.loads(response.get_body())
    assert set(body) == {"error"}
    message = body["error"]
    assert isinstance(message, str) and 10 < len(message) < 400
    assert "\x00" not in message and "Traceback" not in message
    assert captured == [] or all(query_filter in FILTERS for query_filter, _ in captured)


def test_on_the_wire_filters_are_the_templates_with_quoted_literals(
    azurite: Azurite, archive: Runtime
) -> None:
    """Read through the (fault-free) proxy, which records every request's target."""
    with FaultProxy(azurite, lifetime=60) as proxy:
        app = build_runtime(replace(archive.settings, storage_connection=proxy.connection_string))
        wire_filters(app, proxy)


def wire_filters(app: Runtime, proxy: FaultProxy) -> None:
    cases = [*hostile_found_cases()[:12], {"category": "Policy", "caller": "' or 1 eq 1"}]
    for filters in cases:
        response = handle_activity(request({**SPAN, **filters}), app, NOW)
        assert response.status_code == 200
        assert [r["EventKey"] for r in orjson.loads(response.get_body())["records"]] == (
            expected({**SPAN, **filters})
        )
    literal = re.compile(r"'(?:[^']|'')*'")
    shapes = {re.sub(r"@\w+", "?", template) for template in (*FILTERS, TABLES_FILTER)}
    sent = [
        parse_qs(urlsplit(event.target).query).get("$filter", [""])[0]
        for event in proxy.events
        if event.service == "table" and "$filter" in urlsplit(event.target).query
    ]
    assert sent
    for wire_filter in sent:
        # Take out the literals: what is left is exactly one of the constant templates.
        assert literal.sub("?", wire_filter) in shapes, wire_filter
        for value in (v for case in cases for v in case.values()):
            if "'" in value:
                assert value not in wire_filter  # a quote in a value never reaches it raw


def test_cli_query_with_hostile_arguments_in_process(
    archive: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m shared query` as main() runs it (argv may hold what a process's cannot)."""
    monkeypatch.setenv(names.STORAGE_CONNECTION, archive.settings.storage_connection)
    monkeypatch.setenv(names.STORE_PREFIX, archive.settings.store_prefix)
    span = ["--since", SPAN["since"], "--until", SPAN["until"], "--limit", "1000"]
    for filters in hostile_found_cases():
        argv = ["query", *span]
        for name, value in filters.items():
            argv += [f"--{name.replace('_', '-')}={value}"]
        status, out, err = _main(argv)
        # JSON Lines end at "\n" only: a value may hold U+0085, which splitlines() splits at.
        keys = [orjson.loads(line)["EventKey"] for line in out.split("\n") if line]
        assert keys == expected({**SPAN, **filters})
        # Standard error stays empty, but for the one line that says what an empty search read.
        assert status == 0, (filters, err)
        assert err == "" if keys else err.startswith("no records found from "), (filters, err)
    for params in REFUSED_CASES:
        argv = ["query", *span]
        if any(name not in ("since", "until", "limit", *COLUMN_OF, "category") for name in params):
            continue  # not an option of the command (argparse refuses it; tested below)
        if params.get("limit") == "1001":
            continue  # on the command line --limit is a total: 1001 is fine (HTTP refuses it)
        for name, value in params.items():
            argv += [f"--{name.replace('_', '-')}={value}"]
        status, out, err = _main(argv)
        assert status == 2 and out == "", (params, status)
        assert err.startswith("error: ") and err.count("\n") == 1, err
    status, _, _ = _main(["query", "--filter", "1 eq 1"])
    assert status == 2


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            status = cli.main(argv)
        except SystemExit as exit_:  # argparse's own refusals
            status = int(exit_.code or 0)
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("arguments", "status", "filters"),
    [
        (["--caller", "' or 1 eq 1"], 0, {"caller": "' or 1 eq 1"}),
        (
            ["--caller=ÜNÏCØDÉ@例え.JP", "--category", "Policy"],
            0,
            {"caller": "Ünïcødé@例え.jp", "category": "Policy"},
        ),
        (
            ["--subscription", f"{SUBSCRIPTION}' or PartitionKey ne '"],
            0,
            {"subscription": f"{SUBSCRIPTION}' or PartitionKey ne '"},
        ),
        (["--since", "2024-13-01"], 2, None),
        (["--limit=-5"], 2, None),
        (["--caller", "x" * 10_240], 2, None),
        (["--category", "Administrative' or 'a' eq 'a"], 2, None),
        (["--caller", "a\x1bb"], 0, {"caller": "a\x1bb"}),  # searched for as it is
    ],
    ids=["quote-or", "unicode", "subscription-or", "bad-date", "negative", "10kb", "cat", "esc"],
)
def test_cli_query_process_with_hostile_arguments(
    archive: Runtime,
    arguments: list[str],
    status: int,
    filters: dict[str, str] | None,
) -> None:
    environment = {
        **os.environ,
        names.STORAGE_CONNECTION: archive.settings.storage_connection,
        names.STORE_PREFIX: archive.settings.store_prefix,
    }
    # The span and limit first: a hostile argument given after them wins.
    span = ["--since", SPAN["since"], "--until", SPAN["until"], "--limit", "1000"]
    result = subprocess.run(
        [sys.executable, "-m", "shared", "query", *span, *arguments],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == status, result.stderr.decode()[-2000:]
    if status == 2:
        assert result.stdout == b""
        error = result.stderr.decode()
        assert error.startswith("error: ") and error.count("\n") == 1, error
        return
    keys = [orjson.loads(line)["EventKey"] for line in result.stdout.splitlines()]
    assert keys == expected({**SPAN, **(filters or {})})
    error = result.stderr.decode()
    assert error == "" if keys else error.startswith("no records found from "), error
