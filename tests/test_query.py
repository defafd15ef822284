"""The query side on Azurite: filters, time bounds, paging, awkward values, hostile input."""

from __future__ import annotations

import argparse
import base64
import io
import os
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import azure.functions as func
import orjson
import pytest

from functions.query_http import handle_activity
from shared.bootstrap import Runtime, build_runtime
from shared.core import archive_format
from shared.core.archive_keys import (
    BlobRef,
    pack_postings,
    posting_row,
    value_hash,
)
from shared.core.continuation import Continuation, encode_continuation
from shared.core.normalize import normalize
from shared.core.query_spec import (
    ActivityQuery,
    QueryError,
    parse_query,
)
from shared.core.records import COLUMNS, NormalizedRecord, Rejection
from shared.services import archive_read, query_scan
from shared.services import query as query_module
from shared.services.query import QueryPage, run_query
from shared.settings import STORAGE_CONNECTION, STORE_PREFIX, load_settings
from shared.tools.azurite import Azurite
from shared.tools.query_cli import format_table, query_main
from tests.archive_view import blob_of

NOW = datetime(2024, 4, 15, 12, 0, tzinfo=UTC)
SPAN = {"since": "2024-01-01T00:00:00Z", "until": "2024-04-01T00:00:00Z"}

SUBSCRIPTIONS = (
    "11111111-1111-1111-1111-111111111111",
    "22222222-2222-2222-2222-222222222222",
    "33333333-3333-3333-3333-333333333333",
)
CATEGORIES = ("Administrative", "Policy", "Security", "ServiceHealth")
CALLERS = ("alice@contoso.com", "Bob@Contoso.com", "0f1e2d3c-app", "carol@fabrikam.com", "")
OPERATIONS = (
    "Microsoft.Compute/virtualMachines/write",
    "Microsoft.Storage/storageAccounts/delete",
    "Microsoft.Authorization/policies/audit/action",
)


def make_record(
    time: str,
    *,
    subscription: str = SUBSCRIPTIONS[0],
    category: str = "Administrative",
    caller: str = "alice@contoso.com",
    operation: str = OPERATIONS[0],
    resource: str | None = None,
    correlation: str = "corr-x",
    extra: Mapping[str, Any] | None = None,
) -> NormalizedRecord:
    """A record through the real normalizer, from an Event Hub-shaped event."""
    event: dict[str, Any] = {
        "time": time,
        "resourceId": resource
        or f"/SUBSCRIPTIONS/{subscription.upper()}/resourceGroups/RG1/providers/"
        "Microsoft.Compute/virtualMachines/vm1",
        "operationName": operation,
        "category": category,
        "resultType": "Success",
        "correlationId": correlation,
        "level": "Informational",
        **(extra or {}),
    }
    if caller:
        event["caller"] = caller
    record = normalize(event, source="test", raw="")
    assert not isinstance(record, Rejection), record
    assert set(record) == set(COLUMNS)
    return record


