"""Settings are read once, validated, and a bad one is named in the error."""

from __future__ import annotations

import pytest

from shared import settings as names
from shared.settings import DEVELOPMENT_STORAGE, SettingsError, load_settings


def test_defaults_point_at_development_storage() -> None:
    settings = load_settings({})
    assert settings.storage_connection == DEVELOPMENT_STORAGE
    assert settings.archive_container == "insights-activity-logs"
    assert settings.retention_days == 365
    assert not settings.forwards_to_log_analytics


def test_identity_based_storage_from_account_name() -> None:
    settings = load_settings(
        {"AzureWebJobsStorage__accountName": "acct", "AzureWebJobsStorage__clientId": "id-1"}
    )
    assert settings.storage_connection == ""
    assert settings.storage_blob_uri == "https://acct.blob.core.windows.net"
    assert settings.storage_table_uri == "https://acct.table.core.windows.net"
    assert settings.managed_identity_client_id == "id-1"


def test_category_overrides_are_canonical() -> None:
    settings = load_settings({names.RETENTION_CATEGORY_DAYS: "administrative=2555, Security=0"})
    assert settings.retention_category_days == {"Administrative": 2555, "Security": 0}


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        (names.RETENTION_DAYS, "30"),
        (names.RETENTION_DAYS, "-1"),
        (names.RETENTION_DAYS, "a year"),
        (names.RETENTION_CATEGORY_DAYS, "Administrative"),
        (names.RETENTION_CATEGORY_DAYS, "Bogus=400"),
        (names.RETENTION_CATEGORY_DAYS, "Policy=89"),
        (names.RETENTION_DRY_RUN, "maybe"),
        (names.RETENTION_TIME_BUDGET_SECONDS, "0"),
        (names.STORE_PREFIX, "Bad_Prefix"),
        (names.ARCHIVE_CONTAINER, "UPPER"),
        (names.SEAL_AFTER_MINUTES, "soon"),
        ("AzureWebJobsStorage__blobServiceUri", "https://a.blob.core.windows.net"),
    ],
)
def test_a_bad_setting_is_refused_with_its_name(setting: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({setting: value})
    assert setting.split("__", maxsplit=1)[0] in str(raised.value)


def test_log_analytics_stream_and_endpoint_are_checked() -> None:
    good = {
        names.LOGS_INGESTION_ENDPOINT: "https://dce.example.ingest.monitor.azure.com",
        names.LOGS_INGESTION_RULE_ID: "dcr-0123",
        names.LOGS_INGESTION_STREAM: "Custom-ActivityLog_CL",
    }
    with pytest.raises(SettingsError, match=names.LOGS_INGESTION_STREAM):
        load_settings({**good, names.LOGS_INGESTION_STREAM: "ActivityLog_CL"})
    with pytest.raises(SettingsError, match=names.LOGS_INGESTION_ENDPOINT):
        load_settings({**good, names.LOGS_INGESTION_ENDPOINT: "http://dce.example.com"})
    loopback = {**good, names.LOGS_INGESTION_ENDPOINT: "http://127.0.0.1:8080"}
    assert load_settings(loopback).logs_ingestion_endpoint == "http://127.0.0.1:8080"


def test_retention_accepts_zero_and_ninety() -> None:
    assert load_settings({names.RETENTION_DAYS: "0"}).retention_days == 0
    assert load_settings({names.RETENTION_DAYS: "90"}).retention_days == 90


def test_log_analytics_forwarding_needs_all_three_settings() -> None:
    settings = load_settings(
        {
            names.LOGS_INGESTION_ENDPOINT: "https://dce.example.ingest.monitor.azure.com",
            names.LOGS_INGESTION_RULE_ID: "dcr-0123",
            names.LOGS_INGESTION_STREAM: "Custom-ActivityLog_CL",
        }
    )
    assert settings.forwards_to_log_analytics
    with pytest.raises(SettingsError, match=names.LOGS_INGESTION_STREAM):
        load_settings({names.LOGS_INGESTION_RULE_ID: "x", names.LOGS_INGESTION_ENDPOINT: "y"})
