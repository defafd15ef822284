"""GET /api/activity/histogram: counts by hour or day, split by status or category, from the
index alone (no archive blob read), checked against counts worked out from the records."""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import orjson
import pytest

from functions.query_http import handle_histogram
from shared.bootstrap import Runtime, build_runtime
from shared.core.eventkey import event_key
from shared.core.normalize import normalize
from shared.core.query_spec import QueryError
from shared.core.records import NormalizedRecord, Rejection
from shared.services.histogram import MAX_BUCKETS, histogram
from shared.settings import STORAGE_CONNECTION, STORE_PREFIX, load_settings
from shared.tools.azurite import Azurite
from tests.test_query_filters import legacy_write

NOW = datetime(2024, 4, 15, 12, 0, tzinfo=UTC)
SUBS = ("11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222")
RESULTS = ("Success", "Success", "Failure", "Start", "Accept", "Active")
STATUS = {"Success": "Succeeded", "Failure": "Failed", "Start": "Started", "Accept": "Accepted"}
CATEGORIES = ("Administrative", "Policy", "Security", "Mystery")  # the last: class `other`
GROUPS = ("rg-a", "rg-b", "rg-c")


def make(index: int, moment: datetime) -> NormalizedRecord:
    subscription = SUBS[index % 2]
    event: dict[str, Any] = {
        "time": f"{moment:%Y-%m-%dT%H:%M:%S}.{index % 10_000_000:07d}Z",
        "resourceId": f"/subscriptions/{subscription}/resourceGroups/{GROUPS[index % 3]}/"
        f"providers/Microsoft.Web/sites/app{index % 7}",
        "operationName": "Microsoft.Web/sites/write",
        "category": CATEGORIES[index % 4],
        "resultType": RESULTS[index % len(RESULTS)],
        "correlationId": f"c{index}",
        "level": "Informational",
        "caller": f"u{index % 3}@contoso.com",
    }
    record = normalize(event, source="test", raw="")
    assert not isinstance(record, Rejection), record
    return record


def status_of(record: NormalizedRecord) -> str:
    value = record["ActivityStatusValue"]
    return value if value in STATUS.values() else "Other"


def category_of(record: NormalizedRecord) -> str:
    category = record["CategoryValue"]
    return category if category in CATEGORIES[:3] else "Other"


# 300 records over March 2024 (every 2 h 29 min), 40 in January (a former version wrote them).
MARCH = [
    make(i, datetime(2024, 3, 1, tzinfo=UTC) + timedelta(minutes=149 * i, seconds=i))
    for i in range(300)
]
JANUARY = [
    make(1000 + i, datetime(2024, 1, 3, tzinfo=UTC) + timedelta(hours=17 * i)) for i in range(40)
]


@pytest.fixture(scope="module")
def archive(azurite: Azurite) -> Runtime:
    settings = load_settings(
        {STORAGE_CONNECTION: azurite.connection_string, STORE_PREFIX: f"hg{os.getpid()}data"}
    )
    app = build_runtime(settings)
    legacy_write(app, JANUARY)
    for start in range(0, len(MARCH), 60):  # several writes: several blobs a day
        assert len(app.writer.write(MARCH[start : start + 60]).indexed) == 60
    return app


def expected(
    records: list[NormalizedRecord],
    since: datetime,
    until: datetime,
    bucket: str,
    split: str,
    keep: Any = lambda record: True,
) -> list[dict[str, Any]]:
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    start = since.replace(minute=0, second=0, microsecond=0)
    start = start if bucket == "hour" else start.replace(hour=0)
    counts: dict[datetime, Counter[str]] = {}
    moment = start
    while moment < until:
        counts[moment] = Counter()
        moment += step
    for record in records:
        at = datetime.fromisoformat(record["TimeGenerated"][:19]).replace(tzinfo=UTC)
        if since <= at < until and keep(record):
            slot = start + (at - start) // step * step
            counts[slot][status_of(record) if split == "status" else category_of(record)] += 1
    return [
        {"start": f"{slot:%Y-%m-%dT%H:%M:%S}Z", "counts": dict(sorted(found.items()))}
        for slot, found in counts.items()
    ]


