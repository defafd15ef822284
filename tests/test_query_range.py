"""Default ranges and caps that must not hide data: key lookups search the whole index, an
empty result says what was searched, and the CLI's --limit is a total read page by page."""

from __future__ import annotations

import io
import itertools
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import orjson
import pytest

from functions.query_http import handle_activity, handle_histogram
from shared.bootstrap import Runtime, build_runtime
from shared.core.normalize import normalize_input
from shared.core.query_spec import DEFAULT_SPAN, QueryError, parse_query
from shared.core.records import NormalizedRecord
from shared.services import query as query_module
from shared.services.query import run_query
from shared.services.query_page import QueryPage
from shared.settings import STORAGE_CONNECTION, STORE_PREFIX, Settings, load_settings
from shared.tools import query_cli
from shared.tools.azurite import Azurite
from shared.tools.query_cli import query_main
from tests.archive_view import blob_of
from tests.events import SUBSCRIPTION, activity_event, jsonl
from tests.test_cli import json_lines, shared_cli
from tests.test_query import cli_args

OLD_TIME = "2019-03-01T10:00:00.0000000Z"
OLD_CALLER = "Old@Contoso.com"
OLD_OPERATION = "MICROSOFT.WEB/SITES/DELETE"


def records_of(events: list[dict[str, Any]]) -> list[NormalizedRecord]:
    records, rejections = normalize_input(jsonl(events), "test")
    assert rejections == []
    return records


def newest_first(records: list[NormalizedRecord]) -> list[NormalizedRecord]:
    return sorted(records, key=lambda r: (r["TimeGenerated"], r["EventKey"]), reverse=True)


def event_keys(records: list[Any]) -> list[str]:
    return [record["EventKey"] for record in records]


def request(params: dict[str, str]) -> func.HttpRequest:
    return func.HttpRequest(
        method="GET", url="http://localhost/api/activity", params=params, body=b""
    )


def _canonical(moment: datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%S.%f}0Z"


@pytest.fixture
def years(app: Runtime) -> list[NormalizedRecord]:
    """One subscription's records: one from 2019 (its caller, operation and correlation id its
    own), one from 2023, one from yesterday. Newest first."""
    now = datetime.now(UTC)
    records = records_of(
        [
            activity_event(7, time=OLD_TIME, caller=OLD_CALLER, operationName=OLD_OPERATION),
            activity_event(8, time="2023-06-15T08:30:00.0000000Z"),
            activity_event(9, time=_canonical(now - timedelta(days=1))),
        ]
    )
    assert len(app.writer.write(records).indexed) == 3
    return newest_first(records)


# --- item 13: a key lookup without --since searches the whole retained range --------------


@pytest.mark.parametrize(
    ("flag", "column"),
    [
        ("--correlation-id", "CorrelationId"),
        ("--resource", "ResourceId"),
        ("--caller", "Caller"),
        ("--operation", "OperationNameValue"),
    ],
)
def test_a_key_lookup_without_since_finds_an_event_years_old(
    settings: Settings, years: list[NormalizedRecord], flag: str, column: str
) -> None:
    old = years[-1]
    assert old["TimeGenerated"] == OLD_TIME
    result = shared_cli("query", flag, old[column].upper(), settings=settings)
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == [old]
    assert result.stderr == b""


def test_a_subscription_lookup_without_since_reads_back_to_the_oldest_day(
    settings: Settings, years: list[NormalizedRecord]
) -> None:
    result = shared_cli("query", "--subscription", SUBSCRIPTION, settings=settings)
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == years
    # --until alone (even before anything indexed) leaves the start at the index's oldest day.
    until = shared_cli("query", "--caller", OLD_CALLER, "--until", "2019-03-02", settings=settings)
    assert until.returncode == 0, until.stderr
    assert json_lines(until.stdout) == [years[-1]]
    before = shared_cli("query", "--caller", OLD_CALLER, "--until", "2018-01-01", settings=settings)
    assert before.returncode == 0 and before.stdout == b"", before.stderr
    assert b"no records found" in before.stderr


