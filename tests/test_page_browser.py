"""The search page in a real browser (headless Chromium through Playwright), against the app's
own HTTP functions served by `python -m shared serve`'s server on a free loopback port, on
Azurite holding generated events, a resource's whole life and a hostile event.

One browser and one data set for the module; each test opens its own browser context. Every
test also fails on a dialog (an alert that ran) or a script error or Content-Security-Policy
violation the page reports. A screenshot is kept in tests/artifacts/.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit
from urllib.request import Request, urlopen

import orjson
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page

from functions.search_http import CONTENT_SECURITY_POLICY
from shared import settings as names
from shared.bootstrap import runtime
from shared.core.normalize import normalize_input
from shared.tools.azurite import Azurite
from shared.tools.generate import generate_events
from shared.tools.local_host import app_settings
from shared.tools.serve import local_settings, page_url, serving
from tests.events import activity_event, envelope
from tests.page_driver import (
    chromium,
    missing_browser,
    searched,
    shown_cells,
    shown_keys,
    wait_for_search,
    wait_idle,
)

pytestmark = pytest.mark.e2e  # the app's registered functions, served over HTTP

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
DAY = (NOW - timedelta(days=2)).replace(hour=9)  # the planted events' day (UTC), 09:00-16:00
SUB_A = "a1b2c3d4-0000-4000-8000-00000000000a"
SUB_B = "a1b2c3d4-0000-4000-8000-00000000000b"
GROUPS = f"/subscriptions/{SUB_A}/resourceGroups"
VAULT = f"{GROUPS}/rg-vault/providers/Microsoft.KeyVault/vaults/kv-audit-01"
TARGET = "mallory@contoso.example"
DELETE_CORRELATION = "d0d0d0d0-0000-4000-8000-0000000de1e7"
TICKET = "CHG-4242"
SCRIPT = "<script>alert(1)</script>"
LONG_CALLER = "long-name@contoso.example"
BOM_CALLER = "\ufeffbom@contoso.example"  # Python strip keeps a BOM; JavaScript trim takes it
LONG_RESOURCE = f"{GROUPS}/rg-long/providers/Microsoft.Web/sites/{'a' * 1100}"
IMG = '"><img src=x onerror=alert(1)>'
HOSTILE_RESOURCE = f"{GROUPS}/rg-x/providers/Microsoft.Web/sites/{IMG}"
PAGE_SIZE = 100
# Columns of the results table (0: time) that show a filter's own value.
FILTER_COLUMN = {
    "operation": 1,
    "status": 2,
    "category": 3,
    "level": 4,
    "caller": 5,
    "resource_group": 6,
    "resource": 7,
    "subscription": 8,
}
SELECTS = ("category", "status", "level")


def _event(
    minutes: float,
    operation: str,
    result: str,
    correlation: str,
    caller: str,
    resource: str = VAULT,
    **extra: Any,
) -> dict[str, Any]:
    moment = DAY + timedelta(minutes=minutes)
    return activity_event(
        0,
        time=f"{moment:%Y-%m-%dT%H:%M:%S}.0000000Z",
        operationName=operation,
        resultType=result,
        resultSignature=result,
        correlationId=correlation,
        caller=caller,
        resourceId=resource,
        **extra,
    )


def planted() -> list[dict[str, Any]]:
    """A key vault created, changed and deleted (the deletion in three events of one
    correlation id), what its deleter did besides that day, and a hostile event."""
    create, change = "c0c0c0c0-0000-4000-8000-00000000c0de", "c4c4c4c4-0000-4000-8000-0000c4a49e00"
    write, delete = "MICROSOFT.KEYVAULT/VAULTS/WRITE", "MICROSOFT.KEYVAULT/VAULTS/DELETE"
    account = f"{GROUPS}/rg-data/providers/Microsoft.Storage/storageAccounts/stdata"
    return [
        _event(0, write, "Start", create, "alice@contoso.example"),
        _event(0.5, write, "Success", create, "alice@contoso.example"),
        _event(120, write, "Start", change, "bob@contoso.example"),
        _event(120.5, write, "Success", change, "bob@contoso.example"),
        _event(300, delete, "Start", DELETE_CORRELATION, TARGET),
        _event(300.25, delete, "Accept", DELETE_CORRELATION, TARGET),
        _event(
            300.5,
            delete,
            "Success",
            DELETE_CORRELATION,
            TARGET,
            properties={"ticket": TICKET, "statusCode": "OK"},
        ),
        _event(
            305,
            "MICROSOFT.STORAGE/STORAGEACCOUNTS/LISTKEYS/ACTION",
            "Success",
            "e1e1e1e1-0000-4000-8000-000000000001",
            TARGET,
            account,
        ),
        _event(
            310,
            "MICROSOFT.AUTHORIZATION/ROLEASSIGNMENTS/WRITE",
            "Success",
            "e1e1e1e1-0000-4000-8000-000000000002",
            TARGET,
            f"/subscriptions/{SUB_A}",
        ),
        _event(
            400,
            "MICROSOFT.WEB/SITES/WRITE",
            "Success",
            "bad0bad0-0000-4000-8000-000000000bad",
            SCRIPT,
            HOSTILE_RESOURCE,
            properties={"note": SCRIPT, "html": IMG},
        ),
        _event(
            420,
            "MICROSOFT.WEB/SITES/WRITE",
            "Success",
            "1011a000-0000-4000-8000-000000001011",
            LONG_CALLER,
            LONG_RESOURCE,
        ),
        _event(
            430,
            "MICROSOFT.WEB/SITES/WRITE",
            "Success",
            "b0b0b0b0-0000-4000-8000-00000000b0b0",
            BOM_CALLER,
            f"{GROUPS}/rg-bom/providers/Microsoft.Web/sites/bom",
        ),
    ]


@dataclass
class Site:
    page: str  # the search page's URL
    api: str  # http://127.0.0.1:port/api
    records: list[dict[str, Any]] = field(default_factory=list)

    def get(self, route: str, params: dict[str, str]) -> tuple[dict[str, str], bytes]:
        with urlopen(Request(f"{self.api}/{route}?{urlencode(params)}"), timeout=30) as answer:
            return dict(answer.headers.items()), answer.read()

    def activity(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """The API's first page (GET /api/activity, as automation calls it)."""
        records: list[dict[str, Any]] = orjson.loads(self.get("activity", params)[1])["records"]
        return records

    def export(self, params: dict[str, str]) -> bytes:
        """Every page of an export from the API, following X-Continuation."""
        body, query = b"", dict(params)
        while True:
            headers, page = self.get("activity", query)
            body += page
            if not headers.get("X-Continuation"):
                return body
            query["continuation"] = headers["X-Continuation"]


