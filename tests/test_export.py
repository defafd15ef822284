"""Export: CSV with the portal's columns and JSON Lines, from the pure module, from
GET /api/activity?format=... page by page, and from `python -m shared query --format`."""

from __future__ import annotations

import csv
import io
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import orjson
import pytest

from functions.query_http import NEXT_HEADER, SCANNED_HEADER, UNREADABLE_HEADER, handle_activity
from shared.bootstrap import Runtime, build_runtime
from shared.core.export import (
    CSV_COLUMNS,
    csv_header,
    csv_rows,
    defused,
    file_name,
    jsonl_rows,
    page_body,
)
from shared.core.normalize import normalize
from shared.core.query_spec import parse_query
from shared.core.records import NormalizedRecord, Rejection
from shared.settings import STORAGE_CONNECTION, STORE_PREFIX, load_settings
from shared.tools import query_cli
from shared.tools.azurite import Azurite
from shared.tools.query_cli import query_main
from tests.archive_view import committed_blobs
from tests.test_query import cli_args

NOW = datetime(2024, 4, 15, 12, 0, tzinfo=UTC)
SPAN = {"since": "2024-03-01T00:00:00Z", "until": "2024-04-01T00:00:00Z"}
SUB = "11111111-1111-1111-1111-111111111111"
PORTAL_COLUMNS = [
    "Operation name",
    "Status",
    "Time",
    "Time stamp",
    "Subscription",
    "Event initiated by",
    "Resource type",
    "Resource group",
    "Resource",
    "Event category",
    "Level",
    "Correlation id",
]
HOSTILE_CALLERS = (
    '=HYPERLINK("http://evil.example","click")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A2)",
    'quote " and, comma',
    "line\nbreak",
    "plain@contoso.com",
)


def make(index: int, caller: str = "alice@contoso.com") -> NormalizedRecord:
    moment = datetime(2024, 3, 2, tzinfo=UTC) + timedelta(hours=index * 5, seconds=index)
    event: dict[str, Any] = {
        "time": f"{moment:%Y-%m-%dT%H:%M:%S}.1234567Z",
        "resourceId": f"/subscriptions/{SUB}/resourceGroups/RG-Audit/providers/"
        f"Microsoft.KeyVault/vaults/kv{index}",
        "operationName": {"value": "MICROSOFT.KEYVAULT/VAULTS/DELETE", "localizedValue": "Delete"},
        "category": "Administrative",
        "resultType": "Success",
        "correlationId": f"corr-{index}",
        "level": "Warning",
        "caller": caller,
    }
    record = normalize(event, source="test", raw="")
    assert not isinstance(record, Rejection), record
    return record


def test_csv_has_the_portals_columns_from_the_normalized_record() -> None:
    record = make(1)
    assert list(CSV_COLUMNS) == PORTAL_COLUMNS
    rows = list(csv.reader(io.StringIO(csv_header() + csv_rows([record]))))
    assert rows[0] == PORTAL_COLUMNS
    assert dict(zip(PORTAL_COLUMNS, rows[1], strict=True)) == {
        "Operation name": "Delete",
        "Status": "Succeeded",
        "Time": record["TimeGenerated"],
        "Time stamp": "Sat Mar 02 2024 05:00:01 GMT+0000 (Coordinated Universal Time)",
        "Subscription": SUB,
        "Event initiated by": "alice@contoso.com",
        "Resource type": "microsoft.keyvault/vaults",
        "Resource group": "rg-audit",
        "Resource": record["ResourceId"],
        "Event category": "Administrative",
        "Level": "Warning",
        "Correlation id": "corr-1",
    }


@pytest.mark.parametrize("caller", HOSTILE_CALLERS)
def test_csv_quotes_and_defuses_what_a_spreadsheet_would_run(caller: str) -> None:
    text = csv_rows([make(2, caller)])
    assert text.endswith("\r\n")
    (row,) = list(csv.reader(io.StringIO(text)))
    shown = row[PORTAL_COLUMNS.index("Event initiated by")]
    if caller[0] in "=+-@":
        assert shown == "'" + caller
    else:
        assert shown == caller
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row)


def test_defused_leaves_ordinary_text_alone() -> None:
    assert defused("") == ""
    assert defused("a=b") == "a=b"
    assert defused("\tx") == "'\tx"


