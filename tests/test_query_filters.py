"""Issue 20's filters (resource group, resource type, status, level, keyword), applied exactly
whichever way the index answers: resource group and status from their postings, from another
filter's, or from whole days in a month written before those kinds existed; and the bound on a
page's work, with a continuation that misses and repeats nothing."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import azure.functions as func
import orjson
import pytest

from functions.query_http import handle_activity
from shared.bootstrap import Runtime, build_runtime
from shared.core.keys import LEGACY_KINDS, LOOKUP_COLUMNS
from shared.core.normalize import normalize
from shared.core.query_spec import QueryError, matches, parse_query, resource_type
from shared.core.records import NormalizedRecord, Rejection
from shared.services import archive_write
from shared.services.index_kinds import KINDS_PARTITION, KINDS_ROW, IndexKinds, kinds_of
from shared.services.query import QueryPage, ScanBudget, run_query
from shared.services.query_page import order
from shared.settings import STORAGE_CONNECTION, STORE_PREFIX, load_settings
from shared.tools.azurite import Azurite
from tests.test_abuse import table_queries
from tests.test_query import Spies

NOW = datetime(2024, 4, 15, 12, 0, tzinfo=UTC)
SPAN = {"since": "2024-01-01T00:00:00Z", "until": "2024-04-01T00:00:00Z"}
SUB = "11111111-1111-1111-1111-111111111111"
OTHER_SUB = "22222222-2222-2222-2222-222222222222"
GROUPS = ("RG-Prod", "rg-dev", "Rg-Test")
# (resource id under a group, the type it names), the type worked out by hand here
RESOURCES = (
    ("/providers/Microsoft.KeyVault/vaults/kv1", "microsoft.keyvault/vaults"),
    ("/providers/Microsoft.Compute/virtualMachines/vm1", "microsoft.compute/virtualmachines"),
    ("/providers/Microsoft.Sql/servers/s1/databases/db1", "microsoft.sql/servers/databases"),
    ("", "microsoft.resources/resourcegroups"),  # the group itself
    (
        "/providers/Microsoft.Compute/virtualMachines/vm2/providers/"
        "Microsoft.Authorization/roleAssignments/ra1",
        "microsoft.authorization/roleassignments",
    ),
)
RESULTS = ("Success", "Failure", "Start", "Accept", "Resolved")
STATUSES = {"Success": "Succeeded", "Failure": "Failed", "Start": "Started", "Accept": "Accepted"}
LEVELS = ("Informational", "Error", "Warning", "Critical")
WORDS = ("Secret ROTATED by pipeline", "nothing to see", "<script>alert(1)</script>", "")


def make(index: int, moment: datetime) -> NormalizedRecord:
    subscription = SUB if index % 5 else OTHER_SUB
    group = GROUPS[index % 3]
    suffix = RESOURCES[index % len(RESOURCES)][0]
    event: dict[str, Any] = {
        "time": f"{moment:%Y-%m-%dT%H:%M:%S}.{index:07d}Z",
        "resourceId": f"/subscriptions/{subscription}/resourceGroups/{group}{suffix}",
        "operationName": "Microsoft.KeyVault/vaults/write",
        "category": ("Administrative", "Policy", "Security")[index % 3 // 2],
        "resultType": RESULTS[index % len(RESULTS)],
        "correlationId": f"corr-{index // 4}",
        "level": LEVELS[index % len(LEVELS)],
        "caller": f"user{index % 4}@contoso.com",
        "properties": {"message": WORDS[index % len(WORDS)]},
    }
    record = normalize(event, source="test", raw="")
    assert not isinstance(record, Rejection), record
    return record


def build() -> tuple[list[NormalizedRecord], list[NormalizedRecord]]:
    """(January's records, February's and March's): 30 each side, hours apart."""
    start = datetime(2024, 1, 5, 7, tzinfo=UTC)
    records = [make(i, start + timedelta(hours=53 * i)) for i in range(60)]
    january = [r for r in records if r["TimeGenerated"] < "2024-02"]
    return january, [r for r in records if r["TimeGenerated"] >= "2024-02"]


JANUARY, LATER = build()
DATASET = JANUARY + LATER


def legacy_write(app: Runtime, records: list[NormalizedRecord]) -> None:
    """Records written as a version before resource group and status postings wrote them."""
    legacy = {kind: column for kind, column in LOOKUP_COLUMNS.items() if kind in LEGACY_KINDS}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(archive_write, "LOOKUP_COLUMNS", legacy)
        patch.setattr(IndexKinds, "mark", lambda self, months: None)
        assert len(app.writer.write(records).indexed) == len(records)


@pytest.fixture(scope="module")
def archive(azurite: Azurite) -> Runtime:
    """January as the former version wrote it; February and March as this one does."""
    settings = load_settings(
        {STORAGE_CONNECTION: azurite.connection_string, STORE_PREFIX: f"qf{os.getpid()}data"}
    )
    app = build_runtime(settings)
    legacy_write(app, JANUARY)
    assert len(app.writer.write(LATER).indexed) == len(LATER)
    return app


def expected(params: Mapping[str, str]) -> list[NormalizedRecord]:
    """What a query must return, worked out from the data set's own construction."""
    query = parse_query(params, NOW)
    chosen = []
    for index, record in enumerate(DATASET):
        time = record["TimeGenerated"]
        if not f"{query.since:%Y-%m-%dT%H:%M:%S}" <= time[:19] < f"{query.until:%Y-%m-%dT%H:%M:%S}":
            continue
        checks = {
            "resource_group": GROUPS[index % 3].lower(),
            "resource_type": RESOURCES[index % len(RESOURCES)][1],
            "status": STATUSES.get(RESULTS[index % len(RESULTS)], "Resolved").lower(),
            "level": LEVELS[index % len(LEVELS)].lower(),
            "subscription": (SUB if index % 5 else OTHER_SUB),
            "caller": f"user{index % 4}@contoso.com",
        }
        # the parsed values: `failure` is the status Failed, as the normalizer says
        wanted = {name: str(getattr(query, name)).lower() for name in checks}
        if any(checks[name] != wanted[name] for name in checks if getattr(query, name)):
            continue
        word = query.text
        if word is not None and word.lower() not in orjson.dumps(record).decode().lower():
            continue
        chosen.append(record)
    return sorted(chosen, key=lambda r: (r["TimeGenerated"], r["EventKey"]), reverse=True)


def keys(records: list[NormalizedRecord]) -> list[str]:
    return [record["EventKey"] for record in records]


def pages(
    app: Runtime, params: Mapping[str, str], budget: ScanBudget | None = None
) -> Iterator[QueryPage]:
    query = parse_query(params, NOW)
    continuation = None
    for _ in range(1000):
        page = run_query(
            query,
            tables=app.tables,
            reader=app.reader,
            continuation=continuation,
            budget=budget,
        )
        yield page
        continuation = page.continuation
        if continuation is None:
            return
    raise AssertionError("paging did not end")


def search_all(
    app: Runtime, params: Mapping[str, str], budget: ScanBudget | None = None
) -> list[NormalizedRecord]:
    return [record for page in pages(app, params, budget) for record in page.records]


CASES: list[dict[str, str]] = [
    {"resource_group": "rg-prod"},
    {"resource_group": "RG-PROD"},
    {"resource_group": "Rg-Test", "subscription": SUB},
    {"resource_type": "Microsoft.KeyVault/vaults"},
    {"resource_type": "microsoft.sql/servers/databases"},
    {"resource_type": "Microsoft.Resources/resourceGroups"},
    {"resource_type": "Microsoft.Authorization/roleAssignments", "resource_group": "rg-dev"},
    {"status": "Failed"},
    {"status": "failure"},  # the normalizer's own synonym
    {"status": "SUCCEEDED", "caller": "user1@contoso.com"},
    {"status": "Resolved"},  # any value, as received
    {"status": "Accepted", "resource_group": "rg-dev"},
    {"level": "error"},
    {"level": "Critical", "subscription": OTHER_SUB},
    {"text": "rotated"},
    {"text": "<SCRIPT>"},
    {"text": "rotated", "status": "Started", "level": "Informational"},
    {"text": "kv1", "resource_group": "RG-Prod"},
]


@pytest.mark.parametrize(
    "filters", CASES, ids=lambda case: ",".join(f"{k}={v}" for k, v in case.items())
)
def test_each_new_filter_alone_and_combined_gives_exactly_the_matches(
    archive: Runtime, filters: dict[str, str]
) -> None:
    params = {**SPAN, **filters, "limit": "1000"}
    want = expected(params)
    assert want, "the data set exercises the case"
    assert keys(search_all(archive, params)) == keys(want)


@pytest.mark.parametrize("limit", ["1", "4"])
@pytest.mark.parametrize(
    "filters", [{"resource_group": "rg-dev"}, {"status": "Succeeded"}, {"text": "nothing"}]
)
def test_paging_across_legacy_and_new_months_returns_each_match_once(
    archive: Runtime, limit: str, filters: dict[str, str]
) -> None:
    params = {**SPAN, **filters, "limit": limit}
    assert keys(search_all(archive, params)) == keys(expected(params))


def test_the_writer_marks_a_new_month_and_leaves_a_legacy_one(app: Runtime) -> None:
    legacy_write(app, JANUARY[:3])
    assert app.tables.get("202401", KINDS_PARTITION, KINDS_ROW) is None
    assert kinds_of(app.tables).of("202401") == LEGACY_KINDS
    # A later write into the legacy month does not mark it: its older blobs lack the kinds.
    late = make(99, datetime(2024, 1, 2, tzinfo=UTC))
    assert len(app.writer.write([late, *LATER[:3]]).indexed) == 4
    assert app.tables.get("202401", KINDS_PARTITION, KINDS_ROW) is None
    assert kinds_of(app.tables).of("202401") == LEGACY_KINDS
    assert kinds_of(app.tables).of("202402") == frozenset(LOOKUP_COLUMNS)
    writer = build_runtime(app.settings).writer  # a new process: nothing remembered
    assert writer.write([late]).indexed == []
    assert app.tables.get("202401", KINDS_PARTITION, KINDS_ROW) is None
    params = {**SPAN, "resource_group": GROUPS[99 % 3], "text": "2024-01-02"}
    assert keys(search_all(app, params)) == [late["EventKey"]]


def test_indexed_filters_read_postings_and_legacy_months_read_days(
    archive: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    spies = Spies(archive, monkeypatch)
    march = {"since": "2024-03-01", "until": "2024-04-01", "limit": "1000"}
    for filters in ({"resource_group": "rg-dev"}, {"status": "failed"}):
        spies.clear()
        params = {**march, **filters}
        assert keys(search_all(archive, params)) == keys(expected(params))
        assert spies.blobs == []  # postings, then only the matches fetched
        assert sum(spies.places) == len(expected(params))
    # January has no resource group postings: with the subscription's, it needs no day read.
    spies.clear()
    january = {"since": "2024-01-01", "until": "2024-02-01", "limit": "1000"}
    params = {**january, "resource_group": "rg-dev", "subscription": SUB}
    assert keys(search_all(archive, params)) == keys(expected(params))
    assert spies.blobs == [] and spies.places
    # Alone, it reads January's days whole: exact all the same.
    spies.clear()
    params = {**january, "resource_group": "rg-dev"}
    assert keys(search_all(archive, params)) == keys(expected(params))
    assert spies.blobs and not spies.places


def test_a_keyword_is_looked_for_in_what_records_hold_not_in_their_column_names() -> None:
    [record] = [make(7, datetime(2024, 3, 1, tzinfo=UTC))]
    now = datetime(2024, 3, 2, tzinfo=UTC)
    for word in ("caller", "ActivityStatusValue", "Properties_d", "EventKey", "resourceid"):
        assert not matches(record, parse_query({"text": word, "since": "30d"}, now)), word
    for word in ("user3@contoso", "Microsoft.KeyVault", "message", "corr-1"):
        assert matches(record, parse_query({"text": word, "since": "30d"}, now)), word


@pytest.mark.parametrize(
    ("resource_id", "kind"),
    [
        (
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.web/sites/a",
            "microsoft.web/sites",
        ),
        (
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.web/sites/a/slots/b",
            "microsoft.web/sites/slots",
        ),
        ("/subscriptions/s", "microsoft.resources/subscriptions"),
        ("/subscriptions/s/resourceGroups/rg", "microsoft.resources/resourcegroups"),
        (
            "/providers/Microsoft.Management/managementGroups/mg",
            "microsoft.management/managementgroups",
        ),
        ("/subscriptions/s/resourcegroups/rg/providers/microsoft.web", ""),
        ("", ""),
        ("not an id", ""),
    ],
)
def test_resource_type_of_an_id(resource_id: str, kind: str) -> None:
    assert resource_type(resource_id) == kind


@pytest.mark.parametrize(
    "params",
    [
        {"resource_group": "x" * 1025},
        {"resource_type": "//"},
        {"level": "   "},
        {"level": "Bogus"},  # no record holds it: an empty answer would look like "none"
        {"level": "Informationals"},
        {"text": "y" * 2000},
        {"statuses": "Failed"},
    ],
)
def test_bad_values_of_the_new_filters_are_refused(params: dict[str, str]) -> None:
    with pytest.raises(QueryError) as raised:
        parse_query(params, NOW)
    assert next(iter(params))[:6] in str(raised.value)


def test_a_continuation_is_sealed_to_the_new_filters_too(archive: Runtime) -> None:
    params = {**SPAN, "status": "Succeeded", "limit": "1"}
    page = next(pages(archive, params))
    assert page.continuation is not None
    for other in ({"status": "Failed"}, {"status": "Succeeded", "text": "x"}, {}):
        with pytest.raises(QueryError, match="continuation"):
            run_query(
                parse_query({**SPAN, **other, "limit": "1"}, NOW),
                tables=archive.tables,
                reader=archive.reader,
                continuation=page.continuation,
            )


# --- bounded work per page -------------------------------------------------------------------


class FakeClock:
    """A clock that moves on a second each time it is read."""

    def __init__(self) -> None:
        self.now = itertools.count()

    def __call__(self) -> float:
        return float(next(self.now))


@pytest.mark.parametrize("records", [1, 3, 10])
@pytest.mark.parametrize(
    "filters",
    [
        {"text": "rotated"},  # no indexed filter: days read whole
        # a key, most of its records dropped: a batch is what the page lacks (then it stops)
        {"text": "nothing", "subscription": SUB, "limit": "5"},
        {"resource_group": "rg-prod", "text": "rotated"},  # postings, then January's days
        {"level": "Error", "limit": "2"},
    ],
)
def test_a_bounded_page_goes_on_where_it_stopped(
    archive: Runtime, records: int, filters: dict[str, str]
) -> None:
    params = {**SPAN, "limit": "1000", **filters}
    found: list[NormalizedRecord] = []
    stopped = 0
    for page in pages(archive, params, ScanBudget(records=records)):
        found.extend(page.records)
        if page.reached is not None:
            stopped += 1
            assert page.continuation is not None
            assert all(r["TimeGenerated"] >= page.reached for r in found)
            assert SPAN["since"][:10] <= page.reached[:10] <= SPAN["until"][:10]
    assert keys(found) == keys(expected(params))
    assert stopped > 0 or records > 1  # one record a page: the bound stops every search here


def overlapping_blobs(app: Runtime) -> list[NormalizedRecord]:
    """12 writes, each one blob of 10 records spread over the same day: every blob's span
    reaches across every other's, as late or batched deliveries make them."""
    day = datetime(2024, 2, 10, tzinfo=UTC)
    written = []
    for write in range(12):
        records = []
        for n in range(10):
            moment = day + timedelta(seconds=1 + n * 8000 + write)
            index = write * 10 + n
            record = make(index, moment)
            records.append(record)
        assert len(app.writer.write(records).indexed) == len(records)
        written += records
    return written


@pytest.mark.parametrize("budget", [1, 15, 35, 0])
def test_a_bounded_page_over_overlapping_blobs_moves_on_and_ends(app: Runtime, budget: int) -> None:
    # Found from outside: a page stopped by its bound handed back the very token it started
    # from whenever the blobs reaching across its cut took the whole bound: paging never
    # ended (the CLI, the page's "Load more" and the export looped).
    written = overlapping_blobs(app)
    day = {"since": "2024-02-10T00:00:00Z", "until": "2024-02-11T00:00:00Z", "limit": "5"}
    # 0: a bound of seconds spent at every look (a clock that moves on a second a read)
    bound = ScanBudget(records=budget) if budget else ScanBudget(seconds=0.5, clock=FakeClock())
    for filters in (
        {"text": "rotated"},
        {"text": "no-such-word"},
        {"subscription": SUB, "text": "rotated"},  # postings: the keyed walk
    ):
        params = {**day, **filters}
        tokens: list[str] = []
        found: list[NormalizedRecord] = []
        for page in pages(app, params, bound):
            found.extend(page.records)
            if page.continuation is not None:
                assert page.continuation not in tokens, "a page handed back a token again"
                tokens.append(page.continuation)
        query = parse_query(params, NOW)
        wanted = sorted((r for r in written if matches(r, query)), key=order, reverse=True)
        assert keys(found) == keys(wanted)


def test_a_page_stops_within_its_seconds(archive: Runtime) -> None:
    params = {**SPAN, "text": "nothing", "limit": "1000"}
    budget = ScanBudget(seconds=2.5, clock=FakeClock())
    got = list(pages(archive, params, budget))
    assert len(got) > 3 and all(page.reached for page in got[:-1])
    assert keys([r for page in got for r in page.records]) == keys(expected(params))


def request(params: dict[str, str]) -> func.HttpRequest:
    return func.HttpRequest(
        method="GET", url="http://localhost/api/activity", params=params, body=b""
    )


def test_http_says_how_far_a_bounded_page_searched(
    archive: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.services import query_page

    monkeypatch.setattr(query_page, "MAX_SCAN_RECORDS", 2)
    params = {**SPAN, "text": "rotated", "limit": "1000"}
    response = handle_activity(request(params), archive, NOW)
    assert response.status_code == 200
    body = orjson.loads(response.get_body())
    assert body["continuation"]
    assert body["scanned"]["complete"] is False
    until = body["scanned"]["until"]
    assert date.fromisoformat(until[:10]) >= date(2024, 1, 1)
    assert all(r["TimeGenerated"] >= until for r in body["records"])
    # A page that is not stopped by the bound says nothing of it.
    monkeypatch.setattr(query_page, "MAX_SCAN_RECORDS", 10_000)
    body = orjson.loads(handle_activity(request(params), archive, NOW).get_body())
    assert set(body) == {"records", "continuation"}
    assert keys(body["records"]) == keys(expected(params))


HOSTILE = ["' or 1 eq 1", "rg' or PartitionKey ne '", "@pk", "%27", "Ünïcødé'例え"]


def test_hostile_values_of_the_new_filters_travel_bound_and_match_nothing(
    archive: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.core.query_spec import QUERY_FILTERS
    from shared.services.histogram import histogram

    sent = table_queries(monkeypatch)
    for name in ("resource_group", "resource_type", "status", "level", "text"):
        for value in HOSTILE:
            params = {**SPAN, name: value, "limit": "1000"}
            if name == "level":  # a level is one of five names: anything else is refused
                with pytest.raises(QueryError, match="level must be one of"):
                    search_all(archive, params)
                continue
            assert search_all(archive, params) == []
            counts = histogram({**params, "split": "category"}, NOW, archive.tables).as_dict()
            assert counts["total"] == 0 or name in ("resource_type", "text")
    assert sent
    for query_filter, parameters in sent:
        assert query_filter in QUERY_FILTERS, query_filter
        assert all("'" not in str(value) for value in parameters.values()), parameters


def test_a_blob_whose_several_members_a_page_needs_is_read_once(
    app: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = datetime(2024, 3, 9, tzinfo=UTC)
    records = [make(5 * i, day + timedelta(seconds=60 * i)) for i in range(200)]  # SUB only
    assert len(app.writer.write(records).indexed) == 200  # a blob a category: 2 or 3 members
    assert {r["CategoryValue"] for r in records} == {"Administrative", "Policy"}
    spies = Spies(app, monkeypatch)
    params = {"since": "2024-03-09", "until": "2024-03-10", "subscription": OTHER_SUB}
    want = sorted(records, key=lambda r: (r["TimeGenerated"], r["EventKey"]), reverse=True)
    assert keys(search_all(app, {**params, "limit": "1000"})) == keys(want)
    assert spies.places == [200] and sorted(set(spies.reads)) == sorted(spies.reads)  # once
    assert len(spies.reads) == 2 and spies.blobs == []  # a read a blob, not parsed whole
    spies.clear()
    assert keys(search_all(app, {**params, "limit": "10"})) == keys(want)  # pages of 10
    # a page reads what it needs of a blob or two: one range each
    assert 200 <= sum(spies.places) <= 220 and spies.blobs == []  # (the token's second again)
    assert 20 <= len(spies.reads) <= 2 * 21  # at most a read of each blob a page (21 pages)


def test_a_keyword_is_looked_for_as_typed_not_as_json_escapes_it() -> None:
    """`text` looks inside the record's JSON text: a quote or a backslash in a value is there
    as its escape, so the keyword is escaped the same way before it is looked for."""
    event = {
        "time": "2024-03-01T10:00:00.0000000Z",
        "caller": 'say "hi"@contoso.com',
        "properties": {"path": "C:\\temp\\x", "note": "ünïcode ✓"},
    }
    record = normalize(event, source="test", raw="")
    assert not isinstance(record, Rejection)
    since = {"since": "2024-02-01", "until": "2024-04-01"}

    def found(text: str) -> bool:
        return matches(record, parse_query({**since, "text": text}, NOW))

    assert found('say "hi"') and found("c:\\temp\\x") and found("ÜNÏCODE ✓")
    assert not found("c:\\\\temp")  # the escape itself is not what the value holds


@pytest.mark.parametrize(
    ("given", "level"),
    [("critical", "Critical"), ("ERROR", "Error"), ("Information", "Informational"),
     (" Verbose ", "Verbose"), ("3", "Warning")],
)  # fmt: skip
def test_a_level_is_read_as_the_normalizer_reads_it(given: str, level: str) -> None:
    assert parse_query({"level": given}, NOW).level == level


def test_a_bad_level_names_the_levels() -> None:
    with pytest.raises(QueryError, match="Critical, Error, Warning, Informational"):
        parse_query({"level": "Bogus"}, NOW)
