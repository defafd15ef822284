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
    assert settings.logs_ingestion() is None


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
    ingestion = load_settings(loopback).logs_ingestion()  # forwarding's own section
    assert ingestion is not None and ingestion.endpoint == "http://127.0.0.1:8080"


def test_retention_accepts_zero_and_ninety() -> None:
    assert load_settings({names.RETENTION_DAYS: "0"}).retention_days == 0
    assert load_settings({names.RETENTION_DAYS: "90"}).retention_days == 90


# Every number setting has a largest value that the date arithmetic and the lists built from
# it can take; one past it (or a number far past any) is refused by name, not left to fail
# every run with an OverflowError.
BOUNDS = [
    (names.RETENTION_DAYS, "36500", "retention_days", 36500),
    (names.RETENTION_CATEGORY_DAYS, "Administrative=36500", "retention_category_days",
     {"Administrative": 36500}),
    (names.CATCHUP_LOOKBACK_HOURS, "168", "catchup_lookback_hours", 168),
    (names.SEAL_AFTER_MINUTES, "10080", "seal_after_minutes", 10080),
    (names.RETENTION_TIME_BUDGET_SECONDS, "86400", "retention_time_budget_seconds", 86400),
]  # fmt: skip


@pytest.mark.parametrize(("setting", "largest", "attribute", "value"), BOUNDS)
def test_the_largest_value_of_a_number_setting_is_taken(
    setting: str, largest: str, attribute: str, value: object
) -> None:
    assert getattr(load_settings({setting: largest}), attribute) == value


@pytest.mark.parametrize(
    ("setting", "value", "bound"),
    [
        (names.RETENTION_DAYS, "36501", "36500"),
        (names.RETENTION_DAYS, "1000000", "36500"),
        (names.RETENTION_DAYS, "9" * 30, "36500"),
        (names.RETENTION_CATEGORY_DAYS, "Administrative=36501", "36500"),
        (names.RETENTION_CATEGORY_DAYS, "Security=1000000", "36500"),
        (names.CATCHUP_LOOKBACK_HOURS, "169", "168"),
        (names.CATCHUP_LOOKBACK_HOURS, "9" * 30, "168"),
        (names.SEAL_AFTER_MINUTES, "10081", "10080"),
        (names.SEAL_AFTER_MINUTES, "9" * 30, "10080"),
        (names.RETENTION_TIME_BUDGET_SECONDS, "86401", "86400"),
        (names.RETENTION_TIME_BUDGET_SECONDS, "9" * 30, "86400"),
    ],
)
def test_a_number_setting_past_its_bound_is_refused_with_its_name(
    setting: str, value: str, bound: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({setting: value})
    assert setting in str(raised.value) and bound in str(raised.value)


def test_log_analytics_forwarding_needs_all_three_settings() -> None:
    settings = load_settings(
        {
            names.LOGS_INGESTION_ENDPOINT: "https://dce.example.ingest.monitor.azure.com",
            names.LOGS_INGESTION_RULE_ID: "dcr-0123",
            names.LOGS_INGESTION_STREAM: "Custom-ActivityLog_CL",
        }
    )
    assert settings.logs_ingestion() is not None
    with pytest.raises(SettingsError, match=names.LOGS_INGESTION_STREAM):
        load_settings({names.LOGS_INGESTION_RULE_ID: "x", names.LOGS_INGESTION_ENDPOINT: "y"})


# A number setting is ASCII digits only: Python's int() also reads full-width and Arabic-Indic
# digits and underscores, so full-width "365" or "3_650" would have passed as a retention a person
# reading the setting in the portal could not check.
@pytest.mark.parametrize(
    ("setting", "value"),
    [
        (names.RETENTION_DAYS, "\uff13\uff16\uff15"),
        (names.RETENTION_DAYS, "٣٦٥"),
        (names.RETENTION_DAYS, "3_650"),
        (names.RETENTION_CATEGORY_DAYS, "Administrative=\uff12\uff15\uff15\uff15"),
        (names.RETENTION_CATEGORY_DAYS, "Administrative=2_555"),
        (names.CATCHUP_LOOKBACK_HOURS, "\uff13"),
        (names.SEAL_AFTER_MINUTES, "1_20"),
        (names.RETENTION_TIME_BUDGET_SECONDS, "\uff16\uff10\uff10"),
    ],
)
def test_a_number_setting_takes_ascii_digits_only(setting: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({setting: value})
    assert setting in str(raised.value)


def test_a_category_named_twice_is_refused_not_last_one_wins() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({names.RETENTION_CATEGORY_DAYS: "Administrative=2555,administrative=100"})
    assert names.RETENTION_CATEGORY_DAYS in str(raised.value)
    assert "Administrative" in str(raised.value) and "twice" in str(raised.value)


def test_a_number_setting_keeps_its_plain_forms() -> None:
    settings = load_settings(
        {names.RETENTION_DAYS: " 400 ", names.RETENTION_CATEGORY_DAYS: "Security = 0100"}
    )
    assert settings.retention_days == 400
    assert settings.retention_category_days == {"Security": 100}