def test_a_query_without_a_key_filter_keeps_30_days_and_an_empty_one_says_what_it_searched(
    settings: Settings, years: list[NormalizedRecord]
) -> None:
    recent = shared_cli("query", settings=settings)
    assert recent.returncode == 0, recent.stderr
    assert json_lines(recent.stdout) == [years[0]]

    empty = shared_cli("query", "--category", "Policy", settings=settings)
    assert (empty.returncode, empty.stdout) == (0, b"")
    message = empty.stderr.decode()
    assert message.count("\n") == 1, message
    assert message.startswith("no records found from ")
    assert "searched the last 30 days" in message and "--since" in message
    # a month, as the index knows it without reading its days (said "records from" its
    # first day, found from outside, for a month whose first record came days later)
    assert "the index's oldest month is 2019-03" in message


def test_a_key_lookup_that_finds_nothing_says_which_range_it_searched(
    settings: Settings, years: list[NormalizedRecord]
) -> None:
    result = shared_cli("query", "--caller", "nobody@contoso.com", settings=settings)
    assert (result.returncode, result.stdout) == (0, b"")
    message = result.stderr.decode()
    assert message.count("\n") == 1, message
    assert message.startswith("no records found from 2019-03-01T00:00:00+00:00 to ")
    assert "the whole index" in message

    given = shared_cli(
        *("query", "--caller", OLD_CALLER, "--since", "2020-01-01", "--format", "table"),
        settings=settings,
    )
    assert given.returncode == 0
    assert given.stdout.decode().splitlines()[0].startswith("TIME")  # the table's header only
    assert len(given.stdout.decode().splitlines()) == 1
    assert given.stderr.decode().startswith("no records found from 2020-01-01T00:00:00+00:00 to ")
    assert "the range asked for" in given.stderr.decode()


def test_an_empty_index_keeps_30_days_for_key_lookups_and_says_it_is_empty(
    settings: Settings, app: Runtime
) -> None:
    result = shared_cli("query", "--caller", "anyone@contoso.com", settings=settings)
    assert (result.returncode, result.stdout) == (0, b"")
    assert "the index is empty" in result.stderr.decode()
    assert query_module.oldest_indexed_day(app.tables) is None
    now = datetime.now(UTC)
    query = query_module.read_query({"caller": "x"}, now, app.tables)
    assert query.since == now - DEFAULT_SPAN


def test_the_oldest_indexed_day_and_the_default_since_it_gives(
    app: Runtime, years: list[NormalizedRecord]
) -> None:
    # The first day of the oldest month table (the record is of 2019-03-01 10:00).
    oldest = query_module.oldest_indexed_day(app.tables)
    assert oldest == datetime(2019, 3, 1, tzinfo=UTC)
    now = datetime(2024, 4, 15, 12, 0, tzinfo=UTC)
    for key in ("subscription", "resource", "caller", "correlation_id", "operation"):
        query = parse_query({key: "x"}, now, oldest_day=oldest)
        assert (query.since, query.until) == (oldest, now)
    # Without a key filter, or with a since of the caller's own, the oldest day plays no part.
    assert parse_query({}, now, oldest_day=oldest).since == now - DEFAULT_SPAN
    assert parse_query({"caller": "x", "since": "7d"}, now, oldest_day=oldest).since == (
        now - timedelta(days=7)
    )
    # An until before the index's start is not an error; at least 30 days are searched.
    query = parse_query({"caller": "x", "until": "2018-01-01"}, now, oldest_day=oldest)
    assert query.since == datetime(2018, 1, 1, tzinfo=UTC) - DEFAULT_SPAN


