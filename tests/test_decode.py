"""The decoder: every input form, and bad input turned into rejections, never exceptions."""

from __future__ import annotations

from typing import Any

import orjson

from shared.core.decode import RawEvent, decode, decode_line
from shared.core.normalize import normalize_input
from shared.core.records import Rejection

A = {"time": "2024-05-01T10:00:00.0000000Z", "operationName": "a/b/write"}
B = {"time": "2024-05-01T10:00:01.0000000Z", "operationName": "c/d/delete"}
C = {"time": "2024-05-01T10:00:02.0000000Z", "operationName": "e/f/action"}


def items(data: bytes | str, source: str = "in.json") -> list[RawEvent | Rejection]:
    return list(decode(data, source))


def events(data: bytes | str, source: str = "in.json") -> list[RawEvent]:
    decoded = items(data, source)
    assert all(isinstance(item, RawEvent) for item in decoded), decoded
    return [item for item in decoded if isinstance(item, RawEvent)]


def line(event: dict[str, Any]) -> str:
    return orjson.dumps(event).decode()


# -- the six forms --------------------------------------------------------------------------


def test_event_hub_envelope_gives_each_record_with_its_index() -> None:
    body = orjson.dumps({"records": [A, B, C]})
    decoded = events(body, "hub/0/17")
    assert [item.event for item in decoded] == [A, B, C]
    assert [item.source for item in decoded] == [
        "hub/0/17#records[0]",
        "hub/0/17#records[1]",
        "hub/0/17#records[2]",
    ]
    assert [orjson.loads(item.raw) for item in decoded] == [A, B, C]


def test_json_lines_give_each_line_with_its_number_and_text() -> None:
    text = f"{line(A)}\n{line(B)}\n{line(C)}\n"
    decoded = events(text.encode(), "PT1H.json")
    assert [item.event for item in decoded] == [A, B, C]
    assert [item.source for item in decoded] == ["PT1H.json:1", "PT1H.json:2", "PT1H.json:3"]
    assert [item.raw for item in decoded] == [line(A), line(B), line(C)]


def test_json_lines_without_final_newline() -> None:
    decoded = events(f"{line(A)}\n{line(B)}".encode())
    assert [item.event for item in decoded] == [A, B]


def test_json_lines_with_leading_space_blank_lines_crlf_and_bom() -> None:
    text = "\ufeff" + '{ "time": "2024-05-01T10:00:00Z"}\r\n\r\n\n   \n' + f"  {line(B)}  \r\n"
    decoded = events(text.encode("utf-8"))
    assert [item.event for item in decoded] == [{"time": "2024-05-01T10:00:00Z"}, B]
    assert [item.source for item in decoded] == ["in.json:1", "in.json:5"]
    assert decoded[0].raw == '{ "time": "2024-05-01T10:00:00Z"}'


def test_a_bom_at_the_start_of_any_line_is_ignored_as_the_blob_path_ignores_it() -> None:
    # Two exported files concatenated: the second one's BOM starts a line.
    data = line(A).encode() + b"\n\xef\xbb\xbf" + line(B).encode() + b"\n"
    assert [item.event for item in events(data)] == [A, B]
    assert [item.event for item in events(b"\xef\xbb\xbf" + data)] == [A, B]
    [on_a_line] = decode_line(b"\xef\xbb\xbf" + line(B).encode(), "PT1H.json:2")
    assert isinstance(on_a_line, RawEvent)
    assert on_a_line.event == B


def test_bom_before_a_single_object() -> None:
    decoded = events(b"\xef\xbb\xbf" + orjson.dumps(A))
    assert [item.event for item in decoded] == [A]


def test_old_blob_envelope_pretty_printed() -> None:
    text = orjson.dumps({"records": [A, B]}, option=orjson.OPT_INDENT_2).decode()
    decoded = events(text, "old/PT1H.json")
    assert [item.event for item in decoded] == [A, B]
    assert decoded[1].source == "old/PT1H.json#records[1]"


