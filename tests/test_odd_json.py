"""JSON that parsers read in more than one way, or refuse in part: nothing it carries is lost.

Found from outside: a name repeated in an object kept only its last value (`{"records":
[e1, e2], "records": [e3]}` lost e1 and e2, neither record nor dead letter; a repeated
`caller` hid the first and gave two different events one EventKey); one value the reader
refuses (NaN, a raw control character, bytes that are not UTF-8, nesting past any parser's
depth) made a whole Event Hub body one dead letter, its good events never archived; and an
object with a `records` or `value` list beside other fields lost those fields.
"""

from __future__ import annotations

import orjson
import pytest

from shared.core.normalize import normalize_input
from tests.events import activity_event

GOOD = [orjson.dumps(activity_event(n)) for n in range(3)]


def keys(records: list[dict[str, object]]) -> list[object]:
    return [record["EventKey"] for record in records]


def test_a_repeated_records_key_keeps_the_whole_body_as_one_letter() -> None:
    body = b'{"records":[' + GOOD[0] + b"," + GOOD[1] + b'],"records":[' + GOOD[2] + b"]}"
    records, rejections = normalize_input(body, "hub")
    assert records == []
    [letter] = rejections
    assert letter.raw_bytes == body and "'records'" in letter.reason and "repeat" in letter.reason


@pytest.mark.parametrize("where", ["envelope", "line"])
def test_an_event_repeating_a_name_is_a_letter_and_its_neighbours_records(where: str) -> None:
    twice = GOOD[1].replace(b'"category":', b'"category":"Security","category":', 1)
    assert twice.count(b'"category"') == 2
    if where == "envelope":
        body = b'{"records":[' + b",".join([GOOD[0], twice, GOOD[2]]) + b"]}"
    else:
        body = b"\n".join([GOOD[0], twice, GOOD[2]]) + b"\n"
    records, rejections = normalize_input(body, "input")
    assert keys(records) == keys(normalize_input(b"\n".join([GOOD[0], GOOD[2]]), "x")[0])
    [letter] = rejections
    assert letter.raw_bytes == twice and "'category'" in letter.reason


def test_a_name_repeated_deep_inside_is_found_and_an_escaped_colon_is_no_repeat() -> None:
    deep = activity_event(7, properties={"a": {"b": 1}})
    text = orjson.dumps(deep).replace(b'"b":1', b'"b":1,"b":2')
    assert normalize_input(text, "x").rejections[0].reason.count("'b'") == 1
    escaped = orjson.dumps(activity_event(8, properties={"url": "a:b"})).replace(
        b"a:b", b"a\\u003ab"
    )
    records, rejections = normalize_input(escaped, "x")
    assert rejections == [] and len(records) == 1


REFUSED_ELEMENTS = {
    "NaN": b'{"time": "2024-05-01T10:00:00Z", "category": "Administrative", "p": NaN}',
    "Infinity": b'{"time": "2024-05-01T10:00:00Z", "category": "Administrative", "p": -Infinity}',
    "raw NUL": b'{"time": "2024-05-01T10:00:00Z", "category": "Administrative", "p": "a\x00b"}',
    "not UTF-8": b'{"time": "2024-05-01T10:00:00Z", "category": "Administrative", "p": "J\xf6rg"}',
    "too deep": b'{"time": "2024-05-01T10:00:00Z", "p": ' + b"[" * 2000 + b"]" * 2000 + b"}",
}


@pytest.mark.parametrize("name", sorted(REFUSED_ELEMENTS))
def test_an_element_the_reader_refuses_is_one_letter_and_spares_its_neighbours(name: str) -> None:
    bad = REFUSED_ELEMENTS[name]
    body = b'{"records": [' + GOOD[0] + b", " + bad + b", " + GOOD[2] + b"]}"
    records, rejections = normalize_input(body, "hub")
    assert len(records) == 2, rejections
    [letter] = rejections
    assert letter.raw_bytes == bad and letter.source == "hub#records[1]"


@pytest.mark.parametrize(
    "body",
    [
        b'{"records": [' + GOOD[0] + b'], "extra": NaN}',  # refused outside the list
        b'{"records": [' + GOOD[0] + b", " + GOOD[1],  # cut short
        b'{"records": [' + GOOD[0] + b'], "records": [NaN]}',  # the list named twice
    ],
)
def test_a_refused_body_whose_envelope_is_broken_stays_one_letter(body: bytes) -> None:
    records, rejections = normalize_input(body, "hub")
    assert records == [] and [r.raw_bytes for r in rejections] == [body]


@pytest.mark.parametrize(
    "body",
    [
        b'{"records": [' + GOOD[0] + b'], "caller": "alice@contoso.com"}',
        b'{"caller": "alice@contoso.com", "operationName": "x", "value": [{"a": 1}]}',
    ],
)
def test_a_list_beside_fields_no_envelope_has_is_not_an_envelope(body: bytes) -> None:
    records, rejections = normalize_input(body, "x")
    assert records == [] and [r.raw_bytes for r in rejections] == [body]