class NoBlobReads:
    """Fails the test at any read of the archive (records are never fetched for counts)."""

    def __init__(self, app: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the histogram read the archive")

        monkeypatch.setattr(app.reader, "fetch", refuse)
        monkeypatch.setattr(app.reader, "blob_records", refuse)
        monkeypatch.setattr(app.archive, "read", refuse)


MARCH_SPAN = {"since": "2024-03-01", "until": "2024-04-01"}
M_SINCE, M_UNTIL = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        ({"subscription": SUBS[1]}, lambda r: r["SubscriptionId"] == SUBS[1]),
        ({"resource_group": "RG-B"}, lambda r: r["ResourceGroup"] == "rg-b"),
        ({"status": "failed"}, lambda r: r["ActivityStatusValue"] == "Failed"),
        (
            {"subscription": SUBS[1], "caller": "u1@contoso.com", "category": "Policy"},
            lambda r: (
                r["SubscriptionId"] == SUBS[1]
                and r["Caller"] == "u1@contoso.com"
                and r["CategoryValue"] == "Policy"
            ),
        ),
        (
            {"status": "Active", "resource_group": "rg-c"},
            lambda r: r["ActivityStatusValue"] == "Active" and r["ResourceGroup"] == "rg-c",
        ),
    ],
)
@pytest.mark.parametrize(("bucket", "split"), [("day", "status"), ("hour", "category")])
def test_with_an_indexed_filter_the_counts_are_exact(
    archive: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    filters: dict[str, str],
    keep: Any,
    bucket: str,
    split: str,
) -> None:
    NoBlobReads(archive, monkeypatch)
    params = {**MARCH_SPAN, **filters, "bucket": bucket, "split": split}
    got = histogram(params, NOW, archive.tables).as_dict()
    want = expected(MARCH, M_SINCE, M_UNTIL, bucket, split, keep)
    assert got["buckets"] == want
    assert got["total"] == sum(sum(b["counts"].values()) for b in want) > 0
    assert (got["exact"], got["unindexed"], got["not_applied"]) == (True, [], [])
    assert (got["bucket"], got["split"]) == (bucket, split)
    assert (got["since"], got["until"]) == ("2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z")