def test_http_key_lookup_without_since_searches_the_whole_index(
    app: Runtime, years: list[NormalizedRecord]
) -> None:
    old = years[-1]
    now = datetime.now(UTC)
    response = handle_activity(request({"correlation_id": old["CorrelationId"]}), app, now)
    assert response.status_code == 200
    assert orjson.loads(response.get_body()) == {"records": [old], "continuation": None}
    # Page by page (one record a page, months of empty lookups in between), all three come.
    got: list[NormalizedRecord] = []
    continuation: str | None = None
    for _ in range(100):
        params = {"subscription": SUBSCRIPTION, "limit": "1"}
        if continuation:
            params["continuation"] = continuation
        body = orjson.loads(handle_activity(request(params), app, now).get_body())
        got.extend(body["records"])
        continuation = body["continuation"]
        if continuation is None:
            break
    assert got == years


# --- item 14: the CLI's --limit is a total, read in pages of at most CLI_PAGE --------------

BULK = 2 * query_cli.CLI_PAGE + 1000
BULK_SPAN = ("--since", "2024-05-01", "--until", "2024-05-02")


@pytest.fixture(scope="module")
def bulk(azurite: Azurite) -> tuple[Settings, Runtime, list[NormalizedRecord]]:
    """6,000 records of one subscription on 2024-05-01, through the real writer; newest first."""
    settings = load_settings(
        {STORAGE_CONNECTION: azurite.connection_string, STORE_PREFIX: f"r{os.getpid()}bulk"}
    )
    app = build_runtime(settings)
    records = records_of([activity_event(n) for n in range(BULK)])
    assert len(app.writer.write(records).indexed) == BULK
    return settings, app, newest_first(records)


def test_cli_limit_beyond_one_page_returns_exactly_that_many_newest_first(
    bulk: tuple[Settings, Runtime, list[NormalizedRecord]],
) -> None:
    settings, _, records = bulk
    for filters in ((), ("--subscription", SUBSCRIPTION)):
        limit = query_cli.CLI_PAGE + 700  # a page and part of the next
        result = shared_cli("query", *BULK_SPAN, *filters, "--limit", str(limit), settings=settings)
        assert result.returncode == 0, result.stderr
        got = json_lines(result.stdout)  # every line of stdout is a record
        assert len(got) == limit and len(set(event_keys(got))) == limit
        assert event_keys(got) == event_keys(records[:limit])
        progress = result.stderr.decode()
        assert "records so far…" in progress, progress
        assert f"stopped at --limit {limit}; more records match" in progress