@pytest.fixture(scope="module")
def site(azurite: Azurite) -> Iterator[Site]:
    events = generate_events(
        1100,
        seed=20,
        start=NOW - timedelta(days=3),
        span=timedelta(days=2),
        subscriptions=[SUB_A, SUB_B],
    )
    records, rejections = normalize_input(envelope([*events, *planted()]), "page-test")
    assert not rejections
    values = {
        **local_settings(azurite.connection_string),
        names.STORE_PREFIX: f"page{NOW:%d%H}",
    }
    with app_settings(values):
        app = runtime()
        app.writer.write(records)
        with serving() as server:
            yield Site(page_url(server), page_url(server).rsplit("/", 1)[0], records)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Browser]:
    why = missing_browser()
    if why:
        pytest.fail(why)  # never skipped: the page is only tested here
    with chromium() as launched:
        yield launched


@dataclass
class Watched:
    page: Page
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Watched]]:
    """A new browser context's page; every alert and script error it reports fails the test."""
    opened: list[Watched] = []

    def open_one(**options: Any) -> Watched:
        context = browser.new_context(
            viewport={"width": 1500, "height": 950}, accept_downloads=True, **options
        )
        watched = Watched(context.new_page())

        def on_dialog(dialog: Dialog) -> None:
            watched.dialogs.append(dialog.message)
            dialog.dismiss()

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error" and "Failed to load resource" not in message.text:
                watched.errors.append(message.text)  # a CSP violation is reported here

        watched.page.on("dialog", on_dialog)
        watched.page.on("console", on_console)
        watched.page.on("pageerror", lambda error: watched.errors.append(str(error)))
        opened.append(watched)
        return watched

    yield open_one
    for watched in opened:
        watched.page.context.close()
        assert not watched.dialogs, f"a dialog opened: {watched.dialogs}"
        assert not watched.errors, f"the page reported errors: {watched.errors}"


