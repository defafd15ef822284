"""Conformance over the real published samples in ../shared/samples (skipped when absent)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from shared.core.normalize import normalize_input
from shared.core.records import COLUMNS, NormalizedRecord, Rejection

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
SAMPLE_FILES = (
    sorted(path for path in SAMPLES.iterdir() if path.name != "SOURCES.md")
    if SAMPLES.is_dir()
    else []
)
POLICY_SAMPLE = "docs-schema-policy.json"

CANONICAL_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z")
EVENT_KEY = re.compile(r"[0-9a-f]{32}")
LEVELS = {"Critical", "Error", "Warning", "Informational", "Verbose", ""}
STATUS_SPELLINGS = {"success", "succeeded", "start", "started", "accept", "accepted"}
STATUS_SPELLINGS |= {"failure", "failed"}
STRING_COLUMNS = {
    "TimeGenerated", "CategoryValue", "OperationNameValue", "OperationName",
    "ResourceProviderValue", "ActivityStatusValue", "ActivitySubstatusValue", "Level",
    "ResourceId", "SubscriptionId", "ResourceGroup", "Caller", "CallerIpAddress",
    "CorrelationId", "OperationId", "EventDataId", "Location", "Description", "Hierarchy",
    "AadTenantId", "EventKey",
}  # fmt: skip
OBJECT_OR_NULL_COLUMNS = {"Authorization_d", "Claims_d", "Properties_d", "HttpRequest"}

pytestmark = pytest.mark.skipif(not SAMPLE_FILES, reason=f"no samples at {SAMPLES}")


def count_events(text: str) -> int:
    """Events in a sample, counted with the standard library, independently of the decoder."""
    try:
        values: list[Any] = [json.loads(text)]
    except json.JSONDecodeError:
        values = []
        for line in text.lstrip("\ufeff").splitlines():
            if line.strip():
                try:
                    values.append(json.loads(line))
                except json.JSONDecodeError:
                    values.append(None)  # a bad line: one rejection
        if not any(isinstance(value, dict) for value in values):
            return 1  # not JSON at all: one rejection for the whole input
    total = 0
    for value in values:
        if isinstance(value, dict) and isinstance(value.get("records"), list):
            total += len(value["records"])
        elif isinstance(value, list):
            total += len(value)
        else:
            total += 1
    return total


def normalized(path: Path) -> tuple[list[NormalizedRecord], list[Rejection]]:
    return normalize_input(path.read_bytes(), path.name)


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda path: path.name)
def test_every_event_becomes_a_record_or_a_rejection(path: Path) -> None:
    records, rejections = normalized(path)
    assert len(records) + len(rejections) == count_events(path.read_text("utf-8"))
    for rejection in rejections:
        assert rejection.reason
        assert rejection.source.startswith(path.name)
        assert rejection.raw


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda path: path.name)
def test_every_record_has_every_column_canonical(path: Path) -> None:
    records, _ = normalized(path)
    for record in records:
        assert list(record) == list(COLUMNS)
        for column in STRING_COLUMNS:
            assert isinstance(record[column], str), column
        for column in OBJECT_OR_NULL_COLUMNS:
            assert record[column] is None or isinstance(record[column], dict), column
        assert record["DurationMs"] is None or type(record["DurationMs"]) is int
        assert isinstance(record["AdditionalFields"], dict)
        warnings = record["NormalizationWarnings"]
        assert isinstance(warnings, list)
        assert all(isinstance(warning, str) for warning in warnings)

        assert CANONICAL_TIME.fullmatch(record["TimeGenerated"])
        operation = record["OperationNameValue"]
        assert operation == operation.strip().lower()
        assert record["ResourceId"] == record["ResourceId"].strip().lower()
        assert record["SubscriptionId"] == record["SubscriptionId"].lower()
        assert record["ResourceGroup"] == record["ResourceGroup"].lower()
        assert record["ResourceProviderValue"] == record["ResourceProviderValue"].lower()
        assert record["AadTenantId"] == record["AadTenantId"].strip().lower()
        assert record["Level"] in LEVELS
        status = record["ActivityStatusValue"]
        if status.lower().rstrip(".") in STATUS_SPELLINGS:
            assert status in {"Succeeded", "Started", "Accepted", "Failed"}
        assert EVENT_KEY.fullmatch(record["EventKey"])


def test_policy_sample_is_exactly_one_rejection() -> None:
    records, rejections = normalized(SAMPLES / POLICY_SAMPLE)
    assert records == []
    assert len(rejections) == 1
    rejection = rejections[0]
    assert rejection.source == POLICY_SAMPLE
    assert rejection.reason.startswith("not JSON: ")
    assert rejection.raw == (SAMPLES / POLICY_SAMPLE).read_text("utf-8").strip()


def test_old_envelope_and_new_lines_give_the_same_records() -> None:
    envelope, _ = normalized(
        SAMPLES / "docs-resource-logs-blob-format-before-records-envelope.json"
    )
    lines, _ = normalized(SAMPLES / "docs-resource-logs-blob-format-after-PT1H.jsonl")
    assert len(envelope) == len(lines) == 2
    assert envelope == lines


def test_categories_of_the_samples() -> None:
    seen: set[str] = set()
    for path in SAMPLE_FILES:
        records, _ = normalized(path)
        seen.update(record["CategoryValue"] for record in records)
    eight = {"Administrative", "ServiceHealth", "ResourceHealth", "Alert", "Autoscale"}
    eight |= {"Recommendation", "Security", "Policy"}
    assert eight <= seen