def test_one_pretty_printed_object_is_one_event_with_the_whole_text() -> None:
    text = orjson.dumps(A, option=orjson.OPT_INDENT_2).decode() + "\n"
    decoded = events(text, "one.json")
    assert len(decoded) == 1
    assert decoded[0].event == A
    assert decoded[0].source == "one.json"
    assert decoded[0].raw == text.strip()


def test_array_of_events() -> None:
    decoded = events(orjson.dumps([A, B], option=orjson.OPT_INDENT_2), "list.json")
    assert [item.event for item in decoded] == [A, B]
    assert [item.source for item in decoded] == ["list.json#[0]", "list.json#[1]"]


def test_array_of_envelopes_expands_each() -> None:
    decoded = events(orjson.dumps([{"records": [A]}, {"records": [B, C]}]), "bodies.json")
    assert [item.event for item in decoded] == [A, B, C]
    assert [item.source for item in decoded] == [
        "bodies.json#[0]#records[0]",
        "bodies.json#[1]#records[0]",
        "bodies.json#[1]#records[1]",
    ]


def test_a_rejected_element_of_an_array_of_bodies_keeps_its_bytes_as_sent() -> None:
    odd = b'{"d": 1, "d": 2.50, "e": "\\u00e9"}'  # no time; a duplicate key, a number's spelling
    data = b'[{"records": [' + line(A).encode() + b']}, {"records": [' + odd + b", 7]}]"
    decoded = items(data, "bodies.json")
    rejections = [item for item in decoded if isinstance(item, Rejection)]
    assert [item.source for item in rejections] == [
        "bodies.json#[1]#records[0]",  # it repeats a name: refused as it was sent
        "bodies.json#[1]#records[1]",
    ]
    [first] = [item for item in decoded if isinstance(item, RawEvent)]
    assert first.event == A
    assert [item.raw_bytes for item in rejections] == [odd, b"7"]
    assert "repeats the name 'd'" in rejections[0].reason


def test_rest_form_object_and_rest_page() -> None:
    rest = {"eventTimestamp": "2024-05-01T10:00:00Z", "category": {"value": "Administrative"}}
    assert [item.event for item in events(orjson.dumps(rest))] == [rest]
    page = {"value": [rest, rest], "nextLink": None}
    decoded = events(orjson.dumps(page), "page.json")
    assert [item.source for item in decoded] == ["page.json#value[0]", "page.json#value[1]"]


def test_envelope_on_a_line_expands_with_line_and_index() -> None:
    text = f"{line(A)}\n{line({'records': [B, C]})}\n"
    decoded = events(text, "mixed.json")
    assert [item.event for item in decoded] == [A, B, C]
    assert [item.source for item in decoded] == [
        "mixed.json:1",
        "mixed.json:2#records[0]",
        "mixed.json:2#records[1]",
    ]


def test_an_event_with_a_records_field_is_not_an_envelope() -> None:
    event = {"time": "2024-05-01T10:00:00Z", "records": [1, 2]}
    assert [item.event for item in events(orjson.dumps(event))] == [event]


def test_empty_input_holds_no_events() -> None:
    assert items(b"") == []
    assert items(b"\xef\xbb\xbf \n\n") == []
    assert items(b'{"records": []}') == []


# -- bad input ------------------------------------------------------------------------------


def test_one_bad_line_spoils_only_that_line() -> None:
    text = f"{line(A)}\n{{not json\n{line(B)}\n"
    decoded = items(text.encode(), "PT1H.json")
    assert isinstance(decoded[0], RawEvent)
    assert decoded[0].event == A
    rejection = decoded[1]
    assert isinstance(rejection, Rejection)
    assert rejection.source == "PT1H.json:2"
    assert rejection.raw == "{not json"
    assert rejection.reason.startswith("not JSON: ")
    assert isinstance(decoded[2], RawEvent)
    assert decoded[2].event == B
    assert len(decoded) == 3