@pytest.fixture
def page(site: Site, open_page: Callable[..., Watched]) -> Page:
    """The page opened with no filters (its default search shown)."""
    watched = open_page()
    watched.page.goto(site.page)
    wait_for_search(watched.page, 0)
    return watched.page


def address(page: Page) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(page.url).fragment).items()}


def go(page: Page, site: Site, **params: str) -> None:
    """Open the search these parameters name, as a bookmark would."""
    url = f"{site.page}#{urlencode(params, quote_via=quote)}"
    if page.url.startswith(site.page):
        searched(page, lambda: page.goto(url))
    else:
        page.goto(url)
        wait_for_search(page, 0)


# --- tests ------------------------------------------------------------------------------------


def test_every_answer_the_page_loads_carries_the_policy(
    site: Site, open_page: Callable[..., Watched]
) -> None:
    watched = open_page()
    seen: dict[str, dict[str, str]] = {}
    watched.page.on("response", lambda response: seen.update({response.url: response.headers}))
    watched.page.goto(site.page)
    wait_for_search(watched.page, 0)
    watched.page.wait_for_function("() => document.querySelector('#timeline svg') !== null")
    paths = {urlsplit(url).path for url in seen}
    assert {
        "/api/search",
        "/api/search/assets/app.js",
        "/api/search/assets/app.css",
        "/api/search/activity",
        "/api/search/histogram",
    } <= paths
    for url, headers in seen.items():
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY, url
        assert headers["x-content-type-options"] == "nosniff", url
        assert headers["referrer-policy"] == "no-referrer", url
    assert all(urlsplit(url).netloc == urlsplit(site.page).netloc for url in seen)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("subscription", SUB_B),
        ("resource_group", "rg-web-prod"),
        ("resource", VAULT),
        ("resource_type", "Microsoft.KeyVault/vaults"),
        ("operation", "microsoft.keyvault/vaults/delete"),
        ("caller", TARGET),
        ("category", "Security"),
        ("status", "Failed"),
        ("level", "Critical"),
        ("correlation_id", DELETE_CORRELATION),
        ("text", TICKET),
    ],
)
def test_search_by_each_filter(site: Site, page: Page, name: str, value: str) -> None:
    if name in SELECTS:
        page.select_option(f"select[name={name}]", value)
    else:
        page.fill(f"input[name={name}]", value)
    searched(page, lambda: page.click("#search"))
    wanted = site.activity({name: value, "since": "7d", "limit": str(PAGE_SIZE)})
    assert wanted, "the data holds a match for every filter"
    assert shown_keys(page) == [record["EventKey"] for record in wanted]
    assert address(page) == {name: value, "since": "7d"}  # the address holds the search
    column = FILTER_COLUMN.get(name)
    if column is not None:
        assert {row[column].lower() for row in shown_cells(page)} == {value.lower()}
    times = [row[0] for row in shown_cells(page)]
    assert times == sorted(times, reverse=True)  # newest first


def test_a_bookmarked_search_opens_as_it_was_and_back_returns(
    site: Site, page: Page, open_page: Callable[..., Watched]
) -> None:
    page.fill("input[name=caller]", TARGET)
    page.select_option("select[name=range]", "30d")
    searched(page, lambda: page.click("#search"))
    shown = shown_keys(page)
    assert len(shown) == 5
    other = open_page().page
    other.goto(page.url)
    wait_for_search(other, 0)
    assert shown_keys(other) == shown
    assert other.input_value("input[name=caller]") == TARGET
    assert other.input_value("select[name=range]") == "30d"
    searched(page, page.go_back)
    assert page.input_value("input[name=caller]") == ""
    assert len(shown_keys(page)) == PAGE_SIZE


