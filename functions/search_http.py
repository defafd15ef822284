"""The search page: GET /api/search (the page), /api/search/assets/{name} (its script and
style), /api/search/activity and /api/search/histogram (the query API's own handlers, for the
page's requests).

Auth level ANONYMOUS at the host, because a person's browser holds no function key (and must
not: the page's source holds no key or token). In Azure, App Service authentication (Microsoft
Entra ID sign-in, infra/modules/site-auth.bicep) stands in front, and every route here first
asks shared.core.access whether the principal it passed on may see the page; `python -m shared
serve` runs them on loopback with that check in its local mode. Automation keeps
/api/activity, behind a function key.

Every answer of these routes carries the same headers: a Content-Security-Policy that lets the
page run only its own script and style from this origin (no inline code, nothing from another
origin, no framing, no form sent elsewhere), nosniff, no referrer (a URL holds the filters),
and a Cache-Control: the page revalidated by its ETag, archive data never kept.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus

import azure.functions as func

from functions import shell
from functions.query_http import handle_activity, handle_histogram
from shared.adapters import telemetry
from shared.bootstrap import Runtime
from shared.core.access import page_access_denied
from shared.web import PAGE, web_file

bp = func.Blueprint()  # azure-functions leaves it unannotated

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
FILE_CACHE = "no-cache"  # kept, but revalidated every time: a new deploy shows at once
DATA_CACHE = "no-store"  # archive data (and refusals) are never kept by a browser or proxy


def secured(response: func.HttpResponse, cache: str) -> func.HttpResponse:
    """The response with the page's security headers and this Cache-Control."""
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    response.headers["Cache-Control"] = cache
    return response


def _message(status: int, text: str) -> func.HttpResponse:
    return secured(func.HttpResponse(text, status_code=status, mimetype="text/plain"), DATA_CACHE)


def guarded(
    req: func.HttpRequest, app: Runtime, answer: Callable[[], func.HttpResponse], cache: str
) -> func.HttpResponse:
    """`answer()` when the request may see the page, else its refusal (401 or 403); secured.

    Bad page-access settings raise SettingsError (the shell logs and counts it): nothing is
    shown while who may see it is unknown."""
    denied = page_access_denied(dict(req.headers), app.settings.page_access)
    if denied is not None:
        return _message(*denied)
    return secured(answer(), cache)


def file_response(req: func.HttpRequest, name: str) -> func.HttpResponse:
    """One of the page's files by its allow-listed name (404 for any other), or 304 when the
    browser's copy is current."""
    found = web_file(name)
    if found is None:
        return func.HttpResponse("not found", status_code=int(HTTPStatus.NOT_FOUND))
    if req.headers.get("if-none-match") == found.etag:
        return func.HttpResponse(
            status_code=int(HTTPStatus.NOT_MODIFIED), headers={"ETag": found.etag}
        )
    return func.HttpResponse(
        found.body, headers={"Content-Type": found.media_type, "ETag": found.etag}
    )


def _invoke(
    function: str, req: func.HttpRequest, answer: Callable[[Runtime], func.HttpResponse], cache: str
) -> func.HttpResponse:
    return shell.invoke(
        function, lambda app: guarded(req, app, lambda: answer(app), cache), path=telemetry.QUERY
    )


@bp.route(route="search", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def search(req: func.HttpRequest) -> func.HttpResponse:
    return _invoke("search", req, lambda _: file_response(req, PAGE), FILE_CACHE)


@bp.route(route="search/assets/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def search_assets(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params.get("name", "")
    # The page itself is not an asset: it has its own route.
    found = name if name != PAGE else ""
    return _invoke("search_assets", req, lambda _: file_response(req, found), FILE_CACHE)


@bp.route(route="search/activity", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def search_activity(req: func.HttpRequest) -> func.HttpResponse:
    return _invoke(
        "search_activity", req, lambda app: handle_activity(req, app, datetime.now(UTC)), DATA_CACHE
    )


@bp.route(route="search/histogram", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def search_histogram(req: func.HttpRequest) -> func.HttpResponse:
    return _invoke(
        "search_histogram",
        req,
        lambda app: handle_histogram(req, app, datetime.now(UTC)),
        DATA_CACHE,
    )