def test_without_an_indexed_filter_days_are_exact_from_the_manifests(
    archive: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    NoBlobReads(archive, monkeypatch)
    for split in ("category", "status"):
        got = histogram({**MARCH_SPAN, "bucket": "day", "split": split}, NOW, archive.tables)
        assert got.as_dict()["buckets"] == expected(MARCH, M_SINCE, M_UNTIL, "day", split)
        assert got.exact
    # Only Policy: the class's manifest rows.
    got = histogram({**MARCH_SPAN, "category": "policy", "split": "category"}, NOW, archive.tables)
    want = expected(
        MARCH, M_SINCE, M_UNTIL, "day", "category", lambda r: r["CategoryValue"] == "Policy"
    )
    assert got.as_dict()["buckets"] == want


def test_by_hour_without_a_filter_the_four_statuses_are_exact_and_the_rest_shared_out(
    archive: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    NoBlobReads(archive, monkeypatch)
    params = {"since": "2024-03-10", "until": "2024-03-13", "split": "status"}
    got = histogram(params, NOW, archive.tables).as_dict()
    assert got["bucket"] == "hour"  # the default for three days
    since, until = datetime(2024, 3, 10, tzinfo=UTC), datetime(2024, 3, 13, tzinfo=UTC)
    want = expected(MARCH, since, until, "hour", "status")
    assert len(got["buckets"]) == len(want) == 72
    for shown, wanted in zip(got["buckets"], want, strict=True):
        assert {k: v for k, v in shown["counts"].items() if k != "Other"} == {
            k: v for k, v in wanted["counts"].items() if k != "Other"
        }
    others = sum(b["counts"].get("Other", 0) for b in want)
    assert abs(sum(b["counts"].get("Other", 0) for b in got["buckets"]) - others) <= 3
    assert got["exact"] is False  # the blobs' other records span many hours


def test_months_written_before_the_new_kinds_are_named_not_miscounted(
    archive: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    NoBlobReads(archive, monkeypatch)
    since, until = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC)
    span = {"since": "2024-01-01", "until": "2024-04-01", "bucket": "day"}
    got = histogram({**span, "resource_group": "rg-a"}, NOW, archive.tables).as_dict()
    assert got["unindexed"] == ["2024-01"] and got["exact"] is True
    assert got["buckets"] == expected(
        MARCH, since, until, "day", "status", lambda r: r["ResourceGroup"] == "rg-a"
    )
    # A filter every month has: January counted, its statuses unknown.
    got = histogram({**span, "subscription": SUBS[0]}, NOW, archive.tables).as_dict()
    january = [b for b in got["buckets"] if b["start"] < "2024-02"]
    assert sum(sum(b["counts"].values()) for b in january) == sum(
        1 for r in JANUARY if r["SubscriptionId"] == SUBS[0]
    )
    assert {label for b in january for label in b["counts"]} == {"Unknown"}
    assert got["exact"] is False and got["unindexed"] == []
    by_category = histogram(
        {**span, "split": "category", "subscription": SUBS[0]}, NOW, archive.tables
    )
    assert by_category.exact and not by_category.unindexed


def request(params: dict[str, str]) -> func.HttpRequest:
    return func.HttpRequest(
        method="GET", url="http://localhost/api/activity/histogram", params=params, body=b""
    )


def test_http_answers_the_counts_and_names_what_it_could_not_apply(archive: Runtime) -> None:
    params = {**MARCH_SPAN, "subscription": SUBS[0], "text": "x", "code": "key"}
    response = handle_histogram(request(params), archive, NOW)
    assert response.status_code == 200 and response.mimetype == "application/json"
    body = orjson.loads(response.get_body())
    assert set(body) == {
        "bucket",
        "split",
        "since",
        "until",
        "buckets",
        "total",
        "exact",
        "not_applied",
        "unindexed",
    }
    assert body["bucket"] == "day" and body["split"] == "status" and len(body["buckets"]) == 31
    assert body["not_applied"] == ["text"] and body["exact"] is False
    assert body["total"] == sum(1 for r in MARCH if r["SubscriptionId"] == SUBS[0])


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"bucket": "week"}, "bucket"),
        ({"split": "level"}, "split"),
        ({"since": "2020-01-01", "until": "2024-01-01", "bucket": "hour"}, "bucket"),
        ({"since": "soon"}, "since"),
        ({"caller": "x" * 1025}, "caller"),  # too long (a control character is a value now)
        ({"histogram": "1"}, "histogram"),
    ],
)
def test_http_refuses_bad_parameters(archive: Runtime, params: dict[str, str], word: str) -> None:
    response = handle_histogram(request(params), archive, NOW)
    assert response.status_code == 400
    assert word in orjson.loads(response.get_body())["error"]


def test_postings_of_blobs_without_a_manifest_are_not_counted(app: Runtime) -> None:
    """Retention deletes a category's day (manifest rows first, then blobs) and leaves its
    postings until the month's table goes; a write that failed leaves its postings until
    swept: neither is a record."""
    kept, gone = (
        MARCH[:8],
        [make(2000 + i, datetime(2024, 3, 5, 10 + i, tzinfo=UTC)) for i in range(4)],
    )
    gone = [{**record, "CategoryValue": "Security"} for record in gone]
    gone = [{**record, "EventKey": event_key(record)} for record in gone]
    app.writer.write([*kept, *gone])
    for row in app.tables.query("202403", "PartitionKey eq @pk", {"pk": "m05"}):
        if str(row["RowKey"]).startswith("s"):  # Security's class code
            app.tables.delete("202403", [row])
    for split in ("status", "category"):
        got = histogram({**MARCH_SPAN, "subscription": SUBS[0], "split": split}, NOW, app.tables)
        want = expected(
            kept, M_SINCE, M_UNTIL, "day", split, lambda r: r["SubscriptionId"] == SUBS[0]
        )
        assert got.as_dict()["buckets"] == want


