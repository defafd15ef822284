"""HTTP query: GET /api/activity?subscription=...&since=7d&limit=100[&continuation=...]
[&format=json|jsonl|csv], and GET /api/activity/histogram?<the same filters>[&bucket=hour|day]
[&split=status|category].

One page of at most 1,000 records per request (`limit`), with a continuation for the next:
in the JSON body (`format=json`, the default), or, for an export (`jsonl`, `csv`: the body is
the page's records as a file, the CSV's header on the first page only), in the
`X-Continuation` header. A page a bound stopped says how far it searched (`scanned` in JSON,
`X-Scanned-Until` for an export). The histogram counts from the index alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from http import HTTPStatus

import azure.functions as func
import orjson

from functions import shell
from shared.adapters import telemetry
from shared.bootstrap import Runtime
from shared.core.export import FORMATS, MEDIA_TYPES, file_name, page_body
from shared.core.query_spec import ActivityQuery, QueryError
from shared.services.histogram import histogram
from shared.services.postings_read import DamagedIndex
from shared.services.query import QueryPage, search_page

bp = func.Blueprint()  # azure-functions leaves it unannotated

# Query string names that are not query parameters: `code` carries the function key.
CONTINUATION = "continuation"
FUNCTION_KEY = "code"
FORMAT = "format"
NEXT_HEADER = "X-Continuation"
SCANNED_HEADER = "X-Scanned-Until"
# The archive blobs whose records the page could not read (damaged storage), comma-separated:
# an export is evidence, and records missing from it are named, as `unreadable` in JSON.
UNREADABLE_HEADER = "X-Unreadable-Blobs"
MAX_UNREADABLE_NAMED = 20  # a header stays small; `verify` lists them all
_NOT_FILTERS = (CONTINUATION, FUNCTION_KEY, FORMAT)


def _json(status: HTTPStatus, body: object) -> func.HttpResponse:
    return func.HttpResponse(
        body if isinstance(body, bytes) else orjson.dumps(body),
        status_code=int(status),
        mimetype="application/json",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


def _format(req: func.HttpRequest) -> str:
    fmt = str(req.params.get(FORMAT, "json"))
    if fmt not in FORMATS:
        raise QueryError(f"format must be one of {', '.join(FORMATS)}; got {fmt[:20]!r}")
    return fmt


def _export(
    fmt: str, query: ActivityQuery, page: QueryPage, *, first: bool, now: datetime
) -> func.HttpResponse:
    headers = {
        "Cache-Control": "no-store",
        "Content-Disposition": f'attachment; filename="{file_name(query, fmt, now)}"',
        "X-Content-Type-Options": "nosniff",
    }
    if page.continuation is not None:
        headers[NEXT_HEADER] = page.continuation
    if page.reached is not None:
        headers[SCANNED_HEADER] = page.reached
    if page.unreadable:
        headers[UNREADABLE_HEADER] = ",".join(page.unreadable[:MAX_UNREADABLE_NAMED])
    return func.HttpResponse(
        page_body(fmt, page.records, first=first),
        status_code=int(HTTPStatus.OK),
        headers={**headers, "Content-Type": MEDIA_TYPES[fmt]},
    )


def handle_activity(req: func.HttpRequest, app: Runtime, now: datetime) -> func.HttpResponse:
    params = {name: value for name, value in req.params.items() if name not in _NOT_FILTERS}
    continuation = req.params.get(CONTINUATION)
    try:
        fmt = _format(req)
        # A key lookup without `since` searches from the index's oldest month.
        query, page = search_page(
            params, now, tables=app.tables, reader=app.reader, continuation=continuation
        )
    except QueryError as error:
        return _json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
    except DamagedIndex as error:  # said, not a bare 500: what is damaged, what mends it
        return _json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(error)})
    if fmt != "json":
        return _export(fmt, query, page, first=continuation is None, now=now)
    answer: dict[str, object] = {"records": [], "continuation": page.continuation}
    if page.unreadable:  # damaged archive blobs are named, never silently missing
        answer["unreadable"] = page.unreadable
    if page.reached is not None:  # a bound stopped the page: how far it searched
        answer["scanned"] = {"until": page.reached, "complete": False}
    # Each record written on its own, as the archive wrote it: a record as deep as orjson
    # writes (archived before records were held to MAX_NESTING) fits, where the page's own
    # levels around it would not.
    records = b",".join(orjson.dumps(record) for record in page.records)
    body = orjson.dumps(answer).replace(b'"records":[]', b'"records":[' + records + b"]", 1)
    return _json(HTTPStatus.OK, body)


def handle_histogram(req: func.HttpRequest, app: Runtime, now: datetime) -> func.HttpResponse:
    params = {name: value for name, value in req.params.items() if name != FUNCTION_KEY}
    try:
        counts = histogram(params, now, app.tables)
    except QueryError as error:
        return _json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
    except DamagedIndex as error:
        return _json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(error)})
    return _json(HTTPStatus.OK, counts.as_dict())


@bp.route(route="activity", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def activity(req: func.HttpRequest) -> func.HttpResponse:
    return shell.invoke(
        "activity",
        lambda app: handle_activity(req, app, datetime.now(UTC)),
        path=telemetry.QUERY,
    )


@bp.route(route="activity/histogram", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def activity_histogram(req: func.HttpRequest) -> func.HttpResponse:
    return shell.invoke(
        "activity_histogram",
        lambda app: handle_histogram(req, app, datetime.now(UTC)),
        path=telemetry.QUERY,
    )
