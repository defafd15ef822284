"""Properties: the time parser round-trips and never raises; EventKey is the event's identity."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shared.core.normalize import normalize, normalize_input
from shared.core.records import COLUMNS, Rejection
from shared.core.timeparse import parse_time

MODEST = settings(max_examples=200, deadline=None)
CANONICAL_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z")

# Top-level fields that some rule reads: an unknown field must avoid them.
RULE_FIELDS = {
    "time", "eventTimestamp", "category", "operationName", "resourceProviderName",
    "resultType", "status", "resultSignature", "subStatus", "level", "Level", "resourceId",
    "subscriptionId", "resourceGroupName", "caller", "callerIpAddress", "correlationId",
    "operationId", "eventDataId", "location", "resultDescription", "description", "durationMs",
    "hierarchy", "tenantId", "identity", "authorization", "claims", "properties", "httpRequest",
}  # fmt: skip

# -- the time parser -------------------------------------------------------------------------

moments = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 12, 31))
nanoseconds = st.integers(min_value=0, max_value=999_999_999)
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59)


def _offset_text(minutes: int, colon: bool) -> str:
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}{':' if colon else ''}{rest:02d}"


@MODEST
@given(
    moment=moments,
    nanos=nanoseconds,
    digits=st.integers(min_value=0, max_value=9),
    offset=offsets,
    form=st.sampled_from(["Z", "colon", "compact", "none", "space", "us", "us24"]),
)
def test_parse_time_round_trips(
    moment: datetime, nanos: int, digits: int, offset: int, form: str
) -> None:
    if form in ("Z", "none", "space"):
        offset = 0
    utc = moment.replace(microsecond=0, tzinfo=UTC)
    local = utc + timedelta(minutes=offset)
    fraction = f"{nanos:09d}"[:digits]
    dotted = f".{fraction}" if digits else ""
    if form == "us":
        hour12 = local.hour % 12 or 12
        meridiem = "AM" if local.hour < 12 else "PM"
        text = (
            f"{local.month}/{local.day}/{local.year:04d} {hour12}:{local:%M:%S}{dotted} "
            f"{meridiem} {_offset_text(offset, True)}"
        )
    elif form == "us24":
        text = f"{local.month}/{local.day}/{local.year:04d} {local:%H:%M:%S}{dotted}"
        text += _offset_text(offset, True)
    else:
        zone = {
            "Z": "Z",
            "colon": _offset_text(offset, True),
            "compact": _offset_text(offset, False),
            "none": "",
            "space": "",
        }[form]
        separator = " " if form == "space" else "T"
        text = f"{local:%Y-%m-%d}{separator}{local:%H:%M:%S}{dotted}{zone}"
    expected = f"{utc:%Y-%m-%dT%H:%M:%S}.{fraction[:7].ljust(7, '0')}Z"
    assert parse_time(text) == expected


@MODEST
@given(st.text())
def test_parse_time_never_raises_on_text(text: str) -> None:
    result = parse_time(text)
    assert result is None or CANONICAL_TIME.fullmatch(result)


@MODEST
@given(
    st.from_regex(
        r"[0-9]{1,4}[-/][0-9]{1,2}[-/][0-9]{1,4}[T ][0-9]{1,2}:[0-9]{2}"
        r"(:[0-9]{2}(\.[0-9]{0,12})?)?( ?[AaPp][Mm])?( ?[+-][0-9]{1,2}:?[0-9]{0,2}|Z)?",
        fullmatch=True,
    )
)
def test_parse_time_on_near_misses_is_canonical_or_none(text: str) -> None:
    result = parse_time(text)
    assert result is None or CANONICAL_TIME.fullmatch(result)


# -- EventKey --------------------------------------------------------------------------------

safe_text = st.text(st.characters(codec="utf-8"), max_size=12)
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
json_scalars = (
    st.none()
    | st.booleans()
    | int64s
    | st.floats(allow_nan=False, allow_infinity=False)
    | safe_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(safe_text, children, max_size=3)
    ),
    max_leaves=8,
)
unknown_fields = st.dictionaries(
    safe_text.filter(lambda key: key not in RULE_FIELDS), json_values, max_size=4
)
plain_text = safe_text.filter(lambda text: not text.lstrip(" \t\r\n").startswith(("{", "[")))


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {
        "time": draw(st.sampled_from(["2024-05-01T10:00:00.1234567Z", "2024-05-01T10:00:00Z"])),
        "resourceId": draw(st.sampled_from(["/SUBSCRIPTIONS/S1/RESOURCEGROUPS/G", "/x", ""])),
        "operationName": draw(safe_text),
        "category": draw(st.sampled_from(["Administrative", "Write", "Policy", "Other"])),
        "correlationId": draw(safe_text),
        "properties": draw(st.dictionaries(safe_text, plain_text | int64s, max_size=3)),
    }
    if draw(st.booleans()):
        event["identity"] = {"claims": draw(st.dictionaries(safe_text, safe_text, max_size=3))}
    event.update(draw(unknown_fields))
    return event


def key_of(data: bytes) -> str:
    records, rejections = normalize_input(data, "x")
    assert rejections == []
    assert len(records) == 1
    key: str = records[0]["EventKey"]
    return key


@MODEST
@given(event=events(), order=st.randoms(use_true_random=False))
def test_same_event_same_key_however_wrapped(event: dict[str, Any], order: Any) -> None:
    line = orjson.dumps(event)
    items = list(event.items())
    order.shuffle(items)
    reordered = orjson.dumps(dict(items))
    envelope = orjson.dumps({"records": [event]}, option=orjson.OPT_INDENT_2)
    spaced = orjson.dumps(dict(items), option=orjson.OPT_INDENT_2)
    keys = {key_of(line), key_of(reordered), key_of(envelope), key_of(spaced)}
    keys.add(key_of(b"\xef\xbb\xbf\n  " + line + b"\r\n"))
    assert len(keys) == 1


@MODEST
@given(event=events(), data=st.data())
def test_any_change_to_a_value_changes_the_key(event: dict[str, Any], data: st.DataObject) -> None:
    changed = dict(event)
    target = data.draw(
        st.sampled_from(["unknown", "correlationId", "properties", "time", "operationName"])
    )
    if target == "unknown":
        unknown = [key for key in event if key not in RULE_FIELDS]
        assume(unknown)
        key = data.draw(st.sampled_from(unknown))
        changed[key] = data.draw(json_values)
        assume(changed[key] != event[key])
    elif target == "correlationId":
        changed["correlationId"] = data.draw(safe_text)
        assume(changed["correlationId"].strip() != event["correlationId"].strip())
    elif target == "properties":
        properties = dict(event["properties"])
        properties[data.draw(safe_text)] = data.draw(plain_text | int64s)
        assume(properties != event["properties"])
        changed["properties"] = properties
    elif target == "time":
        changed["time"] = "2024-05-01T10:00:00.1234568Z"  # one tick later
        assume(changed["time"] != event["time"])
    else:
        changed["operationName"] = data.draw(safe_text)
        assume(changed["operationName"] != event["operationName"])
    assert key_of(orjson.dumps(changed)) != key_of(orjson.dumps(event))


# -- nothing raises --------------------------------------------------------------------------


@MODEST
@given(st.binary(max_size=300))
def test_normalize_input_never_raises_on_bytes(data: bytes) -> None:
    records, rejections = normalize_input(data, "fuzz")
    for rejection in rejections:
        rejection.raw.encode("utf-8")  # always writable as a dead letter
        assert not rejection.reason.startswith("normalizer error")
    for record in records:
        assert list(record) == list(COLUMNS)


@MODEST
@given(fields=st.dictionaries(st.sampled_from(sorted(RULE_FIELDS)), json_values, max_size=12))
def test_normalize_never_fails_on_rule_fields_of_any_type(fields: dict[str, Any]) -> None:
    fields["time"] = "2024-05-01T10:00:00Z"
    result = normalize(fields, source="fuzz", raw="")
    assert not isinstance(result, Rejection), result
    assert list(result) == list(COLUMNS)
    orjson.dumps(result)