@pytest.mark.parametrize("lead", [" ", "\ufeff", "\x00", "\u3000", "\u00a0"])
def test_a_formula_behind_blank_or_invisible_characters_is_defused_too(lead: str) -> None:
    # Found from outside: only the very first character was looked at.
    assert defused(lead + "=1+1") == "'" + lead + "=1+1"
    assert defused("\uff1d1+1") == "'\uff1d1+1"  # a full-width `=`: some spreadsheets run it


def test_every_cell_is_quoted_so_a_semicolon_locale_keeps_it_one_cell() -> None:
    # Found from outside: `a;=cmd|' /C calc'!A0` went out unquoted; a spreadsheet whose list
    # separator is `;` split it, and its second cell started with `=`.
    record = make(1, caller="a;=cmd|' /C calc'!A0")
    [row] = list(csv.reader(io.StringIO(csv_rows([record]))))
    assert "a;=cmd|' /C calc'!A0" in row
    assert "\"a;=cmd|' /C calc'!A0\"" in csv_rows([record])
    assert all(line.startswith('"') for line in csv_rows([record, make(2)]).splitlines())


def test_jsonl_is_the_whole_record_a_line() -> None:
    records = [make(1), make(2)]
    lines = jsonl_rows(records).splitlines()
    assert [orjson.loads(line) for line in lines] == records
    assert page_body("jsonl", records, first=True) == jsonl_rows(records)
    assert page_body("csv", records, first=False).decode() == csv_rows(records)


def test_the_file_name_says_the_query_its_range_and_when_it_ran() -> None:
    # The range too (found from outside: two exports of one caller on two days had names
    # that differed only by when they were made).
    query = parse_query({"caller": "Bob O'Neil@contoso.com", "status": "failed"}, NOW)
    assert file_name(query, "csv", NOW) == (
        "activity-caller-Bob-O-Neil-contoso.com_status-Failed"
        "-from-20240316T1200Z-to-20240415T1200Z-at-20240415T120000Z.csv"
    )
    resource = f'/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Web/sites/shop"'
    day = {"since": "2024-04-01", "until": "2024-04-02"}
    query = parse_query({"resource": resource, **day}, NOW)
    assert file_name(query, "jsonl", NOW) == (
        "activity-resource-shop-from-20240401T0000Z-to-20240402T0000Z-at-20240415T120000Z.jsonl"
    )
    assert file_name(parse_query({}, NOW), "csv", NOW).startswith("activity-all-from-")
    long = parse_query({"text": "x" * 500, "caller": "y" * 500, "operation": "z" * 500}, NOW)
    assert len(file_name(long, "csv", NOW)) < 180  # file systems take 255


# --- over HTTP and the CLI, on Azurite -------------------------------------------------------


@pytest.fixture(scope="module")
def archive(azurite: Azurite) -> tuple[Runtime, list[NormalizedRecord]]:
    settings = load_settings(
        {STORAGE_CONNECTION: azurite.connection_string, STORE_PREFIX: f"ex{os.getpid()}data"}
    )
    app = build_runtime(settings)
    records = [make(i, HOSTILE_CALLERS[i % len(HOSTILE_CALLERS)]) for i in range(23)]
    assert len(app.writer.write(records).indexed) == len(records)
    newest = sorted(records, key=lambda r: (r["TimeGenerated"], r["EventKey"]), reverse=True)
    return app, newest


def request(params: dict[str, str]) -> func.HttpRequest:
    return func.HttpRequest(
        method="GET", url="http://localhost/api/activity", params=params, body=b""
    )


def test_http_csv_pages_with_the_header_once_and_the_token_in_a_header(
    archive: tuple[Runtime, list[NormalizedRecord]],
) -> None:
    app, newest = archive
    params = {**SPAN, "resource_group": "rg-audit", "limit": "5", "format": "csv"}
    body = ""
    continuation = None
    for number in range(100):
        extra: dict[str, str] = {"continuation": continuation} if continuation else {}
        response = handle_activity(request({**params, **extra}), app, NOW)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert response.headers["Content-Disposition"] == (
            'attachment; filename="activity-resource-group-rg-audit'
            '-from-20240301T0000Z-to-20240401T0000Z-at-20240415T120000Z.csv"'
        )
        assert SCANNED_HEADER not in response.headers
        text = response.get_body().decode()
        assert text.startswith('"Operation name",') == (number == 0)
        body += text
        continuation = response.headers.get(NEXT_HEADER)
        if continuation is None:
            break
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [row["Correlation id"] for row in rows] == [r["CorrelationId"] for r in newest]
    # The same records the JSON API gives, column by column.
    answer = orjson.loads(handle_activity(request({**SPAN, "limit": "1000"}), app, NOW).get_body())
    assert rows == list(csv.DictReader(io.StringIO(csv_header() + csv_rows(answer["records"]))))