def test_cli_limit_above_what_matches_returns_everything_and_the_table_too(
    bulk: tuple[Settings, Runtime, list[NormalizedRecord]],
) -> None:
    settings, _, records = bulk
    result = shared_cli("query", *BULK_SPAN, "--limit", str(BULK + 1000), settings=settings)
    assert result.returncode == 0, result.stderr
    assert event_keys(json_lines(result.stdout)) == event_keys(records)
    assert "stopped at" not in result.stderr.decode()
    table = shared_cli(
        "query", *BULK_SPAN, "--limit", "1500", "--format", "table", settings=settings
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.decode().splitlines()
    assert lines[0].startswith("TIME") and len(lines) == 1501
    assert lines[1].startswith(records[0]["TimeGenerated"][:19].replace("T", " "))


def test_the_default_limit_says_when_it_cut_the_result_short(
    bulk: tuple[Settings, Runtime, list[NormalizedRecord]],
) -> None:
    settings, _, records = bulk
    result = shared_cli("query", *BULK_SPAN, settings=settings)
    assert result.returncode == 0, result.stderr
    assert event_keys(json_lines(result.stdout)) == event_keys(records[:100])
    message = result.stderr.decode()
    assert message.count("\n") == 1 and "stopped at --limit 100; more records match" in message


def test_cli_pages_ask_for_at_most_a_cli_page(
    bulk: tuple[Settings, Runtime, list[NormalizedRecord]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, app, records = bulk
    page = query_cli.CLI_PAGE
    asked: list[int] = []  # each page's limit
    fetched: list[int] = []  # places per fetch
    fetch = app.reader.fetch

    def run_spy(query: Any, **kwargs: Any) -> Any:
        asked.append(query.limit)
        return run_query(query, **kwargs)

    def fetch_spy(places: Any, manifests: Any = None) -> Any:
        fetched.append(len(places))
        return fetch(places, manifests)

    monkeypatch.setattr(query_cli, "run_query", run_spy)
    monkeypatch.setattr(app.reader, "fetch", fetch_spy)
    for filters in ({}, {"subscription": SUBSCRIPTION}):
        asked.clear()
        out = io.StringIO()
        limit = 2 * page + 1
        args = cli_args(since="2024-05-01", until="2024-05-02", limit=str(limit), **filters)
        assert query_main(args, app, out) == 0, capsys.readouterr().err
        assert event_keys(json_lines(out.getvalue().encode())) == event_keys(records[:limit])
        assert asked == [page, page, 1, 1]  # the last: whether more match
    # A key lookup fetches what each page needs in one go (the records are a second apart),
    # and a page after a token the second of its last record again (checked exactly).
    assert fetched == [page, page + 1, 2, 2]


@pytest.mark.parametrize("limit", ["0", "-5", "10000001", "1e3", "2_000"])
def test_cli_limits_out_of_range_are_exit_two_naming_the_flag(
    settings: Settings, limit: str
) -> None:
    result = shared_cli("query", f"--limit={limit}", settings=settings)
    assert (result.returncode, result.stdout) == (2, b"")
    message = result.stderr.decode()
    assert message.startswith("error: --limit ") and message.count("\n") == 1, message
    assert "10000000" in message


def test_cli_accepts_the_largest_limit(settings: Settings) -> None:
    result = shared_cli("query", "--limit", "10000000", "--caller", "x", settings=settings)
    assert result.returncode == 0, result.stderr


def test_http_still_pages_by_at_most_1000_and_refuses_5000(
    bulk: tuple[Settings, Runtime, list[NormalizedRecord]],
) -> None:
    _, app, records = bulk
    now = datetime(2024, 5, 2, tzinfo=UTC)
    span = {"since": "2024-05-01", "until": "2024-05-02"}
    refused = handle_activity(request({**span, "limit": "5000"}), app, now)
    assert refused.status_code == 400
    error = orjson.loads(refused.get_body())["error"]
    assert error.startswith("limit ") and "1000" in error
    page = orjson.loads(handle_activity(request({**span, "limit": "1000"}), app, now).get_body())
    assert event_keys(page["records"]) == event_keys(records[:1000])
    assert page["continuation"] is not None


# --- records from any year the index can hold (0001-9999) --------------------------------


@pytest.mark.parametrize("when", ["1965-07-01T10:00:00.0000000Z", "0999-03-01T10:00:00.0000000Z"])
def test_an_event_from_any_year_is_found_by_a_key_lookup_without_since(
    settings: Settings, app: Runtime, when: str
) -> None:
    (record,) = records_of([activity_event(1, time=when, caller="early@contoso.com")])
    recent = records_of([activity_event(2, caller="early@contoso.com")])
    app.writer.write([record, *recent])
    # The lookup reaches back to the index's oldest day, before any range a caller may give.
    by_key = shared_cli("query", "--caller", "early@contoso.com", settings=settings)
    assert by_key.returncode == 0, by_key.stderr
    assert event_keys(json_lines(by_key.stdout)) == event_keys(newest_first([record, *recent]))


@pytest.mark.parametrize("ahead", [timedelta(hours=30), timedelta(days=400)])
def test_an_event_dated_ahead_of_now_is_found_by_a_key_lookup(
    settings: Settings, app: Runtime, ahead: timedelta
) -> None:
    """A clock ahead (of the event's source, not of this app) must not hide what is archived:
    a key lookup reaches the index's newest month, and `until` may name it."""
    now = datetime.now(UTC)
    ahead_record, recent = records_of(
        [
            activity_event(1, time=_canonical(now + ahead), caller="ahead@contoso.com"),
            activity_event(
                2, time=_canonical(now - timedelta(hours=1)), caller="ahead@contoso.com"
            ),
        ]
    )
    app.writer.write([ahead_record, recent])
    by_key = shared_cli("query", "--caller", "ahead@contoso.com", settings=settings)
    assert by_key.returncode == 0, by_key.stderr
    assert event_keys(json_lines(by_key.stdout)) == event_keys([ahead_record, recent])
    far = shared_cli(
        "query",
        "--caller",
        "ahead@contoso.com",
        "--until",
        "9999-12-31T00:00:00Z",
        settings=settings,
    )
    assert event_keys(json_lines(far.stdout)) == event_keys([ahead_record, recent]), far.stderr
    # A query without a key filter keeps its 30 days up to now, as before.
    recent_only = shared_cli("query", "--since", "2d", settings=settings)
    assert event_keys(json_lines(recent_only.stdout)) == event_keys([recent])


def test_an_event_dated_at_the_end_of_time_is_found_and_breaks_no_lookup(
    settings: Settings, app: Runtime
) -> None:
    """December 9999 is the newest month a table can hold; a lookup reaches its 30th."""
    late, last = records_of(
        [
            activity_event(3, time="9999-12-30T23:59:59.9999999Z", caller="end@x"),
            activity_event(4, time="9999-12-31T23:59:59.9999999Z", caller="end@x"),
        ]
    )
    app.writer.write([late, last])
    by_key = shared_cli("query", "--caller", "end@x", settings=settings)
    assert by_key.returncode == 0, by_key.stderr
    assert event_keys(json_lines(by_key.stdout)) == event_keys([late])
    other = shared_cli("query", "--caller", "nobody@x", "--until", "9999-12-31", settings=settings)
    assert other.returncode == 0, other.stderr


# --- a record row that cannot be read (damaged storage) -----------------------------------


@pytest.mark.parametrize("filters", [("--caller", "early@contoso.com"), ("--since", "2d")])
def test_a_damaged_record_is_named_and_the_others_still_come_back(
    settings: Settings, app: Runtime, filters: tuple[str, str]
) -> None:
    now = datetime.now(UTC)
    records = records_of(
        [
            activity_event(n, caller="early@contoso.com", time=_canonical(now - timedelta(hours=n)))
            for n in range(1, 4)
        ]
    )
    app.writer.write([records[0], records[2]])
    app.writer.write([records[1]])  # a blob of its own, whose bytes are then damaged
    damaged = blob_of(app, records[1]["EventKey"]).name
    size = len(app.archive.read(damaged) or b"")
    app.stores.records.upload_blob(damaged, b"\x00garbage" * (size // 8 + 2), overwrite=True)
    result = shared_cli("query", *filters, settings=settings)
    # The answer is incomplete: exit 3, as `verify` and `forward` say it of a damaged blob (a
    # script exporting evidence must not take it for the whole answer).
    assert result.returncode == 3, result.stderr
    assert b"Traceback" not in result.stderr
    assert event_keys(json_lines(result.stdout)) == [records[0]["EventKey"], records[2]["EventKey"]]
    assert damaged.encode() in result.stderr  # named, not silently gone
    for params in ({"caller": "early@contoso.com"}, {"since": "2d"}):
        page = handle_activity(request(params), build_runtime(settings), now)
        body = orjson.loads(page.get_body())
        assert (page.status_code, len(body["records"]), body["unreadable"]) == (200, 2, [damaged])


def test_json_answers_say_nosniff_too(app: Runtime) -> None:
    for params in ({"since": "2d"}, {"since": "yesterday-ish"}):
        answer = handle_activity(request(params), app, datetime.now(UTC))
        assert answer.headers["X-Content-Type-Options"] == "nosniff", params


def test_since_and_until_bound_to_the_100_ns_that_record_times_hold(app: Runtime) -> None:
    # Found from outside: the bounds were read to the microsecond, so their seventh digit was
    # dropped (`since=…00.0000001Z` found a record of `…00.0000000Z`).
    event = activity_event(3, time="2024-05-01T10:00:00.0000000Z")
    [record] = records_of([event])
    assert app.writer.write([record]).indexed
    caller = "user3@contoso.com"
    cases = {
        ("2024-05-01T09:59:59.9999999Z", "2024-05-01T10:00:00.0000001Z"): 1,
        ("2024-05-01T10:00:00.0000000Z", "2024-05-01T10:00:00.0000001Z"): 1,
        ("2024-05-01T10:00:00.0000001Z", "2024-05-01T11:00:00Z"): 0,
        ("2024-05-01T10:00:00.0000009Z", "2024-05-01T11:00:00Z"): 0,
        ("2024-05-01T09:00:00Z", "2024-05-01T10:00:00.0000000Z"): 0,
        ("2024-05-01T11:00:00+01:00", "2024-05-01T11:00:00.00000019+01:00"): 1,
    }
    for (since, until), count in cases.items():
        for filters in ({"caller": caller}, {"text": "MICROSOFT.COMPUTE"}):
            query = parse_query({"since": since, "until": until, **filters}, datetime.now(UTC))
            page = run_query(query, tables=app.tables, reader=app.reader)
            assert len(page.records) == count, (since, until, filters)
    with pytest.raises(QueryError, match="must be before"):
        parse_query(
            {"since": "2024-05-01T10:00:00.0000001Z", "until": "2024-05-01T10:00:00.0000001Z"},
            datetime.now(UTC),
        )


def test_an_until_ticks_past_midnight_reaches_into_that_day(app: Runtime) -> None:
    # Found from outside: the last day walked was worked out from `until` cut to the
    # microsecond, so `until=…00:00:00.0000005Z` left out the day it falls on: its records
    # missing from searches (by day and by key) and from the timeline, which said "exact".
    times = ["2024-02-28T23:59:59.9999999Z", "2024-03-01T00:00:00.0000000Z"]
    times.append("2024-03-01T00:00:00.0000003Z")
    records = records_of([activity_event(n, time=time) for n, time in enumerate(times)])
    assert len(app.writer.write(records).indexed) == 3
    cases = {  # (since, until): records, and whether the timeline can count them exactly
        ("2024-02-28T23:59:59.9999999Z", "2024-03-01T00:00:00.0000001Z"): (2, False),
        ("2024-02-28T23:00:00Z", "2024-03-01T00:00:00.0000005Z"): (3, False),
        ("2024-02-28T23:00:00Z", "2024-03-01T00:00:00.0000000Z"): (1, True),
        ("2024-02-28T23:00:00Z", "2024-03-01T00:00:01Z"): (3, True),
    }
    for (since, until), (count, exact) in cases.items():
        for filters in ({}, {"subscription": SUBSCRIPTION}):
            query = parse_query({"since": since, "until": until, **filters}, datetime.now(UTC))
            page = run_query(query, tables=app.tables, reader=app.reader)
            assert len(page.records) == count, (since, until, filters)
            params = {"since": since, "until": until, "bucket": "hour", **filters}
            timeline = orjson.loads(
                handle_histogram(
                    func.HttpRequest("GET", "/api/activity/histogram", params=params, body=b""),
                    app,
                    datetime.now(UTC),
                ).get_body()
            )
            # Postings place records to the second: a bound inside one is not exact, and says
            # so; either way the day `until` falls on is counted.
            assert timeline["exact"] is exact, (since, until, filters)
            assert abs(timeline["total"] - count) <= (0 if exact else 1), (since, until, filters)
            if count == 3:
                assert timeline["buckets"][-1]["counts"], (since, until, filters)
    # `verify` of the same range checks the day too.
    from shared.services.verify import verify
    from shared.tools.verify_cli import verify_range

    span = verify_range("2024-02-29", "2024-03-01T00:00:00.0000005Z")
    checked = verify(app.tables, app.archive, app.reader, since=span.since, until=span.until,
                     now=datetime.now(UTC))  # fmt: skip
    assert (checked.blobs, checked.records) == (1, 2)


def test_the_cli_stops_with_an_error_rather_than_follow_a_token_that_goes_nowhere(
    app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Paging that handed back the token it was given looped for ever (found from outside);
    # the service no longer does, and the command line says so if it ever did again.
    calls = itertools.count()

    def stuck(*args: Any, continuation: str | None = None, **kwargs: Any) -> QueryPage:
        assert next(calls) < 50, "the command line followed the same token for ever"
        return QueryPage([], "stuck-token", reached="2024-05-01T00:00:00.0000000Z")

    monkeypatch.setattr(query_cli, "run_query", stuck)
    out, err = io.StringIO(), io.StringIO()
    args = cli_args(since="2024-05-01", until="2024-05-02", limit="1000")
    assert query_main(args, app, out, err) == 1
    assert "did not move on" in err.getvalue()


def test_the_query_help_gives_the_page_size_the_command_reads_in() -> None:
    # Found from outside: the help said pages of 1000 while the command read 2,500.
    from shared.tools.cli import build_parser

    verbs = build_parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
    assert isinstance(verbs.choices, dict)
    assert f"pages of {query_cli.CLI_PAGE} " in verbs.choices["query"].format_help()


def test_a_range_wholly_ahead_of_now_finds_the_records_dated_in_it(
    settings: Settings, app: Runtime
) -> None:
    """Found from outside: the page's "that day" link of an event dated ahead of now (clock
    skew, odd input) was refused: its `until` was cut to a day ahead before the index's
    newest month was read, so `since` fell past it."""
    ahead = datetime.now(UTC) + timedelta(days=100)
    event = activity_event(4, caller="ahead@x", time=_canonical(ahead))
    [record] = records_of([event])
    assert app.writer.write([record]).indexed
    day = ahead.strftime("%Y-%m-%dT00:00:00Z")
    after = (ahead + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
    found = shared_cli("query", "--caller", "ahead@x", "--since", day, "--until", after,
                       settings=settings)  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert event_keys(json_lines(found.stdout)) == [record["EventKey"]]
    page = handle_activity(request({"caller": "ahead@x", "since": day, "until": after}), app,
                           datetime.now(UTC))  # fmt: skip
    assert page.status_code == 200 and len(orjson.loads(page.get_body())["records"]) == 1
    beyond = (ahead + timedelta(days=400)).strftime("%Y-%m-%dT00:00:00Z")
    refused = shared_cli("query", "--caller", "ahead@x", "--since", beyond, settings=settings)
    assert refused.returncode == 2 and b"since" in refused.stderr  # past every record: said


def test_a_page_stopped_by_its_budget_at_a_day_start_token_still_moves_on(app: Runtime) -> None:
    """Found from outside: a search without a key filter, going on from a day's start, whose
    budget ran out before a blob whose newest record is the day's last tick, handed back the
    very token it was given, forever ("did not move on")."""
    from shared.services.query_page import ScanBudget

    batches = [
        [("2026-12-04T23:59:59.9999999Z", 1), ("2026-12-04T08:00:00.0000000Z", 2)],
        [("2026-12-04T23:59:59.9999999Z", 3), ("2026-12-04T07:00:00.0000000Z", 4)],
        [("2026-12-05T10:00:00.0000000Z", 5)],
    ]
    for batch in batches:  # a blob each
        app.writer.write(records_of([activity_event(n, time=t) for t, n in batch]))
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    params = {"since": "2026-12-04", "until": "2026-12-06", "level": "Informational", "limit": "1"}
    query = parse_query(params, now)
    token, seen = None, []
    for _ in range(40):
        page = run_query(query, tables=app.tables, reader=app.reader, continuation=token,
                         budget=ScanBudget(records=1))  # fmt: skip
        seen += [record["EventKey"] for record in page.records]
        if page.continuation is None:
            break
        assert page.continuation != token, "a page handed back the token it was given"
        token = page.continuation
    assert page.continuation is None and len(seen) == len(set(seen)) == 5
