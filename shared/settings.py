"""App settings: every name the app reads, read once into one typed, validated object.

A bad setting every path needs stops the app at startup, by name; a function's own settings
are a section each, whose error is raised only to what reads it (`read_settings`). The command
line refuses any bad setting (`load_settings`).

The constants below are the single source of the setting names: `infra/` and
`local.settings.example.json` set exactly these, and a test holds the three sets equal.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from shared.core.access import PageAccess, read_page_access
from shared.core.records import CATEGORIES
from shared.settings_values import SettingsError as SettingsError  # noqa: PLC0414 (re-exported: its public home)
from shared.settings_values import ascii_whole, flag, whole_number

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
# The record archive's access tier (why Cold: shared/adapters/archive_store.py).
ARCHIVE_TIER = "ACTIVITYLOG_ARCHIVE_TIER"
# Who may use the search page (shared/core/access.py): `signed-in` (the default; Entra ID sign-in
# through App Service authentication) or `local`; and, signed in, an Entra group's object id
# and an app role's value the user must hold ("" = any signed-in user of the tenant).
PAGE_ACCESS = "ACTIVITYLOG_PAGE_ACCESS"
PAGE_ALLOWED_GROUP = "ACTIVITYLOG_PAGE_ALLOWED_GROUP"
PAGE_ALLOWED_ROLE = "ACTIVITYLOG_PAGE_ALLOWED_ROLE"

# Well-known Azurite development storage (a published, public key: not a secret).
DEVELOPMENT_STORAGE = "UseDevelopmentStorage=true"
DEFAULT_ARCHIVE_CONTAINER = "insights-activity-logs"
DEFAULT_ARCHIVE_TIER = "Cold"
ARCHIVE_TIERS = ("Hot", "Cool", "Cold")


# Upper bounds keep date arithmetic in range (no OverflowError on every run). Private: the
# public upper-case names of this module are the setting names (tests/test_infra.py).
_MAX_RETENTION_DAYS = 36_500  # 100 years; 0 still means keep forever
_MIN_RETENTION_DAYS = 90  # Azure already keeps 90 days: a shorter archive deletes what it has
_MAX_CATCHUP_LOOKBACK_HOURS = 7 * 24  # the catch-up's own reach per run; a watermark covers more
_MAX_SEAL_AFTER_MINUTES = 7 * 24 * 60
_MAX_RETENTION_TIME_BUDGET_SECONDS = 24 * 60 * 60  # the timer runs daily


class Section(StrEnum):
    """A function's own settings, read apart from the rest: a bad one stops only the functions
    that read it (see `read_settings`)."""

    RETENTION = "retention"  # the retention timer
    FORWARDING = "forwarding"  # every path that indexes: without it, they index alone
    CATCHUP = "catchup"  # the catch-up timer
    SEAL = "seal"  # the blob trigger, the catch-up and a backfill: when a blob is final
    PAGE = "page"  # the search page's functions: who may use them


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    days: int = 365
    category_days: Mapping[str, int] = field(default_factory=dict)
    dry_run: bool = False
    time_budget_seconds: int = 540


@dataclass(frozen=True, slots=True)
class LogsIngestionSettings:
    """Where Log Analytics forwarding sends: all three set, or forwarding is off."""

    endpoint: str
    rule_id: str
    stream: str


_T = TypeVar("_T")


def _valid(section: _T | SettingsError) -> _T:
    if isinstance(section, SettingsError):
        # A new error each time: one raised again and again would grow its traceback.
        raise SettingsError(str(section), section.setting)
    return section


@dataclass(frozen=True, slots=True)
class Settings:
    """What every path needs, checked at once; each function's own settings, each kept as its
    value or as the error that names the bad setting, raised to whatever reads it."""

    # A connection string (Azurite, local runs) or "" when the identity settings below apply.
    storage_connection: str = DEVELOPMENT_STORAGE
    storage_blob_uri: str = ""
    storage_table_uri: str = ""
    managed_identity_client_id: str = ""
    archive_container: str = DEFAULT_ARCHIVE_CONTAINER
    store_prefix: str = "activitylog"
    archive_tier: str = DEFAULT_ARCHIVE_TIER
    retention_section: RetentionSettings | SettingsError = field(default_factory=RetentionSettings)
    logs_ingestion_section: LogsIngestionSettings | SettingsError | None = None
    catchup_lookback_section: int | SettingsError = 3
    seal_after_section: int | SettingsError = 120
    page_access_section: PageAccess | SettingsError = field(default_factory=PageAccess)

    @property
    def invalid(self) -> dict[Section, SettingsError]:
        """The sections whose settings are bad, with the error naming the setting."""
        sections = {
            Section.RETENTION: self.retention_section,
            Section.FORWARDING: self.logs_ingestion_section,
            Section.CATCHUP: self.catchup_lookback_section,
            Section.SEAL: self.seal_after_section,
            Section.PAGE: self.page_access_section,
        }
        return {name: value for name, value in sections.items() if isinstance(value, SettingsError)}

    def retention(self) -> RetentionSettings:
        return _valid(self.retention_section)

    def logs_ingestion(self) -> LogsIngestionSettings | None:
        """Where to forward; None when forwarding is off. Raises when its settings are bad."""
        return _valid(self.logs_ingestion_section)

    @property
    def retention_days(self) -> int:
        return self.retention().days

    @property
    def retention_category_days(self) -> Mapping[str, int]:
        return self.retention().category_days

    @property
    def retention_dry_run(self) -> bool:
        return self.retention().dry_run

    @property
    def retention_time_budget_seconds(self) -> int:
        return self.retention().time_budget_seconds

    @property
    def catchup_lookback_hours(self) -> int:
        return _valid(self.catchup_lookback_section)

    @property
    def seal_after_minutes(self) -> int:
        return _valid(self.seal_after_section)

    @property
    def page_access(self) -> PageAccess:
        """Who may use the search page. Raises when its settings are bad, or unsafe here."""
        return _valid(self.page_access_section)

    @property
    def catchup_hours(self) -> int:
        """Hours the catch-up looks back: the lookback plus the time an hour takes to seal."""
        return self.catchup_lookback_hours + -(-self.seal_after_minutes // 60)

    # Names of what the app owns, all derived from one prefix so tests and tenants can
    # keep separate stores in one account.
    @property
    def index_table_prefix(self) -> str:
        """Index tables are one a month: this prefix, then `YYYYMM` (retention drops a month)."""
        return f"{self.store_prefix}idx"

    @property
    def records_container(self) -> str:
        """The app's archive: every normalized record once, gzip JSON Lines (the system of
        record; not Azure's own export, which is `archive_container`)."""
        return f"{self.store_prefix}-records"

    @property
    def cursor_table(self) -> str:
        return f"{self.store_prefix}cursors"

    @property
    def runs_table(self) -> str:
        return f"{self.store_prefix}runs"

    @property
    def deadletter_container(self) -> str:
        return f"{self.store_prefix}-deadletter"