def build_dataset() -> list[NormalizedRecord]:
    """48 records from 2024-01-10 to 2024-03-24 over 3 subscriptions, 4 categories, 5 callers,
    3 operations, 6 resources; plus records on a month boundary and two in the same second."""
    start = datetime(2024, 1, 10, 8, 0, tzinfo=UTC)
    records = []
    for i in range(48):
        moment = start + timedelta(hours=37 * i, seconds=i, microseconds=1000 * i)
        subscription = SUBSCRIPTIONS[i % 3]
        records.append(
            make_record(
                f"{moment:%Y-%m-%dT%H:%M:%S.%f}9Z",
                subscription=subscription,
                category=CATEGORIES[i % 4],
                caller=CALLERS[i % 5],
                operation=OPERATIONS[(i // 2) % 3],
                resource=f"/subscriptions/{subscription}/resourceGroups/rg{i % 2}/providers/"
                f"Microsoft.Compute/virtualMachines/VM{i % 6}",
                correlation=f"Corr-{i // 3}",
            )
        )
    for time, caller in (
        ("2024-02-01T00:00:00.0000000Z", "edge@contoso.com"),
        ("2024-01-31T23:59:59.9999990Z", "edge@contoso.com"),
        ("2024-02-10T10:00:00.0000000Z", "twin@contoso.com"),
        ("2024-02-10T10:00:00.0000000Z", "twin2@contoso.com"),
    ):
        records.append(make_record(time, caller=caller, correlation="corr-edge"))
    return records


DATASET = build_dataset()


def newest_first(records: list[NormalizedRecord]) -> list[NormalizedRecord]:
    # The query's order: TimeGenerated, then EventKey, both descending.
    return sorted(records, key=lambda r: (r["TimeGenerated"], r["EventKey"]), reverse=True)


def canonical(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%f}0Z"


def expected(params: Mapping[str, str], records: list[NormalizedRecord]) -> list[NormalizedRecord]:
    """What a query must return, worked out independently of the index."""
    query = parse_query(params, NOW)
    columns = {
        "subscription": "SubscriptionId",
        "resource": "ResourceId",
        "caller": "Caller",
        "correlation_id": "CorrelationId",
        "operation": "OperationNameValue",
    }
    chosen = []
    for record in records:
        if not canonical(query.since) <= record["TimeGenerated"] < canonical(query.until):
            continue
        if query.category and record["CategoryValue"] != query.category:
            continue
        if all(
            record[column].lower() == str(getattr(query, field)).lower()
            for field, column in columns.items()
            if getattr(query, field) is not None
        ):
            chosen.append(record)
    return newest_first(chosen)


def search(app: Runtime, params: Mapping[str, str], continuation: str | None = None) -> QueryPage:
    return run_query(
        parse_query(params, NOW), tables=app.tables, reader=app.reader, continuation=continuation
    )


def search_all(app: Runtime, params: Mapping[str, str]) -> list[NormalizedRecord]:
    """Every page in turn; checks each page against the limit."""
    limit = parse_query(params, NOW).limit
    found: list[NormalizedRecord] = []
    continuation: str | None = None
    for _ in range(1000):
        page = search(app, params, continuation)
        assert len(page.records) <= limit
        found.extend(page.records)
        continuation = page.continuation
        if continuation is None:
            return found
    raise AssertionError("paging did not end")


def keys(records: list[NormalizedRecord]) -> list[str]:
    return [record["EventKey"] for record in records]


@pytest.fixture(scope="module")
def archive(azurite: Azurite) -> Runtime:
    """The data set, written once for the read-only tests of this module (a store of its own)."""
    settings = load_settings(
        {STORAGE_CONNECTION: azurite.connection_string, STORE_PREFIX: f"q{os.getpid()}data"}
    )
    app = build_runtime(settings)
    result = app.writer.write(DATASET)
    assert len(result.indexed) == len(DATASET)
    return app


# --- filters ---------------------------------------------------------------------------

S1, S2, S3 = SUBSCRIPTIONS
FILTER_CASES: list[dict[str, str]] = [
    {},
    {"subscription": S2},
    {"subscription": S2.upper()},
    {
        "resource": f"/subscriptions/{S1}/resourceGroups/rg0/providers/Microsoft.Compute/"
        "virtualMachines/VM0"
    },
    {"caller": "bob@contoso.com"},
    {"caller": "BOB@CONTOSO.COM"},
    {"correlation_id": "corr-5"},
    {"correlation_id": "corr-edge"},
    {"operation": "microsoft.storage/storageaccounts/delete"},
    {"category": "policy"},
    {"category": "ServiceHealth"},
    {"subscription": S1, "category": "Security"},
    {"caller": "alice@contoso.com", "operation": OPERATIONS[0]},
    {
        "resource": f"/subscriptions/{S3}/resourcegroups/rg1/providers/microsoft.compute/"
        "virtualmachines/vm5",
        "caller": "carol@fabrikam.com",
    },
    {"correlation_id": "Corr-4", "subscription": S1},
    {"correlation_id": "Corr-4", "subscription": S2, "category": "Policy"},
    {
        "subscription": S1,
        "caller": "bob@contoso.com",
        "operation": OPERATIONS[1],
        "category": "Policy",
    },
]
# Each matches nothing (all but one filter would match something).
EMPTY_CASES: list[dict[str, str]] = [
    {"caller": "nobody@contoso.com"},
    {"subscription": S1, "caller": "bob@contoso.com", "correlation_id": "corr-0"},
    {"correlation_id": "Corr-4", "subscription": S3, "category": "Administrative"},
]


@pytest.mark.parametrize(
    "filters", FILTER_CASES + EMPTY_CASES, ids=lambda case: ",".join(case) or "none"
)
def test_each_filter_alone_and_combined_gives_exactly_the_matches_newest_first(
    archive: Runtime, filters: dict[str, str]
) -> None:
    params = {**SPAN, **filters, "limit": "1000"}
    want = expected(params, DATASET)
    got = search(archive, params)
    assert keys(got.records) == keys(want)
    assert got.continuation is None
    assert bool(want) == (filters not in EMPTY_CASES)  # the data set exercises the case


def test_time_windows_across_months(archive: Runtime) -> None:
    for since, until in (
        ("2024-01-20T00:00:00Z", "2024-02-20T12:00:00Z"),
        ("2024-02-29", "2024-03-02"),
        ("2024-02-10T12:00:00+02:00", "2024-02-12T12:00:00+02:00"),
    ):
        for filters in ({}, {"subscription": S2}, {"category": "Administrative"}):
            params = {"since": since, "until": until, "limit": "1000", **filters}
            assert keys(search(archive, params).records) == keys(expected(params, DATASET))


def test_since_is_inclusive_and_until_exclusive(archive: Runtime) -> None:
    boundary = "2024-02-01T00:00:00Z"
    for filters in ({}, {"caller": "edge@contoso.com"}):
        after = search(archive, {"since": boundary, "until": "2024-02-02", **filters}).records
        assert "2024-02-01T00:00:00.0000000Z" in [r["TimeGenerated"] for r in after]
        assert "2024-01-31T23:59:59.9999990Z" not in [r["TimeGenerated"] for r in after]
        before = search(archive, {"since": "2024-01-31", "until": boundary, **filters}).records
        assert "2024-02-01T00:00:00.0000000Z" not in [r["TimeGenerated"] for r in before]
        assert before[0]["TimeGenerated"] == "2024-01-31T23:59:59.9999990Z"


def test_records_in_the_same_instant_come_in_index_order(archive: Runtime) -> None:
    page = search(archive, {"since": "2024-02-10T10:00:00Z", "until": "2024-02-10T10:00:01Z"})
    assert sorted(r["Caller"] for r in page.records) == ["twin2@contoso.com", "twin@contoso.com"]
    assert keys(page.records) == keys(newest_first(page.records))


# --- paging ----------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 3, 7, 52])
@pytest.mark.parametrize(
    "filters", [{}, {"subscription": S1}, {"correlation_id": "corr-edge"}, {"category": "Policy"}]
)
def test_paging_returns_every_record_exactly_once(
    archive: Runtime, limit: int, filters: dict[str, str]
) -> None:
    params = {**SPAN, **filters, "limit": str(limit)}
    got = search_all(archive, params)
    assert keys(got) == keys(expected(params, DATASET))


class Spies:
    """What a query asked of storage: index reads by (month, PartitionKey), and fetches."""

    def __init__(self, app: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
        self.asked: list[tuple[str, str]] = []
        self.places: list[int] = []  # places per reader.fetch call
        self.blobs: list[str] = []  # blobs read whole
        self.reads: list[str] = []  # every archive read (whole or a range): its blob
        query, fetch, blob_records = app.tables.query, app.reader.fetch, app.reader.blob_records
        archive = app.reader._archive
        read = archive.read

        def read_spy(name: str, offset: int = 0, length: int | None = None) -> bytes | None:
            self.reads.append(name)
            return read(name, offset, length)

        def query_spy(month: str, query_filter: str, parameters: Any, **kwargs: Any) -> Any:
            self.asked.append((month, parameters["pk"]))
            return query(month, query_filter, parameters, **kwargs)

        def fetch_spy(places: Any, manifests: Any = None) -> Any:
            self.places.append(len(places))
            return fetch(places, manifests)

        def blob_records_spy(ref: BlobRef) -> Any:
            self.blobs.append(ref.name)
            return blob_records(ref)

        monkeypatch.setattr(app.tables, "query", query_spy)
        monkeypatch.setattr(app.reader, "fetch", fetch_spy)
        monkeypatch.setattr(app.reader, "blob_records", blob_records_spy)
        monkeypatch.setattr(archive, "read", read_spy)

    def clear(self) -> None:
        self.asked.clear()
        self.places.clear()
        self.blobs.clear()
        self.reads.clear()


def test_a_page_reads_no_more_than_it_needs(
    archive: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Days are read newest first until the page is full; blobs and records no more."""
    spies = Spies(archive, monkeypatch)
    page = search(archive, {**SPAN, "limit": "2"})
    assert keys(page.records) == keys(newest_first(DATASET)[:2])
    assert page.continuation is not None
    # Empty days, then the newest record's day, then the day before it for the second.
    assert spies.asked == [("202403", f"m{day}") for day in range(31, 20, -1)]
    assert len(spies.blobs) == 2 and spies.places == []

    # A key lookup: the month's posting ranges, and only the records the page needs,
    # fetched together across days.
    spies.clear()
    params = {**SPAN, "subscription": S1, "limit": "3"}
    page = search(archive, params)
    assert keys(page.records) == keys(expected(params, DATASET)[:3])
    assert {month for month, _ in spies.asked} == {"202403"}
    assert spies.places == [3] and spies.blobs == []

    # A category with a key filter: other classes' postings are passed over unread.
    spies.clear()
    params = {**SPAN, "subscription": S1, "category": "Security", "limit": "1000"}
    page = search(archive, params)
    assert keys(page.records) == keys(expected(params, DATASET))
    assert sum(spies.places) == len(page.records)


def test_long_sparse_ranges_page_by_partitions(
    archive: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(query_scan, "MAX_PARTITIONS_PER_PAGE", 4)
    # 17 empty days before the data, empty days after it, and months without a table
    params = {"since": "2023-10-01", "until": "2024-04-10", "limit": "1000"}
    pages = search_pages(archive, params)
    assert len(pages) > 2
    assert any(page.records == [] and page.continuation for page in pages)
    found = [record for page in pages for record in page.records]
    assert keys(found) == keys(expected(params, DATASET))


def test_a_key_lookup_over_empty_months_pages_by_months(
    app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(query_module, "KEY_MONTHS_PER_PAGE", 2)
    # S3 in 2024-03 and 2023-06; only S1 in the months between (their tables exist).
    wanted = [
        make_record(f"{month}-15T10:00:00Z", subscription=S3) for month in ("2024-03", "2023-06")
    ]
    others = [make_record(f"2023-{month:02d}-10T10:00:00Z") for month in range(7, 13)]
    app.writer.write(wanted + others)
    params = {"since": "2023-01-01", "until": "2024-04-10", "limit": "1000", "subscription": S3}
    pages = search_pages(app, params)
    assert len(pages) > 2
    assert any(page.records == [] and page.continuation for page in pages)
    assert keys([record for page in pages for record in page.records]) == keys(wanted)


def search_pages(app: Runtime, params: Mapping[str, str]) -> list[QueryPage]:
    pages = []
    continuation = None
    for _ in range(1000):
        page = search(app, params, continuation)
        pages.append(page)
        continuation = page.continuation
        if continuation is None:
            return pages
    raise AssertionError("paging did not end")


def test_a_token_older_than_a_moved_since_means_nothing_is_left(archive: Runtime) -> None:
    page = search(archive, {**SPAN, "limit": "1"})
    assert page.continuation is not None
    later = {"since": "2024-03-31T12:00:00Z", "until": "2024-04-01"}
    token = encode_continuation(parse_query(later, NOW), Continuation(date(2024, 1, 1), None))
    assert search(archive, later, token) == QueryPage([], None)
    with pytest.raises(QueryError, match="continuation does not belong"):
        search(archive, {"since": "2023-12-01", "until": "2023-12-20"}, page.continuation)


# --- awkward values --------------------------------------------------------------------


def test_long_and_awkward_values_are_found_exactly(app: Runtime) -> None:
    awkward = "a#b?c/d\\e'f%g"
    stem = f"/subscriptions/{S1}/resourceGroups/rg-{awkward}/providers/Microsoft.Web/sites/"
    long_id = (stem + "x" * 600)[:600]
    twin_id = long_id[:-1] + "y"  # same 599 first characters: same key prefix, other hash
    callers = ("o'brien@contoso.com", "100%#?/\\'", "' or 1 eq 1", "x' or PartitionKey ne 'a")
    records = [
        make_record("2024-03-01T10:00:00Z", resource=long_id, caller=callers[0]),
        make_record("2024-03-01T11:00:00Z", resource=twin_id, caller=callers[1]),
        make_record("2024-03-01T12:00:00Z", resource=stem + "short", caller=callers[2]),
        make_record("2024-03-01T13:00:00Z", resource=stem + "other", caller=callers[3]),
        make_record("2024-03-01T14:00:00Z", correlation=awkward + "|s|202403|"),
    ]
    app.writer.write(records)
    assert len(long_id) == 600

    def found(**filters: str) -> list[str]:
        return keys(search(app, {**SPAN, **filters}).records)

    assert found(resource=long_id) == [records[0]["EventKey"]]
    assert found(resource=long_id.upper()) == [records[0]["EventKey"]]
    assert found(resource=twin_id) == [records[1]["EventKey"]]
    for record, caller in zip(records, callers, strict=False):
        assert found(caller=caller) == [record["EventKey"]]
        assert found(caller=caller, resource=record["ResourceId"]) == [record["EventKey"]]
    assert found(correlation_id=awkward + "|s|202403|") == [records[4]["EventKey"]]
    assert found(correlation_id=awkward) == []
    assert found(resource=stem) == []


def test_postings_of_an_uncommitted_or_deleted_blob_or_another_value_are_skipped(
    app: Runtime,
) -> None:
    record = make_record("2024-03-05T10:00:00Z", caller="ghost@contoso.com")
    gone = make_record("2024-03-05T09:00:00Z", caller="ghost@contoso.com")
    other = make_record("2024-03-05T08:00:00Z", caller="someone@contoso.com")
    for written in (record, gone, other):
        app.writer.write([written])  # a blob each
    bucket, digest = value_hash("ghost@contoso.com")

    def posting(ref: BlobRef, second: int) -> dict[str, Any]:
        places = pack_postings({digest: [(second, 0)]})[0]
        return {"PartitionKey": "c", "RowKey": posting_row(bucket, ref, 7), "E": places}

    app.tables.upsert(
        "202403",
        [
            # a blob that was never committed (its writer stopped before the manifest)
            posting(BlobRef(date(2024, 3, 5), "administrative", 12345), 11 * 3600),
            # another value's record under this value's hash (as a hash collision would be)
            posting(blob_of(app, other["EventKey"]), 8 * 3600),
        ],
    )
    # and a committed blob whose bytes are gone (deleted under the index).
    assert app.archive.delete([blob_of(app, gone["EventKey"]).name]) == {}
    for filters, found in (
        ({"caller": "ghost@contoso.com"}, [record]),
        ({"since": "2024-03-05", "until": "2024-03-06"}, [record, other]),
    ):
        page = search(app, {**SPAN, **filters})
        assert keys(page.records) == keys(found)
        assert page.unreadable == []


def test_a_body_kept_in_a_blob_comes_back_whole(app: Runtime) -> None:
    noise = base64.b64encode(os.urandom(120_000)).decode()  # does not compress under 60 KB
    record = make_record("2024-03-05T10:00:00Z", extra={"properties": {"blob": noise}})
    app.writer.write([record])
    for filters in ({}, {"caller": "alice@contoso.com"}):
        assert search(app, {**SPAN, **filters}).records == [record]


# --- hostile input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"since": "2024-13-01"},
        {"since": "2024-01-01' or 1 eq 1"},
        {"until": "2024-02-30T00:00:00Z"},
        {"since": "-7d"},
        {"since": "7w"},
        {"since": "9999999d"},
        {"since": "1969-12-31"},
        {"since": "9999-12-31T23:00:00-05:00"},
        {"since": "2024-03-01", "until": "2024-02-01"},
        {"since": "2024-03-01", "until": "2024-03-01"},
        {"limit": "0"},
        {"limit": "-5"},
        {"limit": "1001"},
        {"limit": "1e3"},
        {"limit": "1_0"},
        {"limit": "10 or 1 eq 1"},
        {"limit": ""},
        {"category": "Write"},
        {"category": "Administrative' or 'a' eq 'a"},
        {"category": "Administrativ"},
        {"resource": "x" * 1025},
        {"caller": "x" * 10_240},
        {"correlation_id": "\ud800"},
        {"subscription": "   "},
        {"subscriptions": S1},
        {"$filter": "PartitionKey ne ''"},
    ],
)
def test_bad_parameters_are_refused_with_the_parameter_named(params: dict[str, str]) -> None:
    with pytest.raises(QueryError) as raised:
        parse_query(params, NOW)
    name = next(iter(params))
    assert name.lstrip("$")[:5] in str(raised.value) or "since" in str(raised.value)


@pytest.mark.parametrize(
    "filters",
    [
        {"caller": "' or 1 eq 1"},
        {"caller": "alice@contoso.com' or Caller ne '"},
        {"subscription": f"{S1}' or PartitionKey ne '"},
        {"resource": "' or RowKey gt ''"},
        {"correlation_id": "corr-1') or (true"},
        {"operation": "*"},
        {"subscription": S1, "caller": "%"},
        {"subscription": "@pk"},
        {"caller": "alice@contoso.com and RowKey lt @high"},
    ],
)
def test_hostile_filter_values_match_nothing(archive: Runtime, filters: dict[str, str]) -> None:
    page = search(archive, {**SPAN, **filters, "limit": "1000"})
    assert page == QueryPage([], None)


def _token(value: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


def _sealed(params: Mapping[str, str], day: date, after: tuple[str, str] | None = None) -> str:
    return encode_continuation(parse_query(params, NOW), Continuation(day, after))


TIME = "2024-03-01T10:00:00.0000000Z"
KEY = "0123456789abcdef" * 2


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not a token",
        "%%%%",
        "A" * 5000,
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        _token({"p": "20240301", "r": ""}),
        _token(["20240301"]),
        _token(["20240301", "", "", "x", "y"]),
        _token([20240301, "", "", "x"]),
        _token(["20240301", "' or 1 eq 1", KEY, "x"]),
        _token(["20240301", TIME, "' or 1 eq 1", "x"]),
        _token(["20240301", TIME, "", "x"]),
        _token(["20240302", TIME, KEY, "x"]),  # the record is not of the token's day
        _token(["20240301", "9" * 19, KEY, "x"]),
        _token(["2024030", "", "", "x"]),
        _token(["20240231", "", "", "x"]),
        _token(["' or 1 eq 1", "", "", "x"]),
        _token(["20240301", "", "", "x"]),  # well formed, but its seal is not
        _sealed({"subscription": S1}, date(2024, 3, 1)),  # sealed for another query
        _sealed(SPAN, date(2099, 1, 1)),  # a day after the range
        # Sealed (the seal has no secret: anyone can make one) around an impossible time.
        _sealed(SPAN, date(2024, 3, 1), ("2024-03-01T99:99:99.0000000Z", KEY)),
        _sealed(SPAN, date(2024, 3, 1), ("2024-03-01T23:59:60.0000000Z", KEY)),
        _sealed(SPAN, date(2024, 3, 1), ("2024-03-01T1\u0661:00:00.0000000Z", KEY)),
        _token(["2024030\u0661", "", "", "x"]),  # digits other than ASCII's
    ],
)
def test_bad_continuations_are_refused(archive: Runtime, token: str) -> None:
    with pytest.raises(QueryError, match="continuation"):
        search(archive, SPAN, token)


def test_a_tampered_continuation_is_refused(archive: Runtime) -> None:
    page = search(archive, {**SPAN, "limit": "2"})
    assert page.continuation is not None
    fields = orjson.loads(base64.urlsafe_b64decode(page.continuation + "==="))
    for index, value in ((0, "20240320"), (1, fields[1][:-3] + "42Z"), (2, "f" * 32)):
        edited = [*fields]
        edited[index] = value
        with pytest.raises(QueryError, match="continuation does not belong to this query"):
            search(archive, {**SPAN, "limit": "2"}, _token(edited))
    # The token itself goes on where it left off.
    rest = search(archive, {**SPAN, "limit": "2"}, page.continuation).records
    assert keys(rest) == keys(newest_first(DATASET)[2:4])


def test_a_continuation_for_other_values_is_refused(archive: Runtime) -> None:
    page = search(archive, {**SPAN, "subscription": S1, "limit": "1"})
    assert page.continuation is not None
    with pytest.raises(QueryError, match="continuation"):
        search(archive, {**SPAN, "subscription": S2}, page.continuation)
    with pytest.raises(QueryError, match="continuation"):
        search(archive, {**SPAN, "caller": "alice@contoso.com"}, page.continuation)
    with pytest.raises(QueryError, match="continuation"):
        search(archive, {**SPAN, "subscription": S1, "category": "Policy"}, page.continuation)


def test_a_forged_position_cannot_widen_the_range(archive: Runtime) -> None:
    # "After" a record later than until, on the day that also holds a record later than
    # until (2024-02-14T19:00): the range's own bound still holds.
    params = {"since": "2024-02-13", "until": "2024-02-14T18:00:00Z", "limit": "1000"}
    for filters in ({}, {"correlation_id": "corr-24"}, {"correlation_id": "corr-23"}):
        forged = _sealed(
            {**params, **filters}, date(2024, 2, 14), ("2024-02-14T23:59:59.9999999Z", "f" * 32)
        )
        got = search(archive, {**params, **filters}, forged).records
        assert keys(got) == keys(expected({**params, **filters}, DATASET))
    forged = _sealed(params, date(2024, 2, 14), ("2024-02-14T23:59:59.9999999Z", "f" * 32))
    got = search(archive, params, forged).records
    assert [record["TimeGenerated"][:13] for record in got] == ["2024-02-13T06"]


# --- parsing ---------------------------------------------------------------------------


def test_defaults_and_relative_times() -> None:
    assert parse_query({}, NOW) == ActivityQuery(
        None, None, None, None, None, None, NOW - timedelta(days=30), NOW, 100
    )
    assert parse_query({"since": "15m"}, NOW).since == NOW - timedelta(minutes=15)
    assert parse_query({"since": "12h"}, NOW).since == NOW - timedelta(hours=12)
    query = parse_query({"since": "7d", "until": "1d"}, NOW)
    assert (query.since, query.until) == (NOW - timedelta(days=7), NOW - timedelta(days=1))
    assert parse_query({"until": "2024-02-01"}, NOW).since == datetime(2024, 1, 2, tzinfo=UTC)
    zoned = parse_query({"since": "2024-02-01T02:00:00+02:00"}, NOW).since
    assert zoned == datetime(2024, 2, 1, tzinfo=UTC)
    assert parse_query({"since": "2024-02-01T00:00:00"}, NOW).since == zoned
    # A far future until is clamped: records cannot be from then.
    assert parse_query({"until": "2099-01-01"}, NOW).until == NOW + timedelta(days=1)
    assert parse_query({"category": "sErViCeHeAlTh"}, NOW).category == "ServiceHealth"
    assert parse_query({"caller": "  alice  ", "limit": "1000"}, NOW).caller == "alice"


# --- HTTP ------------------------------------------------------------------------------


def request(params: dict[str, str]) -> func.HttpRequest:
    return func.HttpRequest(
        method="GET", url="http://localhost/api/activity", params=params, body=b""
    )


def test_http_pages_through_with_continuations(archive: Runtime) -> None:
    params = {**SPAN, "subscription": S3.upper(), "limit": "4", "code": "function-key"}
    got: list[NormalizedRecord] = []
    continuation = None
    for _ in range(100):
        response = handle_activity(
            request({**params, **({"continuation": continuation} if continuation else {})}),
            archive,
            NOW,
        )
        assert response.status_code == 200
        assert response.mimetype == "application/json"
        body = orjson.loads(response.get_body())
        assert set(body) == {"records", "continuation"}
        assert len(body["records"]) <= 4
        got.extend(body["records"])
        continuation = body["continuation"]
        if continuation is None:
            break
    want = expected({**SPAN, "subscription": S3}, DATASET)
    assert len(want) > 4
    assert got == want


@pytest.mark.parametrize(
    "params",
    [
        {"since": "last tuesday"},
        {"limit": "-1"},
        {"category": "Nope"},
        {"caller": "x" * 10_240},
        {"continuation": "garbage"},
        {"continuation": ""},
        {"filter": "1 eq 1"},
    ],
)
def test_http_bad_parameters_are_400_with_a_message(
    archive: Runtime, params: dict[str, str]
) -> None:
    response = handle_activity(request(params), archive, NOW)
    assert response.status_code == 400
    body = orjson.loads(response.get_body())
    assert set(body) == {"error"} and body["error"]


# --- CLI and table ---------------------------------------------------------------------


def cli_args(**given: str) -> argparse.Namespace:
    names = ("subscription", "since", "until", "resource", "caller", "correlation_id")
    values: dict[str, Any] = dict.fromkeys(names)
    values.update(operation=None, category=None, limit="100", format="json")
    values.update(given)
    return argparse.Namespace(**values)


def test_cli_writes_json_lines_newest_first_across_pages(
    archive: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(query_scan, "MAX_PARTITIONS_PER_PAGE", 3)  # forces many pages
    out = io.StringIO()
    assert query_main(cli_args(**SPAN, limit="1000"), archive, out) == 0
    lines = out.getvalue().splitlines()
    assert [orjson.loads(line) for line in lines] == newest_first(DATASET)

    out = io.StringIO()
    assert query_main(cli_args(**SPAN, category="policy", limit="5"), archive, out) == 0
    assert keys([orjson.loads(line) for line in out.getvalue().splitlines()]) == keys(
        expected({**SPAN, "category": "Policy"}, DATASET)[:5]
    )


def test_cli_table_and_errors(archive: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert query_main(cli_args(**SPAN, limit="3", format="table"), archive, out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["TIME", "CATEGORY", "STATUS"]
    assert len(lines) == 4
    assert lines[1].startswith(newest_first(DATASET)[0]["TimeGenerated"][:19].replace("T", " "))

    out = io.StringIO()
    assert query_main(cli_args(since="soon"), archive, out) == 2
    assert out.getvalue() == ""
    assert "since" in capsys.readouterr().err


def test_format_table_truncates_and_neutralises_control_characters() -> None:
    record = make_record("2024-03-01T10:00:00Z", caller="mallory\x1b[31m@" + "x" * 100)
    text = format_table([record])
    header, row = text.splitlines()
    assert "\x1b" not in row and "mallory?[31m@" in row
    assert "…" in row
    assert row.startswith("2024-03-01 10:00:00  Administrative  Succeeded")
    assert format_table([]) == header + "\n"


# --- index key defects found by an earlier query review (shared/core/keys.py) ---


def test_a_record_in_the_last_instant_of_a_day_is_found(app: Runtime) -> None:
    record = make_record("2024-03-31T23:59:59.9999999Z", caller="late@contoso.com")
    app.writer.write([record])
    assert search(app, {**SPAN, "caller": "late@contoso.com"}).records == [record]


def test_microsecond_bounds_are_exact(app: Runtime) -> None:
    record = make_record("2024-02-17T12:34:56.9980060Z")
    app.writer.write([record])
    assert search(app, {"since": "2024-02-17T12:34:56.998006Z", "until": "2024-03-01"}).records
    assert not search(app, {"since": "2024-02-17", "until": "2024-02-17T12:34:56.998006Z"}).records


@pytest.mark.parametrize("neighbours", [0, 1], ids=["alone", "beside-another-blob"])
def test_a_lookup_needing_several_members_of_a_blob_reads_one_range_and_decodes_what_it_returns(
    app: Runtime, monkeypatch: pytest.MonkeyPatch, neighbours: int
) -> None:
    """A blob of 300 records (5 gzip members) holding 4 of a value's records in members 1 to 3:
    one ranged read from the first member needed to the last, and only those 4 lines parsed
    (not the blob's 300: a big month's blobs hold ~1,000, a lookup wants a few of each).
    Alone in its day, or beside another blob (then the day's manifests are listed)."""
    wanted = {70, 75, 130, 200}
    records = [
        make_record(
            f"2024-03-10T10:{n // 60:02d}:{n % 60:02d}Z",
            subscription=SUBSCRIPTIONS[2] if n in wanted else SUBSCRIPTIONS[0],
        )
        for n in range(300)
    ]
    records += [
        make_record("2024-03-10T11:00:00Z", subscription=SUBSCRIPTIONS[2], category="Policy")
        for _ in range(neighbours)
    ]
    app.writer.write(records)
    parsed: list[bytes] = []
    reads: list[tuple[int, int | None]] = []
    real_decode, real_read = archive_format.decode_record, app.reader._archive.read

    def decode_spy(line: bytes) -> NormalizedRecord:
        parsed.append(line)
        return real_decode(line)

    def read_spy(name: str, offset: int = 0, length: int | None = None) -> bytes | None:
        reads.append((offset, length))
        return real_read(name, offset, length)

    monkeypatch.setattr(archive_read, "decode_record", decode_spy)
    monkeypatch.setattr(app.reader._archive, "read", read_spy)
    params = {"since": "2024-03-10", "until": "2024-03-11", "subscription": SUBSCRIPTIONS[2]}
    page = search(app, {**params, "limit": "1000"})
    assert keys(page.records) == keys(expected(params, records))
    assert len(page.records) == len(wanted) + neighbours == len(parsed)
    (offset, length), *others = sorted(reads, key=lambda read: -(read[1] or 0))
    assert len(others) == neighbours  # the neighbour's one record: its one member
    assert offset > 0 and length is not None  # members 1 to 3 of 5: not the first, nor the last


def test_times_take_rfc_3339s_lower_case_t_and_z() -> None:
    """RFC 3339 (section 5.6, NOTE) allows `t` and `z` in lower case."""
    lower = parse_query({"since": "2024-03-01t12:00:00z", "until": "2024-03-02t00:00:00.5z"}, NOW)
    upper = parse_query({"since": "2024-03-01T12:00:00Z", "until": "2024-03-02T00:00:00.5Z"}, NOW)
    assert (lower.since, lower.until) == (upper.since, upper.until)


def test_filter_values_may_hold_control_characters_and_other_parameters_may_not() -> None:
    """A caller or resource as archived is searched for as it is: a display name with an
    escape sequence in it must not be unsearchable (found from outside)."""
    query = parse_query({"caller": "alice\x00\x1b[31m@contoso.com", "text": "a\tb"}, NOW)
    assert (query.caller, query.text) == ("alice\x00\x1b[31m@contoso.com", "a\tb")
    for params in ({"since": "2024-03-01\x00"}, {"category": "Policy\x1b"}, {"limit": "5\n"}):
        with pytest.raises(QueryError):
            parse_query(params, NOW)
