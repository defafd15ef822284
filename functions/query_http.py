"""HTTP query: GET /api/activity?subscription=...&since=7d&limit=100[&continuation=...].

One page of at most 1,000 records per request (`limit`), with a continuation for the next.
"""

from __future__ import annotations

from datetime import UTC, datetime
from http import HTTPStatus

import azure.functions as func
import orjson

from functions import shell
from shared.adapters import telemetry
from shared.bootstrap import Runtime
from shared.core.query_spec import QueryError
from shared.services.query import read_query, run_query

bp = func.Blueprint()  # azure-functions leaves it unannotated

# Query string names that are not query parameters: `code` carries the function key.
CONTINUATION = "continuation"
FUNCTION_KEY = "code"


def _json(status: HTTPStatus, body: object) -> func.HttpResponse:
    return func.HttpResponse(
        orjson.dumps(body),
        status_code=int(status),
        mimetype="application/json",
        headers={"Cache-Control": "no-store"},
    )


def handle_activity(req: func.HttpRequest, app: Runtime, now: datetime) -> func.HttpResponse:
    params = {
        name: value
        for name, value in req.params.items()
        if name not in (CONTINUATION, FUNCTION_KEY)
    }
    try:
        # A key lookup without `since` searches from the index's oldest month.
        query = read_query(params, now, app.tables)
        page = run_query(
            query,
            tables=app.tables,
            reader=app.reader,
            continuation=req.params.get(CONTINUATION),
        )
    except QueryError as error:
        return _json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
    answer: dict[str, object] = {"records": page.records, "continuation": page.continuation}
    if page.unreadable:  # damaged archive blobs are named, never silently missing
        answer["unreadable"] = page.unreadable
    return _json(HTTPStatus.OK, answer)


@bp.route(route="activity", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def activity(req: func.HttpRequest) -> func.HttpResponse:
    return shell.invoke(
        "activity",
        lambda app: handle_activity(req, app, datetime.now(UTC)),
        path=telemetry.QUERY,
    )