_PAGE_SETTINGS = (PAGE_ACCESS, PAGE_ALLOWED_GROUP, PAGE_ALLOWED_ROLE)
_PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9]{2,29}")
_LOOPBACK = re.compile(r"http://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(/|$)")
_TIER_PATTERN = re.compile("|".join(ARCHIVE_TIERS), re.IGNORECASE)
_CONTAINER_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
# Event Hubs' naming rules: letters, digits, periods, hyphens and underscores, starting and
# ending with a letter or digit; a consumer group may also be the built-in `$Default`.
_EVENTHUB_PATTERN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,254}[A-Za-z0-9])?")
_CONSUMER_GROUP_PATTERN = re.compile(r"\$Default|[A-Za-z0-9](?:[A-Za-z0-9._-]{0,48}[A-Za-z0-9])?")


def _matching(env: Mapping[str, str], name: str, default: str, pattern: re.Pattern[str]) -> str:
    value = env.get(name, "").strip() or default
    if not pattern.fullmatch(value):
        shown = {
            STORE_PREFIX: "3 to 30 lowercase letters and digits, starting with a letter",
            ARCHIVE_TIER: "one of " + ", ".join(ARCHIVE_TIERS),
        }.get(name, f"a valid name like {default!r}")
        raise SettingsError(f"{name} must be {shown}; got {value[:64]!r}", name)
    return value


def _retention_days(name: str, value: int, setting: str = RETENTION_DAYS) -> int:
    # Azure already keeps 90 days; a shorter archive would delete what the platform still has.
    if value != 0 and not _MIN_RETENTION_DAYS <= value <= _MAX_RETENTION_DAYS:
        raise SettingsError(
            f"{name} must be 0 (keep forever) or {_MIN_RETENTION_DAYS} to {_MAX_RETENTION_DAYS} "
            f"days, got {value}",
            setting,
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
                f"with categories from {', '.join(CATEGORIES)}; got {item.strip()!r}",
                RETENTION_CATEGORY_DAYS,
            )
        value = ascii_whole(days)
        if value is None:
            raise SettingsError(
                f"{RETENTION_CATEGORY_DAYS}: days for {canonical} must be a whole number",
                RETENTION_CATEGORY_DAYS,
            )
        if canonical in overrides:  # one reading of the setting, not "the last one wins"
            raise SettingsError(
                f"{RETENTION_CATEGORY_DAYS} names {canonical} twice", RETENTION_CATEGORY_DAYS
            )
        name = f"{RETENTION_CATEGORY_DAYS} ({canonical})"
        overrides[canonical] = _retention_days(name, value, RETENTION_CATEGORY_DAYS)
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
            f"must both be set (or {STORAGE_CONNECTION}__accountName)",
            STORAGE_CONNECTION,
        )
    return {
        "storage_connection": "",
        "storage_blob_uri": blob_uri,
        "storage_table_uri": table_uri,
        "managed_identity_client_id": env.get(STORAGE_CONNECTION + "__clientId", "").strip(),
    }