def test_more_records_load_when_asked_and_on_scroll(site: Site, page: Page) -> None:
    first = site.activity({"since": "7d", "limit": str(PAGE_SIZE)})
    assert shown_keys(page) == [record["EventKey"] for record in first]
    assert page.text_content("#count") == "100 records shown, more available"
    page.click("#more")
    page.wait_for_function("() => document.querySelectorAll('#results tbody tr').length > 100")
    wait_idle(page)
    two = site.activity({"since": "7d", "limit": str(2 * PAGE_SIZE)})
    assert shown_keys(page) == [record["EventKey"] for record in two]
    page.locator("#sentinel").scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelectorAll('#results tbody tr').length > 200")
    wait_idle(page)
    assert "more available" in (page.text_content("#count") or "")


def test_detail_copy_and_the_links_to_its_operation_and_resource_history(
    site: Site, open_page: Callable[..., Watched]
) -> None:
    watched = open_page()
    page = watched.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    go(page, site, resource=VAULT, since="all")
    rows = shown_cells(page)
    assert [row[1] for row in rows] == ["microsoft.keyvault/vaults/delete"] * 3 + [
        "microsoft.keyvault/vaults/write"
    ] * 4  # the resource's whole life, newest first: deleted, changed, created
    assert [row[5] for row in rows] == [TARGET] * 3 + ["bob@contoso.example"] * 2 + [
        "alice@contoso.example"
    ] * 2
    page.click("#results tbody tr >> nth=0")
    detail = page.locator("#detail")
    assert detail.is_visible()
    (record,) = [r for r in site.records if r["EventKey"] == shown_keys(page)[0]]
    text = detail.text_content() or ""
    for value in (record["CorrelationId"], record["EventKey"], TICKET, "Properties", "Claims"):
        assert value in text
    # A long name (a claim's URI) wraps; its value keeps most of the width (found from outside:
    # claim values wrapped every few characters beside their names).
    narrowest = page.evaluate(
        """() => Math.min(...[...document.querySelectorAll('#detail dl')].flatMap(dl =>
             [...dl.children].filter(c => c.tagName === 'DD' && !c.querySelector('dl'))
               .map(dd => dd.getBoundingClientRect().width / dl.getBoundingClientRect().width)))"""
    )
    assert narrowest >= 0.5, narrowest
    beside = page.evaluate(
        """() => [...document.querySelectorAll('#detail dl')].every(dl => {
             const [name, value] = [dl.querySelector('dt'), dl.querySelector('dd')];
             return !name || Math.abs(name.getBoundingClientRect().top
               - value.getBoundingClientRect().top) < 3; })"""
    )
    assert beside, "names and values are no longer side by side"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "search-page.png")
    print(f"screenshot: {ARTIFACTS / 'search-page.png'}")
    page.click("#copy-json")
    page.wait_for_function("() => document.querySelector('#copy-status').textContent === 'Copied'")
    assert orjson.loads(page.evaluate("navigator.clipboard.readText()")) == record

    searched(page, lambda: page.click("a.link-correlation"))
    assert address(page) == {"correlation_id": DELETE_CORRELATION, "since": "all"}
    assert [row[2] for row in shown_cells(page)] == ["Succeeded", "Accepted", "Started"]
    page.click("#results tbody tr >> nth=0")
    searched(page, lambda: page.click("a.link-resource"))
    assert address(page) == {"resource": record["ResourceId"], "since": "all"}
    assert len(shown_keys(page)) == 7
    page.click("#results tbody tr >> nth=0")
    searched(page, lambda: page.click("a.link-caller-day"))
    day = DAY.replace(hour=0)
    assert address(page) == {
        "caller": TARGET,
        "since": f"{day:%Y-%m-%dT%H:%M:%S}Z",
        "until": f"{day + timedelta(days=1):%Y-%m-%dT%H:%M:%S}Z",
    }
    assert [row[1] for row in shown_cells(page)] == [
        "microsoft.authorization/roleassignments/write",
        "microsoft.storage/storageaccounts/listkeys/action",
        "microsoft.keyvault/vaults/delete",
        "microsoft.keyvault/vaults/delete",
        "microsoft.keyvault/vaults/delete",
    ]  # who deleted it, and what else they did that day


