"""App settings: every name the app reads, read once into one typed, validated object.

The constants below are the single source of the setting names: `infra/` and
`local.settings.example.json` set exactly these, and a test holds the three sets equal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.core.records import CATEGORIES

# Storage that holds the index, cursors, dead letters and (in Azure) the archive container.
# A connection string locally (Azurite); identity-based in Azure (`__accountName`, or
# `__blobServiceUri` + `__queueServiceUri` + `__tableServiceUri`, with `__clientId`).
STORAGE_CONNECTION = "AzureWebJobsStorage"
# Event Hub connection prefix: `ACTIVITYLOG_EVENTHUB__fullyQualifiedNamespace` in Azure.
EVENTHUB_CONNECTION = "ACTIVITYLOG_EVENTHUB"
EVENTHUB_NAME = "ACTIVITYLOG_EVENTHUB_NAME"
EVENTHUB_CONSUMER_GROUP = "ACTIVITYLOG_EVENTHUB_CONSUMER_GROUP"
ARCHIVE_CONTAINER = "ACTIVITYLOG_ARCHIVE_CONTAINER"
# Prefix of every table and container the app owns (lowercase letters and digits).
STORE_PREFIX = "ACTIVITYLOG_STORE_PREFIX"
CATCHUP_SCHEDULE = "ACTIVITYLOG_CATCHUP_SCHEDULE"
CATCHUP_LOOKBACK_HOURS = "ACTIVITYLOG_CATCHUP_LOOKBACK_HOURS"
SEAL_AFTER_MINUTES = "ACTIVITYLOG_SEAL_AFTER_MINUTES"
RETENTION_SCHEDULE = "ACTIVITYLOG_RETENTION_SCHEDULE"
RETENTION_DAYS = "ACTIVITYLOG_RETENTION_DAYS"
RETENTION_CATEGORY_DAYS = "ACTIVITYLOG_RETENTION_CATEGORY_DAYS"
RETENTION_DRY_RUN = "ACTIVITYLOG_RETENTION_DRY_RUN"
RETENTION_TIME_BUDGET_SECONDS = "ACTIVITYLOG_RETENTION_TIME_BUDGET_SECONDS"
LOGS_INGESTION_ENDPOINT = "ACTIVITYLOG_LOGS_INGESTION_ENDPOINT"
LOGS_INGESTION_RULE_ID = "ACTIVITYLOG_LOGS_INGESTION_RULE_ID"
LOGS_INGESTION_STREAM = "ACTIVITYLOG_LOGS_INGESTION_STREAM"
APPINSIGHTS_CONNECTION = "APPLICATIONINSIGHTS_CONNECTION_STRING"

# Well-known Azurite development storage (a published, public key: not a secret).
DEVELOPMENT_STORAGE = "UseDevelopmentStorage=true"
DEFAULT_ARCHIVE_CONTAINER = "insights-activity-logs"


# Upper bounds: every integer setting is checked against one, so that the date arithmetic
# and the lists built from a setting stay in range (no OverflowError on every run). Private:
# the public upper-case names of this module are the setting names (tests/test_infra.py).
_MAX_RETENTION_DAYS = 36_500  # 100 years; 0 still means keep forever
_MIN_RETENTION_DAYS = 90  # Azure already keeps 90 days: a shorter archive deletes what it has
_MAX_CATCHUP_LOOKBACK_HOURS = 7 * 24  # the catch-up's own reach per run; a watermark covers more
_MAX_SEAL_AFTER_MINUTES = 7 * 24 * 60
_MAX_RETENTION_TIME_BUDGET_SECONDS = 24 * 60 * 60  # the timer runs daily


class SettingsError(ValueError):
    """A missing or bad app setting; the message names the setting."""


@dataclass(frozen=True, slots=True)
class Settings:
    # A connection string (Azurite, local runs) or "" when the identity settings below apply.
    storage_connection: str = DEVELOPMENT_STORAGE
    storage_blob_uri: str = ""
    storage_table_uri: str = ""
    managed_identity_client_id: str = ""
    archive_container: str = DEFAULT_ARCHIVE_CONTAINER
    store_prefix: str = "activitylog"
    catchup_lookback_hours: int = 3
    seal_after_minutes: int = 120
    retention_days: int = 365
    retention_category_days: Mapping[str, int] = field(default_factory=dict)
    retention_dry_run: bool = False
    retention_time_budget_seconds: int = 540
    logs_ingestion_endpoint: str = ""
    logs_ingestion_rule_id: str = ""
    logs_ingestion_stream: str = ""

    @property
    def catchup_hours(self) -> int:
        """Hours the catch-up looks back: the lookback plus the time an hour takes to seal."""
        return self.catchup_lookback_hours + -(-self.seal_after_minutes // 60)

    @property
    def forwards_to_log_analytics(self) -> bool:
        return bool(self.logs_ingestion_endpoint)

    # Names of what the app owns, all derived from one prefix so tests and tenants can
    # keep separate stores in one account.
    @property
    def records_table(self) -> str:
        return f"{self.store_prefix}records"

    @property
    def lookup_table(self) -> str:
        return f"{self.store_prefix}lookup"

    @property
    def cursor_table(self) -> str:
        return f"{self.store_prefix}cursors"

    @property
    def runs_table(self) -> str:
        return f"{self.store_prefix}runs"

    @property
    def deadletter_container(self) -> str:
        return f"{self.store_prefix}-deadletter"

    @property
    def oversize_container(self) -> str:
        return f"{self.store_prefix}-oversize"


_PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9]{2,29}")
_LOOPBACK = re.compile(r"http://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(/|$)")
_CONTAINER_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {text[:40]!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    if value > maximum:
        raise SettingsError(f"{name} must be at most {maximum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    text = env.get(name, "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be true or false, got {text!r}")


def _retention_days(name: str, value: int) -> int:
    # Azure already keeps 90 days; a shorter archive would delete what the platform still has.
    if value != 0 and not _MIN_RETENTION_DAYS <= value <= _MAX_RETENTION_DAYS:
        raise SettingsError(
            f"{name} must be 0 (keep forever) or {_MIN_RETENTION_DAYS} to {_MAX_RETENTION_DAYS} "
            f"days, got {value}"
        )
    return value


def _category_days(env: Mapping[str, str]) -> dict[str, int]:
    text = env.get(RETENTION_CATEGORY_DAYS, "").strip()
    overrides: dict[str, int] = {}
    if not text:
        return overrides
    known = {category.lower(): category for category in CATEGORIES}
    for item in text.split(","):
        category, sep, days = item.partition("=")
        canonical = known.get(category.strip().lower())
        if not sep or canonical is None:
            raise SettingsError(
                f"{RETENTION_CATEGORY_DAYS} must look like 'Administrative=2555,Security=730' "
                f"with categories from {', '.join(CATEGORIES)}; got {item.strip()!r}"
            )
        try:
            value = int(days.strip())
        except ValueError:
            raise SettingsError(
                f"{RETENTION_CATEGORY_DAYS}: days for {canonical} must be a whole number"
            ) from None
        overrides[canonical] = _retention_days(f"{RETENTION_CATEGORY_DAYS} ({canonical})", value)
    return overrides


def _storage(env: Mapping[str, str]) -> dict[str, str]:
    """The storage connection: a connection string, else the identity-based settings."""
    connection = env.get(STORAGE_CONNECTION, "").strip()
    if connection:
        return {"storage_connection": connection}
    account = env.get(STORAGE_CONNECTION + "__accountName", "").strip()
    blob_uri = env.get(STORAGE_CONNECTION + "__blobServiceUri", "").strip()
    table_uri = env.get(STORAGE_CONNECTION + "__tableServiceUri", "").strip()
    if account:
        blob_uri = blob_uri or f"https://{account}.blob.core.windows.net"
        table_uri = table_uri or f"https://{account}.table.core.windows.net"
    if not blob_uri and not table_uri:
        return {"storage_connection": DEVELOPMENT_STORAGE}
    if not (blob_uri and table_uri):
        raise SettingsError(
            f"{STORAGE_CONNECTION}__blobServiceUri and {STORAGE_CONNECTION}__tableServiceUri "
            f"must both be set (or {STORAGE_CONNECTION}__accountName)"
        )
    return {
        "storage_connection": "",
        "storage_blob_uri": blob_uri,
        "storage_table_uri": table_uri,
        "managed_identity_client_id": env.get(STORAGE_CONNECTION + "__clientId", "").strip(),
    }


def load_settings(env: Mapping[str, str]) -> Settings:
    """Read and validate every app setting; raise SettingsError naming the bad one."""
    archive = env.get(ARCHIVE_CONTAINER, "").strip() or DEFAULT_ARCHIVE_CONTAINER
    if not _CONTAINER_PATTERN.fullmatch(archive):
        raise SettingsError(f"{ARCHIVE_CONTAINER} is not a valid container name: {archive!r}")
    prefix = env.get(STORE_PREFIX, "").strip() or "activitylog"
    if not _PREFIX_PATTERN.fullmatch(prefix):
        raise SettingsError(
            f"{STORE_PREFIX} must be 3 to 30 lowercase letters and digits, starting with a "
            f"letter; got {prefix!r}"
        )
    ingestion = {
        name: env.get(name, "").strip()
        for name in (LOGS_INGESTION_ENDPOINT, LOGS_INGESTION_RULE_ID, LOGS_INGESTION_STREAM)
    }
    given = [name for name, value in ingestion.items() if value]
    if given and len(given) != len(ingestion):
        missing = ", ".join(name for name, value in ingestion.items() if not value)
        raise SettingsError(f"Log Analytics forwarding is half configured: set {missing}")
    stream = ingestion[LOGS_INGESTION_STREAM]
    if stream and not stream.startswith("Custom-"):
        raise SettingsError(f"{LOGS_INGESTION_STREAM} must start with 'Custom-', got {stream!r}")
    endpoint = ingestion[LOGS_INGESTION_ENDPOINT]
    if endpoint and not (endpoint.startswith("https://") or _LOOPBACK.match(endpoint)):
        # A bearer token must never travel in clear text; plain http only to this machine.
        raise SettingsError(f"{LOGS_INGESTION_ENDPOINT} must be an https:// URL, got {endpoint!r}")
    return Settings(
        **_storage(env),
        archive_container=archive,
        store_prefix=prefix,
        catchup_lookback_hours=_int(
            env, CATCHUP_LOOKBACK_HOURS, 3, minimum=1, maximum=_MAX_CATCHUP_LOOKBACK_HOURS
        ),
        seal_after_minutes=_int(
            env, SEAL_AFTER_MINUTES, 120, minimum=1, maximum=_MAX_SEAL_AFTER_MINUTES
        ),
        retention_days=_retention_days(
            RETENTION_DAYS, _int(env, RETENTION_DAYS, 365, minimum=0, maximum=_MAX_RETENTION_DAYS)
        ),
        retention_category_days=_category_days(env),
        retention_dry_run=_bool(env, RETENTION_DRY_RUN),
        retention_time_budget_seconds=_int(
            env,
            RETENTION_TIME_BUDGET_SECONDS,
            540,
            minimum=10,
            maximum=_MAX_RETENTION_TIME_BUDGET_SECONDS,
        ),
        logs_ingestion_endpoint=ingestion[LOGS_INGESTION_ENDPOINT],
        logs_ingestion_rule_id=ingestion[LOGS_INGESTION_RULE_ID],
        logs_ingestion_stream=stream,
    )