def test_bad_lines_before_the_first_good_one_keep_their_order() -> None:
    text = f"garbage\n42\n{line(A)}\n[1]\n"
    decoded = items(text)
    assert [type(item).__name__ for item in decoded] == [
        "Rejection",
        "Rejection",
        "RawEvent",
        "Rejection",
    ]
    reasons = [item.reason for item in decoded if isinstance(item, Rejection)]
    assert reasons[0].startswith("not JSON: ")
    assert reasons[1] == "not an object: got number"
    assert reasons[2] == "not an object: got array"


def test_plain_text_is_one_rejection_with_the_whole_text() -> None:
    text = "this is not\nJSON at all\n"
    decoded = items(text.encode(), "notes.txt")
    assert len(decoded) == 1
    rejection = decoded[0]
    assert isinstance(rejection, Rejection)
    assert rejection.source == "notes.txt"
    assert rejection.raw == text.strip()
    assert rejection.reason.startswith("not JSON: ")


def test_truncated_pretty_printed_object_is_one_rejection() -> None:
    whole = orjson.dumps({"records": [A, B]}, option=orjson.OPT_INDENT_2).decode()
    truncated = whole[: len(whole) // 2]
    decoded = items(truncated, "cut.json")
    assert len(decoded) == 1
    rejection = decoded[0]
    assert isinstance(rejection, Rejection)
    assert rejection.source == "cut.json"
    assert rejection.raw == truncated.strip()
    assert rejection.reason.startswith("not JSON: ")


def test_a_truncated_envelope_with_an_event_a_line_is_one_rejection_not_lines() -> None:
    # Pretty-printed with each event on its own line: some lines parse as objects, yet the
    # input is one broken document, not JSON Lines (its lines are pieces of one value).
    events_lines = ",\n".join(f"    {line(event)}" for event in (A, B, C))
    whole = f'{{\n  "records": [\n{events_lines}\n  ]\n}}\n'
    for cut in (whole[: whole.rindex("]")], whole[: whole.rindex(line(C))], whole[:-3]):
        decoded = items(cut.encode(), "cut.json")
        assert len(decoded) == 1, (cut, decoded)
        rejection = decoded[0]
        assert isinstance(rejection, Rejection)
        assert rejection.source == "cut.json"
        assert rejection.raw == cut.strip()
        assert rejection.reason.startswith("not JSON: ")


def test_a_pretty_printed_array_with_a_syntax_error_inside_is_one_rejection() -> None:
    pretty = orjson.dumps([A, B, C], option=orjson.OPT_INDENT_2).decode()
    broken = pretty.replace("},", "},,", 1)  # no line holds a whole object: not JSON Lines
    decoded = items(broken.encode(), "az-list.json")
    assert len(decoded) == 1
    assert isinstance(decoded[0], Rejection)
    assert decoded[0].raw == broken.strip()


def test_json_lines_whose_first_line_is_cut_spoil_only_that_line() -> None:
    for first in (line(A)[:-9], line(A)[:-1] + ",", "xyz", line(A) + "x"):
        decoded = items(f"{first}\n{line(B)}\n{line(C)}\n".encode(), "PT1H.json")
        kinds = [type(item).__name__ for item in decoded]
        assert kinds == ["Rejection", "RawEvent", "RawEvent"], (first, decoded)
        assert decoded[0].source == "PT1H.json:1"


def test_an_event_json_allows_but_a_record_cannot_hold_is_rejected_alone() -> None:
    # A lone UTF-16 surrogate escape (JSON's grammar takes it; .NET writes one when it cuts a
    # string) and nesting past the 1,024 levels read: found from outside, they rejected the
    # whole Event Hub body, and the events beside them were never archived.
    surrogate = b'{"time": "2024-05-01T10:00:03Z", "caller": "ab\\ud83d"}'
    deep = b'{"time": "2024-05-01T10:00:04Z", "p": ' + b"[" * 1100 + b"]" * 1100 + b"}"
    for odd in (surrogate, deep):
        for body, prefix in (
            (
                b'{"records": ['
                + line(A).encode()
                + b", "
                + odd
                + b", "
                + line(B).encode()
                + b"]}",
                "body#records",
            ),
            (b"[" + line(A).encode() + b",\n " + odd + b",\n" + line(B).encode() + b"]", "body#"),
        ):
            decoded = items(body, "body")
            assert [type(item).__name__ for item in decoded] == [
                "RawEvent",
                "Rejection",
                "RawEvent",
            ]
            assert [item.event for item in decoded if isinstance(item, RawEvent)] == [A, B]
            rejection = decoded[1]
            assert isinstance(rejection, Rejection)
            assert rejection.source == f"{prefix}[1]"
            assert rejection.raw.encode() == odd  # its own bytes, as sent
            # as the same event on a line of a PT1H blob is
            [on_a_line] = decode_line(odd, "PT1H.json:2")
            assert isinstance(on_a_line, Rejection)
            assert on_a_line.reason == rejection.reason


def test_a_whole_input_rejected_keeps_its_bytes_exactly_bom_and_line_ends_too() -> None:
    cut = orjson.dumps({"records": [A, B]}, option=orjson.OPT_INDENT_2)[:-9]
    for data in (
        b"\xef\xbb\xbfnot json at all\r\n",
        b"  plain\r\ntext\r\n\r\n",
        b"\xef\xbb\xbf" + cut + b"\r\n",
    ):
        [rejection] = items(data, "body")
        assert isinstance(rejection, Rejection)
        assert rejection.raw_bytes == data
        assert rejection.raw == data.decode().lstrip("\ufeff").strip()  # for people: trimmed


def test_a_whole_input_parsed_and_then_rejected_keeps_its_bytes_exactly() -> None:
    # Found from outside: a body that parsed but was refused (no time, not an object) was
    # dead-lettered trimmed, its BOM and line end gone, so a replay re-drove other bytes.
    for data in (
        b'\xef\xbb\xbf{"category": "Administrative"}\r\n',
        b"42\r\n",
        b'\xef\xbb\xbf"hello"',
        b'\xef\xbb\xbf\xef\xbb\xbf{"time": "x"}',
        b'\t {"time": "not a time"} \n',
    ):
        records, rejections = normalize_input(data, "body")
        assert records == [], data
        [rejection] = rejections
        assert rejection.raw_bytes == data


def test_an_object_with_an_empty_list_beside_an_events_fields_is_not_an_empty_envelope() -> None:
    # Found from outside: it vanished (no record, no dead letter), read as an envelope of none.
    for data in (
        b'{"category": "Administrative", "operationName": "x/y", "value": []}',
        b'{"resourceId": "/subscriptions/s", "records": []}',
    ):
        records, rejections = normalize_input(data, "body")
        assert records == [] and len(rejections) == 1, data
        assert rejections[0].raw_bytes == data
    for empty in (b'{"records": []}', b'{"value": [], "nextLink": null}', b'{"value": []}'):
        assert items(empty) == [], empty


def test_json_lines_whose_first_line_opens_a_value_the_next_lines_fill_keep_those_lines() -> None:
    # Found from outside (a regression of the broken-document rule): the whole parse went on
    # into line 2, so the error fell past it, and every good line was lost with the first.
    good = f"{line(B)}\n{line(C)}\n"
    for first in (
        '{"records":[' + line(A) + ",",
        '{"records":[',
        "[",
        "[" + line(A) + ",",
        '{"time":"2024-05-01T10:00:00Z","properties":',
        '{"time":"2024-05-01T10:00:00Z","tags":[',
    ):
        for ending in ("\n", "\r\n"):
            data = (first + "\n" + good).replace("\n", ending).encode()
            decoded = items(data, "f.json")
            assert [item.event for item in decoded if isinstance(item, RawEvent)] == [B, C], first
            assert [item.source for item in decoded if isinstance(item, Rejection)] == ["f.json:1"]


def test_a_pretty_printed_event_on_top_of_json_lines_spares_the_lines_after_it() -> None:
    pretty = orjson.dumps(A, option=orjson.OPT_INDENT_2).decode()
    decoded = items(f"{pretty}\n{line(B)}\n{line(C)}\n".encode(), "f.json")
    assert [item.event for item in decoded if isinstance(item, RawEvent)][-2:] == [B, C]


def test_a_refused_element_of_an_envelope_on_a_line_spares_the_others_of_that_line() -> None:
    odd = '{"time":"2024-05-01T10:09:00Z","caller":"ab\\ud83d","x":[1]}'
    for on_a_line in ('{"records":[' + line(A) + "," + odd + "]}", "[" + line(A) + "," + odd + "]"):
        decoded = items(f"{on_a_line}\n{line(B)}\n".encode(), "f")
        assert [item.event for item in decoded if isinstance(item, RawEvent)] == [A, B], on_a_line
        [refused] = [item for item in decoded if isinstance(item, Rejection)]
        assert refused.raw_bytes == odd.encode()
        by_line = list(decode_line(on_a_line.encode(), "PT1H.json:4"))
        assert [item.event for item in by_line if isinstance(item, RawEvent)] == [A]


def test_truncated_single_line_object_is_one_rejection() -> None:
    decoded = items(line(A)[:-5], "cut.json")
    assert len(decoded) == 1
    assert isinstance(decoded[0], Rejection)
    assert decoded[0].source == "cut.json"


def test_non_objects_where_an_event_is_expected() -> None:
    for value, kind in (
        ("42", "number"),
        ('"text"', "string"),
        ("null", "null"),
        ("true", "boolean"),
    ):
        decoded = items(value)
        assert decoded == [Rejection(f"not an object: got {kind}", "in.json", value)]
    decoded = items(orjson.dumps({"records": [A, 7, [B]]}))
    assert isinstance(decoded[0], RawEvent)
    assert decoded[1] == Rejection("not an object: got number", "in.json#records[1]", "7")
    assert isinstance(decoded[2], Rejection)
    assert decoded[2].reason == "not an object: got array"
    assert decoded[2].source == "in.json#records[2]"


def test_invalid_utf8_line_is_rejected_with_its_bytes_escaped() -> None:
    data = line(A).encode() + b'\n{"time": "x\xff\xfe"}\n' + line(B).encode()
    decoded = items(data, "PT1H.json")
    assert [type(item).__name__ for item in decoded] == ["RawEvent", "Rejection", "RawEvent"]
    rejection = decoded[1]
    assert isinstance(rejection, Rejection)
    assert rejection.source == "PT1H.json:2"
    assert rejection.reason.startswith("not UTF-8")
    assert rejection.raw == '{"time": "x\\xff\\xfe"}'
    rejection.raw.encode("utf-8")  # a dead letter can always be written


def test_invalid_utf8_single_object_is_one_rejection() -> None:
    decoded = items(b'{"time": "\xc3"}', "bad.json")
    assert len(decoded) == 1
    assert isinstance(decoded[0], Rejection)
    assert decoded[0].reason.startswith("not UTF-8")


# -- decode_line (the blob indexer's entry) ---------------------------------------------------


def test_decode_line_uses_the_source_as_given() -> None:
    (decoded,) = decode_line(line(A).encode() + b"\r", "blob:9")
    assert isinstance(decoded, RawEvent)
    assert (decoded.event, decoded.source, decoded.raw) == (A, "blob:9", line(A))


def test_decode_line_blank_yields_nothing() -> None:
    assert list(decode_line(b"", "blob:1")) == []
    assert list(decode_line(b"  \r", "blob:1")) == []


def test_decode_line_bad_and_envelope_and_array() -> None:
    [bad] = decode_line(b"{oops", "blob:3")
    assert isinstance(bad, Rejection)
    assert (bad.source, bad.raw) == ("blob:3", "{oops")
    expanded = list(decode_line(orjson.dumps({"records": [A, B]}), "blob:4"))
    assert [item.source for item in expanded] == ["blob:4#records[0]", "blob:4#records[1]"]
    [array] = decode_line(b"[1, 2]", "blob:5")
    assert array == Rejection("not an object: got array", "blob:5", "[1, 2]")


def test_decode_line_with_bom() -> None:
    [item] = decode_line(b"\xef\xbb\xbf" + line(A).encode(), "blob:1")
    assert isinstance(item, RawEvent)
    assert item.event == A