def test_a_timeline_bar_narrows_the_range(site: Site, page: Page) -> None:
    page.wait_for_function("() => document.querySelectorAll('#timeline g.bucket').length > 0")
    bars = page.locator("#timeline g.bucket")
    titles = [title for title in bars.locator("title").all_text_contents()]
    assert len(titles) == 8  # by day: the week's seven and the day it starts in
    busy = max(i for i, title in enumerate(titles) if not title.endswith("no events"))
    bar = bars.nth(busy)
    since, until = bar.get_attribute("data-since"), bar.get_attribute("data-until")
    searched(page, bar.click)
    assert address(page) == {"since": since, "until": until}
    assert since and until
    wanted = site.activity({"since": since, "until": until, "limit": str(PAGE_SIZE)})
    assert shown_keys(page) == [record["EventKey"] for record in wanted] and wanted
    shown_since, shown_until = (f"{t[:10]} {t[11:19]}" for t in (since, until))
    assert all(shown_since <= row[0] < shown_until for row in shown_cells(page))


def test_exports_hold_every_page_as_the_api_gives_them(site: Site, page: Page) -> None:
    with page.expect_download() as started:
        page.click("#export-csv")
    download = started.value
    saved = Path(download.path()).read_bytes()
    assert download.suggested_filename.startswith("activity-all-")
    assert download.suggested_filename.endswith(".csv")
    assert saved == site.export({"since": "7d", "format": "csv", "limit": "1000"})
    rows = list(csv.reader(io.StringIO(saved.decode())))
    keys = {record["EventKey"] for record in site.records}  # every event is in the last week
    assert rows[0][:3] == ["Operation name", "Status", "Time"]
    assert len(rows) - 1 == len(keys) > 1000  # all of them: more than one page
    page.wait_for_function("() => !document.querySelector('#export-cancel').offsetParent")
    with page.expect_download() as started:
        page.click("#export-jsonl")
    lines = Path(started.value.path()).read_bytes().splitlines()
    assert len(lines) == len(keys)
    assert {orjson.loads(line)["EventKey"] for line in lines} == keys


def test_a_value_too_long_to_search_by_offers_no_link_that_would_be_refused(
    site: Site, open_page: Callable[..., Watched]
) -> None:
    """A filter value takes at most 1,024 characters: a resource id longer than that gets no
    "resource history" link (the search would be refused), and says why (found from outside)."""
    page = open_page().page
    go(page, site, caller=LONG_CALLER, since="all")
    assert len(shown_keys(page)) == 1
    page.click("#results tbody tr >> nth=0")
    assert page.locator("a.link-resource").count() == 0
    assert page.locator("a.link-correlation").count() == 1
    assert page.locator("a.link-caller-day").count() == 1
    assert "longer than the 1,024 characters" in page.inner_text("#detail-links")


def test_the_links_of_a_value_starting_with_a_bom_find_it(
    site: Site, open_page: Callable[..., Watched]
) -> None:
    """The page trimmed values as JavaScript does (a leading U+FEFF too), the API as Python
    does (not it): its own link then searched for another caller (found from outside)."""
    page = open_page().page
    go(page, site, caller=BOM_CALLER, since="all")
    [key] = shown_keys(page)
    page.click("#results tbody tr >> nth=0")
    searched(page, lambda: page.click("a.link-caller-day"))
    assert address(page)["caller"] == BOM_CALLER
    assert shown_keys(page) == [key]