def test_http_jsonl_and_bad_formats(archive: tuple[Runtime, list[NormalizedRecord]]) -> None:
    app, newest = archive
    response = handle_activity(request({**SPAN, "limit": "1000", "format": "jsonl"}), app, NOW)
    assert response.headers["Content-Type"] == "application/x-ndjson"
    assert NEXT_HEADER not in response.headers  # everything in one page: done
    assert [orjson.loads(line) for line in response.get_body().splitlines()] == newest
    for fmt in ("xml", "CSV", ""):
        response = handle_activity(request({**SPAN, "format": fmt}), app, NOW)
        assert response.status_code == 400
        assert "format" in orjson.loads(response.get_body())["error"]
    response = handle_activity(request({**SPAN, "format": "csv", "since": "soon"}), app, NOW)
    assert response.status_code == 400 and response.mimetype == "application/json"


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json", "table"])
def test_cli_formats_stream_every_page(
    archive: tuple[Runtime, list[NormalizedRecord]], fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, newest = archive
    monkeypatch.setattr(query_cli, "CLI_PAGE", 4)  # pages of 4: the header comes once
    out = io.StringIO()
    assert query_main(cli_args(**SPAN, limit="1000", format=fmt), app, out) == 0
    text = out.getvalue()
    if fmt == "csv":
        assert text == csv_header() + csv_rows(newest)
    elif fmt == "table":
        assert len(text.splitlines()) == len(newest) + 1
    else:
        assert [orjson.loads(line) for line in text.splitlines()] == newest


@pytest.mark.parametrize(
    ("time_generated", "shown"),
    [
        ("2025-03-01T12:00:05.1234567Z", "Sat Mar 01 2025 12:00:05"),
        ("2025-12-31T23:59:59.9999999Z", "Wed Dec 31 2025 23:59:59"),
        ("2025-03-01 12:00:05", "Sat Mar 01 2025 12:00:05"),  # not canonical, still a time
        ("2025-03-01T24:00:05Z", None),  # no such time: the text as it is
        ("2025-02-30T12:00:00Z", None),
        ("2025-03-01T12:00:60Z", None),
        ("garbage", None),
        ("", None),
    ],
)
def test_time_stamp_is_the_portals_text_or_the_time_as_it_came(
    time_generated: str, shown: str | None
) -> None:
    record = {**make(1), "TimeGenerated": time_generated}
    (row,) = list(csv.reader(io.StringIO(csv_rows([record]))))
    stamp = row[PORTAL_COLUMNS.index("Time stamp")]
    expected = time_generated if shown is None else f"{shown} GMT+0000 (Coordinated Universal Time)"
    assert stamp == expected


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_export_page_names_the_blobs_whose_records_it_could_not_read(
    azurite: Azurite, fmt: str
) -> None:
    """An export is evidence: records missing from it for damaged storage are named in a
    header (as the JSON answer's `unreadable` names them), never silently left out."""
    settings = load_settings(
        {STORAGE_CONNECTION: azurite.connection_string, STORE_PREFIX: f"ex{os.getpid()}{fmt}"}
    )
    app = build_runtime(settings)
    assert len(app.writer.write([make(i) for i in range(4)]).indexed) == 4  # one day: a blob
    (victim,) = committed_blobs(app)
    partition, row = victim.manifest_keys
    found = app.tables.get(victim.month, partition, row)
    assert found is not None
    app.tables.upsert(victim.month, [{**found, "N": "abc"}])  # a damaged count
    for params in ({**SPAN}, {**SPAN, "resource_group": "rg-audit"}):  # listing, lookup
        response = handle_activity(request({**params, "format": fmt}), app, NOW)
        assert response.status_code == 200
        assert response.headers[UNREADABLE_HEADER] == victim.name, params
    app.tables.upsert(victim.month, [found])
    whole = handle_activity(request({**SPAN, "format": fmt}), app, NOW)
    assert UNREADABLE_HEADER not in whole.headers