HISTOGRAMS = [
    {"subscription": SUBS[0], "split": "status"},
    {"resource_group": "rg-b", "split": "status", "bucket": "hour"},
    {"status": "Failed", "split": "category"},
    {"split": "status"},
    {"split": "category", "bucket": "hour"},
]


def all_counts(app: Runtime) -> list[dict[str, Any]]:
    return [histogram({**MARCH_SPAN, **params}, NOW, app.tables).as_dict() for params in HISTOGRAMS]


def test_compacted_runs_count_the_same_as_fresh_rows(
    app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.core.query_spec import FILTER_PARTITIONS
    from shared.services.compaction import compact

    for start in range(0, len(MARCH), 100):
        app.writer.write(MARCH[start : start + 100])
    fresh = all_counts(app)
    assert compact(app.tables, as_of=NOW).units > 0
    assert all_counts(app) == fresh
    # Late events: a merged day's fresh rows and its run, together.
    late = [make(3000 + i, datetime(2024, 3, 7, 9, i, tzinfo=UTC)) for i in range(6)]
    app.writer.write(late)
    later = all_counts(app)
    keep = lambda r: r["SubscriptionId"] == SUBS[0]  # noqa: E731
    want = expected(MARCH + late, M_SINCE, M_UNTIL, "day", "status", keep)
    assert later[0]["buckets"] == want
    # A run replaced while the month is scanned (its rows gone, its last row unseen): read
    # again from its successor.
    real = app.tables.query

    def without_last_rows(month: str, query_filter: str, parameters: Any, **kw: Any) -> Any:
        rows = real(month, query_filter, parameters, **kw)
        if query_filter != FILTER_PARTITIONS or not parameters["low"].startswith("y"):
            return rows
        return (row for row in rows if not str(row["RowKey"]).endswith("~"))

    monkeypatch.setattr(app.tables, "query", without_last_rows)
    assert all_counts(app) == later


def test_an_index_reaching_back_to_year_one_still_answers_a_keyed_timeline(app: Runtime) -> None:
    """A record dated 0001-01-01 (a default time) makes a key lookup's range start there; the
    timeline without `since` keeps to the buckets it may give, and says from when."""
    ancient = {**make(1, NOW), "TimeGenerated": "0001-01-01T00:00:00.0000001Z"}
    ancient = {**ancient, "EventKey": event_key(ancient)}
    recent = make(3, NOW - timedelta(days=2))
    app.writer.write([ancient, recent])
    got = histogram({"caller": recent["Caller"]}, NOW, app.tables).as_dict()
    assert got["total"] == 1
    assert len(got["buckets"]) <= MAX_BUCKETS
    assert got["since"] >= "1990"
    with pytest.raises(QueryError, match="a shorter range") as refused:
        histogram({"caller": "x", "since": "1970-01-01", "bucket": "day"}, NOW, app.tables)
    assert "choose bucket=day" not in str(refused.value)


@pytest.mark.parametrize(
    ("since", "until", "low", "high"),
    [
        ("2024-04-10T12:00:01Z", "2024-04-11T00:00:00Z", 10, 13),  # its second half: ~12
        ("2024-04-10T10:00:00Z", "2024-04-10T11:00:00Z", 0, 2),  # one hour of a day bucket
        ("2024-04-10T00:00:00Z", "2024-04-10T00:00:01Z", 0, 1),  # one second, not all 24
    ],
)
def test_an_unkeyed_timeline_shares_a_blob_by_the_part_of_it_in_the_range(
    app: Runtime, since: str, until: str, low: int, high: int
) -> None:
    """Found from outside: a blob's span was cut into buckets from its first record, and
    each piece counted whole or dropped by its start: half a day read 0, one second a day."""
    from tests.events import activity_event
    from tests.test_query_range import records_of

    hours = [activity_event(n, time=f"2024-04-10T{n:02d}:00:00.0000000Z") for n in range(24)]
    app.writer.write(records_of(hours))  # one blob over the day
    params = {"since": since, "until": until, "bucket": "day", "split": "category"}
    counts = histogram(params, NOW, app.tables).as_dict()
    assert low <= counts["total"] <= high, counts
    assert counts["exact"] is False
