"""Inputs found by attacking the pipeline from outside: nesting deeper than JSON writers take,
numbers a float cannot hold beside others, whole-document files in the blob path. Each must
end as records or dead letters with their bytes, never as a crash that drops neighbours, and
an event's key must not depend on what arrived beside it. Real Azurite where storage is used.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import azure.functions as func
import orjson
import pytest

from functions.query_http import handle_activity
from shared import settings as names
from shared.adapters.blobs import ArchiveBlob
from shared.adapters.deadletters import REJECTED
from shared.bootstrap import Runtime, runtime
from shared.core.archive_format import encode_blob
from shared.core.decode import ExactNumber
from shared.core.nesting import MAX_NESTING
from shared.core.normalize import Batch, normalize_input
from shared.services.delivery import EventBody, deliver
from shared.settings import Settings
from shared.tools.local_host import Invocation, app_settings, event_hub_batch, registered
from tests.archive_view import archived_keys, archived_records
from tests.events import activity_event, envelope
from tests.test_blobindex import append_blob, pt1h_name

HOUR = datetime(2024, 5, 1, 10, tzinfo=UTC)
LATER = datetime.now(UTC) + timedelta(days=2)


def event_json(number: int, **overrides: object) -> bytes:
    return orjson.dumps(activity_event(number, **overrides))


def nested(depth: int, leaf: bytes = b'"x"') -> bytes:
    """`depth` objects one in another: JSON that orjson reads (to 1,024) but writes only to 254."""
    return b'{"a":' * depth + leaf + b"}" * depth


def with_deep_properties(number: int, depth: int) -> bytes:
    """An Activity Log event whose properties nest `depth` levels deeper."""
    event = event_json(number)
    head, _, _ = event.rpartition(b',"properties":')
    return head + b',"properties":{"statusCode":"OK","d":' + nested(depth) + b"}}"


def keys(data: bytes) -> list[str]:
    return sorted(record["EventKey"] for record in normalize_input(data, "x")[0])


# --- nesting --------------------------------------------------------------------------------


def test_an_event_nested_past_the_writers_depth_is_a_record_with_its_deep_part_as_text() -> None:
    records, rejections = normalize_input(with_deep_properties(1, 300), "body")
    assert rejections == []
    [record] = records
    encode_blob([record])  # the archive can write it
    orjson.dumps([record])  # and so can a Logs Ingestion post
    assert any("nested deeper" in warning for warning in record["NormalizationWarnings"])
    held: object = record["Properties_d"]["d"]
    while isinstance(held, dict):
        held = held["a"]
    assert isinstance(held, str)  # the part past the limit, kept whole as its JSON text
    assert orjson.loads(held) is not None
    assert held.endswith('"x"' + "}" * held.count("{"))
    # The same input always gives the same record and key.
    assert normalize_input(with_deep_properties(1, 300), "again")[0][0] == record


# The keys versions before records were held to MAX_NESTING gave these events: a redelivery of
# one archived then must still count as a duplicate.
KEYS_OF_DEEP_EVENTS = {
    130: "f9b3b628e9e92e436d015f9141279a0f",
    200: "8ce1479828029caaf364c38f01305759",
    251: "4c9320bc47e3667bbf88feadc72ec823",
}


def depth_of(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(inner) for inner in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(inner) for inner in value), default=0)
    return 0


def test_no_record_nests_past_max_nesting_and_each_keeps_the_key_it_had() -> None:
    # Found from outside: a record 251 levels deep was archived as it was, and every JSON
    # page holding it failed (the page's own levels took it past what orjson writes).
    for depth, key in KEYS_OF_DEEP_EVENTS.items():
        records, rejections = normalize_input(with_deep_properties(7, depth), "x")
        assert rejections == []
        [record] = records
        assert record["EventKey"] == key
        assert depth_of(record) <= MAX_NESTING
        assert any("nested deeper" in warning for warning in record["NormalizationWarnings"])
        orjson.dumps({"records": [{"wrapped": [[record]]}]})  # room for any wrapper


def _properties_event(number: int, d: bytes) -> bytes:
    event = event_json(number)
    head, _, _ = event.rpartition(b',"properties":')
    return head + b',"properties":{"statusCode":"OK","d":' + d + b"}}"


def test_an_event_holding_a_deep_parts_text_is_not_that_deep_event(app: Runtime) -> None:
    # Found from outside: past the writers' depth the key was of the record as flattened, so
    # an event holding, at that place, the flattened part's JSON text as a string had its key
    # and was archived as its duplicate: one of two events lost.
    [deep], _ = normalize_input(with_deep_properties(1, 300), "x")
    as_text = _properties_event(1, orjson.dumps(deep["Properties_d"]["d"]))
    [shallow], _ = normalize_input(as_text, "y")
    assert shallow["Properties_d"] == deep["Properties_d"]  # the same columns, archived alike
    assert shallow["EventKey"] != deep["EventKey"]
    assert len(app.writer.write([deep, shallow]).indexed) == 2  # both kept


def test_a_deep_events_key_does_not_depend_on_its_key_order() -> None:
    # The key is of sorted keys at every level, past the writers' depth too: the same event,
    # its deep part's members in another order, is its duplicate.
    leaf_ab, leaf_ba = b'{"p":1,"q":[2,{"r":3,"s":4}]}', b'{"q":[2,{"s":4,"r":3}],"p":1}'
    one = keys(_properties_event(1, nested(300, leaf_ab)))
    other = keys(_properties_event(1, nested(300, leaf_ba)))
    assert one == other
    assert one != keys(_properties_event(1, nested(300, b'{"p":1,"q":[2,{"r":3,"s":5}]}')))
    assert one != keys(_properties_event(1, nested(299, leaf_ab)))  # not one level less


def test_a_json_page_holding_a_record_archived_deep_is_answered(app: Runtime) -> None:
    # As a version before records were held to MAX_NESTING archived it: as deep as orjson
    # writes, which the page's own two levels took past.
    [record], _ = normalize_input(event_json(8), "x")
    record["Properties_d"] = {"d": orjson.loads(nested(252))}
    orjson.dumps(record)  # the archive could write it
    assert app.writer.write([record]).indexed
    params = {"subscription": record["SubscriptionId"], "since": "2020-01-01"}
    request = func.HttpRequest("GET", "http://127.0.0.1/api/activity", params=params, body=b"")
    response = handle_activity(request, app, datetime.now(UTC))
    assert response.status_code == 200, response.get_body()[:300]
    [found] = orjson.loads(response.get_body())["records"]
    assert found["EventKey"] == record["EventKey"]
    assert depth_of(found) == depth_of(record)


def test_a_request_body_nested_past_that_depth_is_kept_not_rejected() -> None:
    body = nested(400).decode()
    event = activity_event(2, properties={"requestbody": body, "statusCode": "OK"})
    records, rejections = normalize_input(orjson.dumps(event), "body")
    assert rejections == []
    encode_blob(records)


def test_an_event_hub_batch_with_deep_records_loses_none_of_their_neighbours(
    settings: Settings,
) -> None:
    deep_element = b"[" * 600 + b"]" * 600  # not an event: a dead letter with its bytes
    bodies = [
        b'{"records":[' + event_json(1) + b"," + with_deep_properties(2, 600) + b"]}",
        b'{"records":[' + event_json(3) + b"," + deep_element + b"]}",
        envelope([activity_event(4)]),
    ]
    with app_settings(
        {
            names.STORAGE_CONNECTION: settings.storage_connection,
            names.STORE_PREFIX: settings.store_prefix,
        }
    ):
        registered("activity_events")(event_hub_batch(bodies), Invocation("activity_events"))
        app = runtime()
    expected = [
        *keys(event_json(1)),
        *keys(with_deep_properties(2, 600)),
        *keys(event_json(3)),
        *keys(envelope([activity_event(4)])),
    ]
    assert archived_keys(app) == sorted(expected)
    [letter] = app.deadletters.list(REJECTED)
    assert letter.reason == "not an object: got array"
    assert letter.raw == deep_element.decode()


# --- numbers --------------------------------------------------------------------------------


def test_an_events_key_does_not_depend_on_the_numbers_of_its_neighbours() -> None:
    tiny = activity_event(5, properties={"ratio": "@", "statusCode": "OK"})
    alone = orjson.dumps(tiny).replace(b'"@"', b"1e-999")
    long_neighbour = orjson.dumps(activity_event(6, properties={"n": "@"})).replace(
        b'"@"', b"123456789012345678901234567890"
    )
    [by_itself] = normalize_input(b'{"records":[' + alone + b"]}", "a")[0]
    beside, _ = normalize_input(b'{"records":[' + alone + b"," + long_neighbour + b"]}", "b")
    assert by_itself["EventKey"] == beside[0]["EventKey"]
    assert by_itself["Properties_d"]["ratio"] == ExactNumber("1e-999")  # never rounded to 0
    zero = orjson.dumps(tiny).replace(b'"@"', b"0.0")
    assert keys(zero) != keys(alone)  # two events, two keys


def test_a_number_past_a_floats_range_is_kept_exact_and_spares_its_neighbours() -> None:
    huge = orjson.dumps(activity_event(7, properties={"big": "@"})).replace(b'"@"', b"1e400")
    records, rejections = normalize_input(
        b'{"records":[' + huge + b"," + event_json(8) + b"]}", "body"
    )
    assert rejections == []
    assert [r["Properties_d"].get("big") for r in records] == [ExactNumber("1e400"), None]
    nan = b'{"records":[' + event_json(9).replace(b'"Created"', b"NaN") + b"]}"
    assert b"NaN" in nan
    assert normalize_input(nan, "nan")[1][0].reason.startswith("not JSON")


def test_a_rejected_element_is_dead_lettered_as_it_was_sent() -> None:
    """Its own bytes in the body: spacing, a number's spelling, a duplicate key's earlier
    value (its parsed value written back would lose all three)."""
    element = b'{ "big": 123456789012345678901234567890, "k": 1, "k": 2, "n": 1.0E2 }'
    other = b'{"s": "a \\"], [{ \\\\", "records": [1]}'  # brackets and quotes in strings
    body = b'{"nextLink": [[0], {"records": []}],\n "records": [' + other + b" ,\n " + element
    body += b', 1.50, "text"  ]}'
    rejections = normalize_input(body, "body")[1]
    assert [r.raw for r in rejections] == [
        other.decode(),
        element.decode(),
        "1.50",
        '"text"',
    ]
    in_an_array = b"[ " + element + b" ]"
    assert [r.raw for r in normalize_input(in_an_array, "body")[1]] == [element.decode()]


# --- whole documents in the blob path -----------------------------------------------------------


def test_whole_json_documents_in_the_blob_path_are_read_whole(archive_app: Runtime) -> None:
    app = archive_app
    events = [activity_event(n) for n in range(10, 16)]
    documents = {
        "array": orjson.dumps(events[:2], option=orjson.OPT_INDENT_2),
        "object": orjson.dumps(events[2], option=orjson.OPT_INDENT_2),
        "page": orjson.dumps({"nextLink": None, "value": events[3:5]}, option=orjson.OPT_INDENT_2),
        "one-line-array": orjson.dumps(events[5:6]) + b"\n",
    }
    for number, data in enumerate(documents.values()):
        name = pt1h_name(HOUR + timedelta(hours=number))
        append_blob(app, name).append_block(data)
        report = app.blob_indexer.index(ArchiveBlob(app.stores.archive, name), now=LATER)
        assert report.deadlettered == 0, name
    assert archived_keys(app) == keys(orjson.dumps(events))
    assert len(archived_records(app)) == len(events)


def test_a_sealed_blob_that_is_one_broken_document_is_read_as_any_input_is(
    archive_app: Runtime,
) -> None:
    """Found from outside: a blob holding a pretty-printed document that does not parse was
    read line by line, one dead letter a line (76 for one event), and a pre-2018 envelope with
    one lone UTF-16 surrogate escape lost its every event to fragments of lines."""
    app = archive_app
    events = [activity_event(n) for n in range(20, 24)]
    lines = ",\n".join("    " + orjson.dumps(event).decode() for event in events)
    cut = f'{{\n  "records": [\n{lines}\n'.encode()  # one event a line, the end cut off
    odd = b'{"time": "2024-05-01T10:00:03Z", "caller": "ab\\ud83d"}'
    legacy = b'{\n  "records": [\n    ' + orjson.dumps(events[0]) + b",\n    " + odd + b"\n  ]\n}"
    expected = {"cut": (1, []), "legacy": (1, [events[0]])}
    for number, (what, data) in enumerate((("cut", cut), ("legacy", legacy))):
        name = pt1h_name(HOUR + timedelta(hours=number))
        append_blob(app, name).append_block(data)
        report = app.blob_indexer.index(ArchiveBlob(app.stores.archive, name), now=LATER)
        letters, archived = expected[what]
        assert report.deadlettered == letters, what
        assert report.indexed == len(archived), what
    assert archived_keys(app) == keys(orjson.dumps(events[:1]))


# --- a defect in the normalizer ------------------------------------------------------------------


def test_a_defect_normalizing_one_body_dead_letters_it_whole_and_spares_the_batch(
    app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    cursed = envelope([activity_event(21)]).replace(b'"Created"', b'"cursed"')

    def normalize_input_with_a_defect(data: bytes | str, source: str) -> Batch:
        if b'"cursed"' in bytes(data if isinstance(data, bytes) else data.encode()):
            raise RecursionError("a defect nobody has found yet")
        return normalize_input(data, source)

    monkeypatch.setattr("shared.services.delivery.normalize_input", normalize_input_with_a_defect)
    bodies = [envelope([activity_event(20)]), cursed, envelope([activity_event(22)])]
    report = deliver(
        [EventBody(body, "0", number) for number, body in enumerate(bodies)],
        writer=app.writer,
        deadletters=app.deadletters,
        final_attempt=False,
    )
    assert (report.indexed, report.deadlettered) == (2, 1)
    assert archived_keys(app) == sorted(keys(bodies[0]) + keys(bodies[2]))
    [letter] = app.deadletters.list(REJECTED)
    assert letter.reason.startswith("normalizer error: RecursionError: a defect")
    assert letter.raw == cursed.decode()


def test_a_file_that_is_not_json_lines_is_one_body_for_ingest() -> None:
    from shared.tools.cli import event_hub_bodies

    broken = orjson.dumps({"records": [activity_event(30)]}, option=orjson.OPT_INDENT_2)[:-3]
    assert [body.body for body in event_hub_bodies("f.json", broken)] == [broken]
    lines = envelope([activity_event(31)]) + b"\n\n" + envelope([activity_event(32)]) + b"\n"
    assert len(event_hub_bodies("f.jsonl", lines)) == 2
    assert len(event_hub_bodies("f.jsonl", lines + b"not json\n")) == 3


def test_an_envelope_with_both_lists_of_events_yields_both() -> None:
    both = orjson.dumps({"records": [activity_event(40)], "value": [activity_event(41)]})
    records, rejections = normalize_input(both, "body")
    assert (len(records), rejections) == (2, [])