def test_hostile_values_show_as_text_and_run_nothing(
    site: Site, open_page: Callable[..., Watched]
) -> None:
    watched = open_page()
    page = watched.page
    go(page, site, caller=SCRIPT, since="all")
    ((row),) = shown_cells(page)
    assert row[5] == SCRIPT
    assert row[7] == HOSTILE_RESOURCE.lower()
    page.click("#results tbody tr >> nth=0")
    text = page.inner_text("#detail")
    assert SCRIPT in text and IMG in text
    assert page.input_value("input[name=caller]") == SCRIPT
    searched(page, lambda: page.click("a.link-resource"))  # its id in the address, as text
    assert len(shown_keys(page)) == 1
    page.fill("input[name=resource]", "")
    page.fill("input[name=text]", IMG[2:])  # `"` is escaped in the record's JSON text
    searched(page, lambda: page.click("#search"))
    assert [row[5] for row in shown_cells(page)] == [SCRIPT]
    assert page.locator("img").count() == 0
    assert page.evaluate("document.querySelectorAll('script').length") == 1
    assert not watched.dialogs  # also checked for every test when its page closes


def test_times_in_local_time_and_a_custom_range(
    site: Site, open_page: Callable[..., Watched]
) -> None:
    page = open_page(timezone_id="Asia/Kolkata").page  # UTC+05:30, no daylight saving
    go(page, site, caller=TARGET, since="all")
    utc_time = shown_cells(page)[0][0]
    searched(page, lambda: page.select_option("#tz", "local"))
    moment = datetime.fromisoformat(utc_time) + timedelta(hours=5, minutes=30)
    assert shown_cells(page)[0][0] == f"{moment:%Y-%m-%d %H:%M:%S}"
    assert page.text_content("#time-head") == "Time (local time)"
    page.select_option("select[name=range]", "custom")
    start = DAY + timedelta(minutes=302)  # after the deletion, in UTC
    local = start + timedelta(hours=5, minutes=30)
    page.fill("input[name=from]", f"{local:%Y-%m-%dT%H:%M:%S}")
    page.fill("input[name=to]", f"{local + timedelta(hours=1):%Y-%m-%dT%H:%M:%S}")
    searched(page, lambda: page.click("#search"))
    assert address(page)["since"] == f"{start:%Y-%m-%dT%H:%M:%S}Z"
    assert len(shown_keys(page)) == 2  # the list-keys and the role assignment


def test_a_local_range_on_a_night_clocks_go_back_searches_the_range_it_shows(
    site: Site, open_page: Callable[..., Watched]
) -> None:
    """01:30 comes twice in New York on 2026-11-01: a range opened at the second one (06:30 UTC)
    was searched from the first (05:30 UTC) once a filter was added (found from outside)."""
    page = open_page(timezone_id="America/New_York").page
    since, until = "2026-11-01T06:30:00Z", "2026-11-01T08:00:00Z"
    go(page, site, since=since, until=until, tz="local")
    assert page.input_value("input[name=from]").startswith("2026-11-01T01:30")  # EST, the 2nd
    page.fill("input[name=caller]", TARGET)
    searched(page, lambda: page.click("#search"))
    assert (address(page)["since"], address(page)["until"]) == (since, until)


def test_the_readme_shows_a_screenshot_of_the_page() -> None:
    root = Path(__file__).resolve().parents[1]
    shot = root / "docs" / "search-page.png"  # copied from tests/artifacts/ after a run
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "docs/search-page.png" in (root / "README.md").read_text("utf-8")


def test_a_refused_search_says_why(site: Site, open_page: Callable[..., Watched]) -> None:
    page = open_page().page
    go(page, site, since="2024-05-02T00:00:00Z", until="2024-05-01T00:00:00Z")
    message = page.locator("#message")
    assert message.is_visible()
    assert "The search was refused: since" in (message.text_content() or "")
    assert "must be before until" in (message.text_content() or "")
    assert shown_keys(page) == [] and page.text_content("#count") == ""
