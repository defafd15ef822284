"""The search page's HTTP functions as function_app registered them, called with real
azure.functions.HttpRequest objects: who may see them, what every answer carries, which files
exist, and that the page's data routes answer exactly as the API's own do."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Mapping
from html.parser import HTMLParser
from typing import Any

import azure.functions as func
import orjson
import pytest

from functions.search_http import CONTENT_SECURITY_POLICY
from shared import settings as names
from shared.bootstrap import runtime
from shared.core.normalize import normalize_input
from shared.settings import Settings, SettingsError
from shared.tools.azurite import Azurite
from shared.tools.local_host import app_settings, registered
from shared.web import ASSETS, FILES, PAGE, total_size, web_file
from tests.events import activity_event, envelope

PAGE_ROUTES = ("search", "search_assets", "search_activity", "search_histogram")
ROLE = "ActivityLog.Reader"
HOSTILE = "<script>alert(1)</script>"


def _request(route: str, params: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
    name = kwargs.pop("name", None)
    return func.HttpRequest(
        "GET",
        f"http://127.0.0.1/api/{route}",
        params=dict(params or {}),
        route_params={"name": name} if name is not None else {},
        body=b"",
        **kwargs,
    )


def call(
    function: str, params: Mapping[str, str] | None = None, **kwargs: Any
) -> func.HttpResponse:
    route = {"search": "search", "search_assets": "search/assets/x"}.get(function, function)
    response: func.HttpResponse = registered(function)(_request(route, params, **kwargs))
    return response


def principal(*claims: tuple[str, str]) -> dict[str, str]:
    """The headers App Service authentication sets for a user signed in with Entra ID."""
    doc = {"auth_typ": "aad", "claims": [{"typ": typ, "val": val} for typ, val in claims]}
    return {
        "X-MS-CLIENT-PRINCIPAL": base64.b64encode(orjson.dumps(doc)).decode(),
        "X-MS-CLIENT-PRINCIPAL-IDP": "aad",
    }


@pytest.fixture
def page_settings(azurite: Azurite, settings: Settings) -> Iterator[dict[str, str]]:
    """App settings for the page's functions on this test's own store (signed-in mode)."""
    values = {
        names.STORAGE_CONNECTION: azurite.connection_string,
        names.STORE_PREFIX: settings.store_prefix,
        names.PAGE_ALLOWED_ROLE: ROLE,
    }
    with app_settings(values):
        yield values


def assert_secured(response: func.HttpResponse, cache: str) -> None:
    headers = response.headers
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == cache


def _asset_kwargs(function: str) -> dict[str, Any]:
    return {"name": "app.js"} if function == "search_assets" else {}


@pytest.mark.parametrize("function", PAGE_ROUTES)
def test_every_route_refuses_whoever_is_not_signed_in_or_lacks_the_role(
    page_settings: dict[str, str], function: str
) -> None:
    kwargs = _asset_kwargs(function)
    anonymous = call(function, **kwargs)
    assert (anonymous.status_code, anonymous.get_body()) == (401, b"sign-in required")
    assert_secured(anonymous, "no-store")
    # Headers a caller forges without App Service authentication are not the documented shape.
    forged = call(function, headers={"X-MS-CLIENT-PRINCIPAL": "eyJub3QiOiAianNvbiJ9"}, **kwargs)
    assert forged.status_code == 401
    without_role = call(function, headers=principal(("name", "someone")), **kwargs)
    assert without_role.status_code == 403
    assert b"app role" in without_role.get_body()
    allowed = call(function, headers=principal(("roles", ROLE)), **kwargs)
    assert allowed.status_code == 200, allowed.get_body()
    assert_secured(allowed, "no-cache" if function in ("search", "search_assets") else "no-store")


def test_a_bad_page_access_setting_shows_nothing(page_settings: dict[str, str]) -> None:
    with app_settings({names.PAGE_ACCESS: "open-to-all"}), pytest.raises(SettingsError) as raised:
        call("search")
    assert raised.value.setting == names.PAGE_ACCESS


def test_only_the_pages_own_files_are_served(page_settings: dict[str, str]) -> None:
    signed_in = principal(("roles", ROLE))
    for name in ASSETS:
        found = call("search_assets", name=name, headers=signed_in)
        assert found.status_code == 200
        assert found.get_body() == (web_file(name) or pytest.fail(name)).body
        assert found.headers["Content-Type"] == FILES[name]
    for name in (PAGE, "../function_app.py", "__init__.py", "app.js/", "APP.JS", "", "x"):
        missing = call("search_assets", name=name, headers=signed_in)
        assert missing.status_code == 404, name
        assert_secured(missing, "no-cache")
    page = call("search", headers=signed_in)
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    # A browser's current copy is revalidated, not sent again.
    current = {**signed_in, "If-None-Match": page.headers["ETag"]}
    assert (call("search", headers=current).status_code, call("search").status_code) == (304, 401)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if self.tags and self.tags[-1][0] == "script":
            self.script_text += data.strip()


def test_the_page_source_holds_no_inline_code_nothing_from_elsewhere_and_no_key() -> None:
    page = (web_file(PAGE) or pytest.fail(PAGE)).body.decode()
    parsed = _Tags()
    parsed.feed(page)
    assert not parsed.script_text, "inline script: the policy would block it"
    for tag, attributes in parsed.tags:
        assert "style" not in attributes, f"inline style on <{tag}>"
        assert not any(name.startswith("on") for name in attributes), f"handler on <{tag}>"
        for link in (attributes.get("src"), attributes.get("href")):
            assert link is None or link == "data:," or link.startswith("search/assets/"), link
    sources = b"".join((web_file(name) or pytest.fail(name)).body for name in FILES).decode()
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", sources), "another origin named"
    assert not re.search(r"code=|x-functions-key|Bearer|AccountKey", sources, re.IGNORECASE)
    assert ".innerHTML" not in sources and "insertAdjacentHTML" not in sources
    assert "eval(" not in sources and "new Function" not in sources
    assert total_size() <= 300_000


def _ingest() -> list[dict[str, Any]]:
    events = [activity_event(n) for n in range(12)]
    events.append(activity_event(40, caller=HOSTILE))
    records, rejections = normalize_input(envelope(events), "test")
    assert not rejections
    runtime().writer.write(records)
    return records


@pytest.mark.parametrize(
    "params",
    [
        {"caller": HOSTILE, "since": "all-of-2024"},  # refused alike: a bad parameter
        {"caller": HOSTILE, "since": "2024-01-01"},
        {"resource_group": "RG-1", "since": "2024-01-01", "limit": "2"},
        {"since": "2024-05-01", "until": "2024-05-02", "format": "csv", "limit": "5"},
        {"since": "2024-05-01", "until": "2024-05-02", "format": "jsonl"},
    ],
)
def test_the_pages_data_is_the_apis_answer(
    page_settings: dict[str, str], params: dict[str, str]
) -> None:
    _ingest()
    signed_in = principal(("roles", ROLE))
    ours = call("search_activity", params, headers=signed_in)
    api = call("activity", params)
    assert (ours.status_code, ours.get_body()) == (api.status_code, api.get_body())
    assert ours.get_body() or ours.status_code != 200
    for header in ("Content-Type", "Content-Disposition", "X-Continuation"):
        assert ours.headers.get(header) == api.headers.get(header)
    assert_secured(ours, "no-store")
    if params.get("caller") == HOSTILE and ours.status_code == 200:
        (record,) = orjson.loads(ours.get_body())["records"]
        assert record["Caller"] == HOSTILE  # data stays data: the page shows it as text


def test_the_pages_timeline_is_the_apis_histogram(page_settings: dict[str, str]) -> None:
    _ingest()
    params = {"since": "2024-05-01", "until": "2024-05-02", "split": "category"}
    ours = call("search_histogram", params, headers=principal(("roles", ROLE)))
    api = call("activity_histogram", params)
    assert ours.status_code == api.status_code == 200
    assert ours.get_body() == api.get_body()
    assert orjson.loads(ours.get_body())["total"] == 13
    assert_secured(ours, "no-store")


def test_the_page_ships_with_the_app() -> None:
    from tests.test_shipping import shipped_files

    shipped = set(shipped_files())
    assert {f"shared/web/{name}" for name in FILES} | {"shared/web/__init__.py"} <= shipped
    assert "functions/search_http.py" in shipped and "shared/tools/serve.py" not in shipped