def _event_hub(env: Mapping[str, str]) -> None:
    """The hub and consumer group, when set (the host resolves them for the trigger)."""
    for name, pattern in (
        (EVENTHUB_NAME, _EVENTHUB_PATTERN),
        (EVENTHUB_CONSUMER_GROUP, _CONSUMER_GROUP_PATTERN),
    ):
        value = env.get(name, "").strip()
        if value and not pattern.fullmatch(value):
            raise SettingsError(f"{name} is not a valid Event Hubs name: {value[:60]!r}", name)


def _retention(env: Mapping[str, str]) -> RetentionSettings:
    days = whole_number(env, RETENTION_DAYS, 365, minimum=0, maximum=_MAX_RETENTION_DAYS)
    return RetentionSettings(
        days=_retention_days(RETENTION_DAYS, days),
        category_days=_category_days(env),
        dry_run=flag(env, RETENTION_DRY_RUN),
        time_budget_seconds=whole_number(
            env,
            RETENTION_TIME_BUDGET_SECONDS,
            540,
            minimum=10,
            maximum=_MAX_RETENTION_TIME_BUDGET_SECONDS,
        ),
    )


def _logs_ingestion(env: Mapping[str, str]) -> LogsIngestionSettings | None:
    names = (LOGS_INGESTION_ENDPOINT, LOGS_INGESTION_RULE_ID, LOGS_INGESTION_STREAM)
    endpoint, rule_id, stream = (env.get(name, "").strip() for name in names)
    given = [name for name, value in zip(names, (endpoint, rule_id, stream), strict=True) if value]
    if not given:
        return None
    if missing := [name for name in names if name not in given]:
        raise SettingsError(
            f"Log Analytics forwarding is half configured: {', '.join(given)} set, but not "
            f"{', '.join(missing)}",
            missing[0],
        )
    if not stream.startswith("Custom-"):
        raise SettingsError(
            f"{LOGS_INGESTION_STREAM} must start with 'Custom-', got {stream!r}",
            LOGS_INGESTION_STREAM,
        )
    if not (endpoint.startswith("https://") or _LOOPBACK.match(endpoint)):
        # A bearer token must never travel in clear text; plain http only to this machine.
        raise SettingsError(
            f"{LOGS_INGESTION_ENDPOINT} must be an https:// URL, got {endpoint!r}",
            LOGS_INGESTION_ENDPOINT,
        )
    return LogsIngestionSettings(endpoint, rule_id, stream)


def _section(read: Callable[[Mapping[str, str]], _T], env: Mapping[str, str]) -> _T | SettingsError:
    try:
        return read(env)
    except SettingsError as error:
        return error


def read_settings(env: Mapping[str, str]) -> Settings:
    """Read every app setting. What every path needs raises SettingsError naming the setting;
    a function's own section keeps its error, raised when read (`Settings.invalid`)."""
    archive = _matching(env, ARCHIVE_CONTAINER, DEFAULT_ARCHIVE_CONTAINER, _CONTAINER_PATTERN)
    prefix = _matching(env, STORE_PREFIX, "activitylog", _PREFIX_PATTERN)
    tier = _matching(env, ARCHIVE_TIER, DEFAULT_ARCHIVE_TIER, _TIER_PATTERN).capitalize()
    _event_hub(env)
    return Settings(
        **_storage(env),
        archive_container=archive,
        store_prefix=prefix,
        archive_tier=tier,
        retention_section=_section(_retention, env),
        logs_ingestion_section=_section(_logs_ingestion, env),
        catchup_lookback_section=_section(
            lambda e: whole_number(e, CATCHUP_LOOKBACK_HOURS, 3, 1, _MAX_CATCHUP_LOOKBACK_HOURS),
            env,
        ),
        seal_after_section=_section(
            lambda e: whole_number(e, SEAL_AFTER_MINUTES, 120, 1, _MAX_SEAL_AFTER_MINUTES), env
        ),
        page_access_section=_section(
            lambda e: read_page_access(e, _PAGE_SETTINGS, SettingsError), env
        ),
    )


def load_settings(env: Mapping[str, str]) -> Settings:
    """Read and validate every app setting; raise SettingsError naming the first bad one (the
    command line and the tests: a local command refuses any bad setting before it starts)."""
    settings = read_settings(env)
    for error in settings.invalid.values():
        raise error
    return settings
