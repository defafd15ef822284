"""Turn one decoded Activity Log event into the normalized record of the spec, or a rejection.

Pure: no I/O; nothing here raises. `normalize_input` (decode + normalize, as lists) is what the
CLI and the Event Hub path call, `iter_normalized` the same one result at a time for inputs too
big to hold, `normalize` one decoded event (the blob indexer, line by line).

Where the spec is silent:
- A field that a rule reads is consumed when its column carries its value. A lower-precedence
  alternative that says something else (a REST `subscriptionId` other than the resource id's, a
  `description` beside a different `resultDescription`, a `Level` number that disagrees with the
  `level` name, an `eventTimestamp` other than `time`, a REST `resourceProviderName` other than
  the operation's namespace) stays in AdditionalFields, so nothing the input carried is lost.
  So does a REST `{value, localizedValue}` object whose `localizedValue` no column holds (a
  `category` of "Resource Health"), and any value of the wrong JSON type for its column
  (with a warning).
- Strings are trimmed where the spec says so; AadTenantId and the REST `resourceGroupName` are
  trimmed and lower-cased too (a real tenantid claim has a trailing space).
- Keys inside `properties` (`eventCategory`, `subscriptionId`, `tenantId`, `eventDataId`,
  `hierarchy`) match without regard to case: PIM events send `SubscriptionID`, `TenantID`.
- A `time` that does not parse falls back to `eventTimestamp` (with a warning); only when
  neither parses is the event rejected.
- EventKey is computed before the blob path's subscription fills an empty SubscriptionId, so an
  event has one key whether it came by Event Hub or by blob.
- The record shares nested objects (properties, claims, ...) with the event: copy before
  mutating either.
"""

from __future__ import annotations

import gc
import hashlib
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from shared.core.decode import ExactNumber, RawEvent, decode, json_type, loads
from shared.core.records import COLUMNS, NormalizedRecord, Rejection
from shared.settings import CATEGORIES

# ---------------------------------------------------------------------------------------------
# Time

_ISO_TIME = re.compile(
    r"\s*([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2})"
    r"(?::([0-9]{2})(?:[.,]([0-9]+))?)?"
    r"\s*(?:[Zz]|([+-])([0-9]{2})(?::?([0-9]{2}))?)?\s*"
)
_US_TIME = re.compile(
    r"\s*([0-9]{1,2})/([0-9]{1,2})/([0-9]{4})[ T]+([0-9]{1,2}):([0-9]{2})"
    r"(?::([0-9]{2})(?:\.([0-9]+))?)?"
    r"\s*(?:([AaPp])[Mm])?"
    r"\s*(?:[Zz]|([+-])([0-9]{2})(?::?([0-9]{2}))?)?\s*"
)
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_LAST_DAY = {f"{month:02d}": str(_DAYS_IN_MONTH[month]) for month in range(1, 13)} | {"02": "29"}


def parse_time(value: object) -> str | None:
    """`YYYY-MM-DDTHH:MM:SS.fffffffZ` in UTC, or None when the value is not a time we accept.

    Accepted: ISO-8601 with any number of fractional digits (beyond seven truncated, never
    rounded), `Z`, an offset (`+05:30`, `-0800`, `+05`) or no zone (UTC); and the US form
    `M/d/yyyy h:mm:ss` with optional fraction, `AM`/`PM` and offset. Impossible dates are None.
    """
    if not isinstance(value, str):
        return None
    match = _ISO_TIME.fullmatch(value)
    if match is None:
        return _parse_us_time(value)
    year, month, day, hour, minute, second, fraction, sign, offset_hours, offset_minutes = (
        match.groups()
    )
    second = second or "00"
    # Validated on the digits as text: zero-padded two-digit fields compare like numbers.
    if (
        year == "0000"
        or not "01" <= month <= "12"
        or not "01" <= day <= _LAST_DAY[month]
        or (month == "02" and day == "29" and not _is_leap(int(year)))
        or hour > "23"
        or minute > "59"
        or second > "59"
    ):
        return None
    digits = (fraction + "000000")[:7] if fraction else "0000000"
    if sign is None or (offset_hours == "00" and offset_minutes in (None, "00")):
        return f"{year}-{month}-{day}T{hour}:{minute}:{second}.{digits}Z"
    return _shifted(
        int(year), int(month), int(day), int(hour), int(minute), int(second), digits,
        sign, offset_hours, offset_minutes,
    )  # fmt: skip


def _parse_us_time(value: str) -> str | None:
    match = _US_TIME.fullmatch(value)
    if match is None:
        return None
    month, day, year, hour, minute = (int(part) for part in match.group(1, 2, 3, 4, 5))
    second_text, fraction, meridiem, sign, offset_hours, offset_minutes = match.group(
        6, 7, 8, 9, 10, 11
    )
    second = int(second_text) if second_text else 0
    if meridiem is not None:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if meridiem in "Pp" else 0)
    if not (
        year >= 1
        and 1 <= month <= 12
        and 1 <= day <= _days_in_month(year, month)
        and hour <= 23
        and minute <= 59
        and second <= 59
    ):
        return None
    digits = (fraction + "000000")[:7] if fraction else "0000000"
    return _shifted(
        year, month, day, hour, minute, second, digits, sign, offset_hours, offset_minutes
    )


def _shifted(
    year: int,
    month: int,
    day: int,
    hour: int,
    minute: int,
    second: int,
    digits: str,
    sign: str | None,
    offset_hours: str | None,
    offset_minutes: str | None,
) -> str | None:
    """The canonical text of a valid local time, moved to UTC by its offset (if any)."""
    if sign is not None and offset_hours is not None:
        hours = int(offset_hours)
        minutes = int(offset_minutes) if offset_minutes else 0
        if hours > 23 or minutes > 59:
            return None
        if hours or minutes:
            offset = timedelta(hours=hours, minutes=minutes)
            moment = datetime(year, month, day, hour, minute, second)  # naive, in UTC
            try:
                moment = moment - offset if sign == "+" else moment + offset
            except OverflowError:
                return None
            year, month, day = moment.year, moment.month, moment.day
            hour, minute, second = moment.hour, moment.minute, moment.second
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{digits}Z"


def _days_in_month(year: int, month: int) -> int:
    if month == 2 and _is_leap(year):
        return 29
    return _DAYS_IN_MONTH[month]


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


# ---------------------------------------------------------------------------------------------
# Rule tables

_ADMINISTRATIVE = "Administrative"
_CATEGORY_BY_NAME: dict[str, str] = {category.lower(): category for category in CATEGORIES}
# The legacy export's categories were the kind of write; all of them are administrative.
_CATEGORY_BY_NAME.update(write=_ADMINISTRATIVE, delete=_ADMINISTRATIVE, action=_ADMINISTRATIVE)

_STATUS_BY_NAME = {
    "success": "Succeeded",
    "succeeded": "Succeeded",
    "start": "Started",
    "started": "Started",
    "accept": "Accepted",
    "accepted": "Accepted",
    "failure": "Failed",
    "failed": "Failed",
}

_LEVEL_BY_NAME = {
    "critical": "Critical",
    "error": "Error",
    "warning": "Warning",
    "information": "Informational",
    "informational": "Informational",
    "verbose": "Verbose",
}
_LEVEL_BY_NUMBER = {1: "Critical", 2: "Error", 3: "Warning", 4: "Informational", 5: "Verbose"}
_LEVEL_BY_DIGIT = {str(number): name for number, name in _LEVEL_BY_NUMBER.items()}

_CLAIMS = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/"
_CALLER_CLAIMS = (
    _CLAIMS + "upn",
    _CLAIMS + "emailaddress",
    _CLAIMS + "name",
    _CLAIMS + "spn",
    "appid",
)
_TENANT_CLAIMS = ("http://schemas.microsoft.com/identity/claims/tenantid", "tid")

_SUBSCRIPTION_IN_ID = re.compile(r"/subscriptions?/([^/]+)")
_RESOURCE_GROUP_IN_ID = re.compile(r"/resourcegroups/([^/]+)")
_PROVIDERS = "/providers/"
_INTEGER = re.compile(r"\s*-?[0-9]{1,19}\s*")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_REST_KEYS = frozenset({"value", "localizedValue"})
_JSON_SPACE = " \t\r\n"

# Every top-level field some rule reads; the rest go to AdditionalFields untouched.
_RULE_FIELDS = frozenset(
    {
        "time",
        "eventTimestamp",
        "category",
        "operationName",
        "resourceProviderName",
        "resultType",
        "status",
        "resultSignature",
        "subStatus",
        "level",
        "Level",
        "resourceId",
        "subscriptionId",
        "resourceGroupName",
        "caller",
        "callerIpAddress",
        "correlationId",
        "operationId",
        "eventDataId",
        "location",
        "resultDescription",
        "description",
        "durationMs",
        "hierarchy",
        "tenantId",
        "identity",
        "authorization",
        "claims",
        "properties",
        "httpRequest",
    }
)
_UNKEYED_COLUMNS = ("NormalizationWarnings", "EventKey")
_KEYED_COLUMNS = tuple(column for column in COLUMNS if column not in _UNKEYED_COLUMNS)
# Keys read inside `properties`, matched without regard to case (PIM events send `TenantID`).
_PROPERTY_FIELDS = ("eventcategory", "subscriptionid", "tenantid", "eventdataid", "hierarchy")
_PROPERTY_SLOTS = {name: slot for slot, name in enumerate(_PROPERTY_FIELDS)}
_PROPERTY_KEY_LENGTHS = frozenset(len(name) for name in _PROPERTY_FIELDS)
_NO_PROPERTY_VALUES = (None,) * len(_PROPERTY_FIELDS)


# ---------------------------------------------------------------------------------------------
# Public API


def normalize_input(
    data: bytes | str, source: str, fallback_subscription: str = ""
) -> tuple[list[NormalizedRecord], list[Rejection]]:
    """Decode one input (file, blob, Event Hub body) and normalize each of its events."""
    records: list[NormalizedRecord] = []
    rejections: list[Rejection] = []
    with _collector_paused():
        for result in iter_normalized(data, source, fallback_subscription):
            if isinstance(result, Rejection):
                rejections.append(result)
            else:
                records.append(result)
    return records, rejections


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause CPython's cycle collector while a list of records grows.

    Records are trees of JSON values, never cycles, so reference counting frees them all; but
    every few hundred allocations the collector would walk the whole growing heap again
    (about a fifth of the time of a 30,000-record input, measured).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def iter_normalized(
    data: bytes | str, source: str, fallback_subscription: str = ""
) -> Iterator[NormalizedRecord | Rejection]:
    """`normalize_input` one result at a time, in input order: for inputs too big to hold."""
    for item in decode(data, source):
        if isinstance(item, Rejection):
            yield item
        else:
            yield normalize(
                item.event,
                source=item.source,
                raw=item,
                fallback_subscription=fallback_subscription,
            )


def normalize(
    event: dict[str, Any],
    *,
    source: str,
    raw: str | RawEvent,
    fallback_subscription: str = "",
) -> NormalizedRecord | Rejection:
    """The normalized record of one event, or its rejection (no parseable time).

    `raw` is the event's text, or the RawEvent it was decoded as: its text is then made only
    if the event is rejected.
    """
    if not isinstance(event, dict):
        reason = f"not an object: got {json_type(event)}"
    else:
        try:
            result = _normalize(event, fallback_subscription)
        except Exception as error:
            # A defect here must not lose a batch: the event is dead-lettered with the cause.
            result = f"normalizer error: {type(error).__name__}: {error}"
        if not isinstance(result, str):
            return result
        reason = result
    if isinstance(raw, str):
        return Rejection(reason, source, raw)
    text = raw.raw
    exact = raw.raw_bytes
    return Rejection(reason, source, text, b"" if exact == text.encode() else exact)


def event_key(record: NormalizedRecord) -> str:
    """First 32 hex digits of SHA-256 over the canonical JSON of the record's keyed columns."""
    return _digest({column: record.get(column) for column in _KEYED_COLUMNS})


def _digest(keyed: dict[str, Any]) -> str:
    canonical = orjson.dumps(keyed, option=_KEY_OPTIONS, default=_bare_number)
    return hashlib.sha256(canonical).hexdigest()[:32]


# Subclasses go to `_bare_number`: an ExactNumber is hashed as the number it is.
_KEY_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS


def _bare_number(value: object) -> orjson.Fragment:
    if isinstance(value, ExactNumber):
        return orjson.Fragment(str.__str__(value))
    raise TypeError(f"not JSON: {type(value).__name__}")


# ---------------------------------------------------------------------------------------------
# The rules


def _normalize(event: dict[str, Any], fallback_subscription: str) -> NormalizedRecord | str:
    """The record, or the reason it cannot be one."""
    warnings: list[str] = []
    extra = {key: value for key, value in event.items() if key not in _RULE_FIELDS}

    time_generated = _time_generated(event, warnings, extra)
    if time_generated is None:
        return _time_reason(event)

    properties, property_values = _properties(event.get("properties"), warnings, extra)
    (
        event_category,
        property_subscription,
        property_tenant,
        property_event_data,
        property_hierarchy,
    ) = property_values
    authorization, claims = _identity(event, warnings, extra)

    # Operation
    operation_field = event.get("operationName")
    if type(operation_field) is str:
        operation_value = operation_name = operation_field
    else:
        operation_value, localized = _rest_field(event, "operationName", warnings, extra)
        operation_name = localized or operation_value
    operation_name_value = operation_value.strip().lower()

    # Resource
    resource_id, subscription_id, resource_group, id_provider = _resource_parts(
        _string(event, "resourceId", warnings, extra)
    )

    slash = operation_name_value.find("/")
    provider = operation_name_value[:slash].strip() if slash > 0 else id_provider
    if "resourceProviderName" in event:
        received, localized = _rest_field(event, "resourceProviderName", warnings, extra)
        rest_provider = received.strip().lower()
        if not provider:
            provider = rest_provider
        if rest_provider not in ("", provider) or _localized_differs(localized, received):
            extra["resourceProviderName"] = event["resourceProviderName"]

    if not subscription_id:
        subscription_id = _as_text(property_subscription).strip().lower()
    if "subscriptionId" in event:
        rest_subscription = _string(event, "subscriptionId", warnings, extra).strip().lower()
        if not subscription_id:
            subscription_id = rest_subscription
        elif rest_subscription not in ("", subscription_id):
            extra["subscriptionId"] = event["subscriptionId"]

    if "resourceGroupName" in event:
        rest_group = _string(event, "resourceGroupName", warnings, extra).strip().lower()
        if not resource_group:
            resource_group = rest_group
        elif rest_group not in ("", resource_group):
            extra["resourceGroupName"] = event["resourceGroupName"]

    # Status
    status = _status(_string(event, "resultType", warnings, extra))
    if "status" in event:
        received, localized = _rest_field(event, "status", warnings, extra)
        rest_status = _status(received)
        if not status:
            status = rest_status
        if rest_status not in ("", status) or _localized_differs(localized, received):
            extra["status"] = event["status"]
    substatus = _string(event, "resultSignature", warnings, extra).strip()
    if "subStatus" in event:
        received, localized = _rest_field(event, "subStatus", warnings, extra)
        rest_substatus = received.strip()
        if not substatus:
            substatus = rest_substatus
        if rest_substatus not in ("", substatus) or _localized_differs(localized, received):
            extra["subStatus"] = event["subStatus"]

    # Who
    caller = _string(event, "caller", warnings, extra).strip()
    if not caller and claims:
        caller = _first_claim(claims, _CALLER_CLAIMS)
    tenant = _string(event, "tenantId", warnings, extra).strip().lower()
    if not tenant:
        tenant = _as_text(property_tenant).strip().lower()
        if not tenant and claims:
            tenant = _first_claim(claims, _TENANT_CLAIMS).lower()

    event_data_id = _string(event, "eventDataId", warnings, extra).strip()
    if not event_data_id:
        event_data_id = _as_text(property_event_data).strip()
    hierarchy = _string(event, "hierarchy", warnings, extra)
    if not hierarchy:
        hierarchy = _as_text(property_hierarchy)

    description = _string(event, "resultDescription", warnings, extra)
    if "description" in event:
        other_description = _string(event, "description", warnings, extra)
        if not description:
            description = other_description
        elif other_description not in ("", description):
            extra["description"] = event["description"]

    http_request = _object_field(event, "httpRequest", warnings, extra)

    record: NormalizedRecord = {
        "TimeGenerated": time_generated,
        "CategoryValue": _category(event, event_category, warnings, extra),
        "OperationNameValue": operation_name_value,
        "OperationName": operation_name,
        "ResourceProviderValue": provider,
        "ActivityStatusValue": status,
        "ActivitySubstatusValue": substatus,
        "Level": _level(event, warnings, extra),
        "ResourceId": resource_id,
        "SubscriptionId": subscription_id,
        "ResourceGroup": resource_group,
        "Caller": caller,
        "CallerIpAddress": _string(event, "callerIpAddress", warnings, extra).strip(),
        "CorrelationId": _string(event, "correlationId", warnings, extra).strip(),
        "OperationId": _string(event, "operationId", warnings, extra).strip(),
        "EventDataId": event_data_id,
        "Location": _string(event, "location", warnings, extra),
        "Description": description,
        "DurationMs": _duration(event, warnings, extra),
        "Hierarchy": hierarchy,
        "AadTenantId": tenant,
        "Authorization_d": authorization,
        "Claims_d": claims,
        "Properties_d": properties,
        "HttpRequest": http_request,
        "AdditionalFields": extra,
    }
    key = _digest(record)  # before the path's subscription: see the module's notes
    if not subscription_id and fallback_subscription:
        record["SubscriptionId"] = fallback_subscription.strip().lower()
        warnings.append("SubscriptionId taken from the blob path")
    record["NormalizationWarnings"] = warnings
    record["EventKey"] = key
    return record


@lru_cache(maxsize=4096)  # the same resources recur all through a log
def _resource_parts(resource_id: str) -> tuple[str, str, str, str]:
    """(ResourceId, its subscription, resource group and last provider namespace)."""
    lowered = resource_id.strip().lower()
    subscription = group = provider = ""
    match = _SUBSCRIPTION_IN_ID.search(lowered)
    if match is not None:
        subscription = match.group(1).strip()
    match = _RESOURCE_GROUP_IN_ID.search(lowered)
    if match is not None:
        group = match.group(1)
    at = lowered.rfind(_PROVIDERS)
    if at >= 0:
        provider = lowered[at + len(_PROVIDERS) :].split("/", 1)[0].strip()
    return lowered, subscription, group, provider


def _time_generated(
    event: dict[str, Any], warnings: list[str], extra: dict[str, Any]
) -> str | None:
    value = event.get("time")
    alternate = event.get("eventTimestamp")
    parsed = parse_time(value)
    if parsed is not None:
        if alternate is not None and parse_time(alternate) != parsed:
            extra["eventTimestamp"] = alternate
        return parsed
    parsed = parse_time(alternate)
    if parsed is not None and value is not None:
        extra["time"] = value
        warnings.append(f"time {_short(value)} does not parse; eventTimestamp used")
    return parsed


def _time_reason(event: dict[str, Any]) -> str:
    present = [key for key in ("time", "eventTimestamp") if event.get(key) is not None]
    if not present:
        return "no time: the event has neither 'time' nor 'eventTimestamp'"
    shown = ", ".join(f"{key}={_short(event[key])}" for key in present)
    return f"no parseable time: {shown}"


def _category(
    event: dict[str, Any], event_category: object, warnings: list[str], extra: dict[str, Any]
) -> str:
    named = (
        _CATEGORY_BY_NAME.get(event_category.strip().lower())
        if isinstance(event_category, str)
        else None
    )
    if "category" not in event:
        received = localized = ""
    elif type(event["category"]) is str:
        received, localized = event["category"], ""
    else:
        received, localized = _rest_field(event, "category", warnings, extra)
    mapped = _CATEGORY_BY_NAME.get(received.strip().lower())
    category = named or mapped
    if category is None:
        category = received or _as_text(event_category)
        warnings.append(f"unknown category {category!r}" if category else "no category")
    elif received and mapped != category:
        extra["category"] = event["category"]  # it named another category than eventCategory
    if _localized_differs(localized, received):
        extra["category"] = event["category"]
    return category


def _status(value: str) -> str:
    trimmed = value.strip()
    name = trimmed.lower()
    if name.endswith("."):
        name = name[:-1]
    return _STATUS_BY_NAME.get(name, trimmed)


def _level(event: dict[str, Any], warnings: list[str], extra: dict[str, Any]) -> str:
    lower, upper = event.get("level"), event.get("Level")
    if upper is None and type(lower) is str:  # the usual case, one level name
        name = _LEVEL_BY_NAME.get(lower.strip().lower())
        if name is not None:
            return name
    given = [
        (key, value) for key, value in (("level", lower), ("Level", upper)) if value is not None
    ]
    chosen_key, chosen = "", ""
    for key, value in given:  # a level name wins over a number
        if isinstance(value, str) and value.strip().lower() in _LEVEL_BY_NAME:
            chosen_key, chosen = key, _LEVEL_BY_NAME[value.strip().lower()]
            break
    else:
        for key, value in given:
            number = _level_number(value)
            if number:
                chosen_key, chosen = key, number
                break
    for key, value in given:
        if key == chosen_key:
            continue
        other = _level_number(value) or (
            _LEVEL_BY_NAME.get(value.strip().lower(), "") if isinstance(value, str) else ""
        )
        if other and other == chosen:
            continue
        extra[key] = value
        if chosen and other:
            warnings.append(
                f"levels disagree: {chosen_key}={_short(event[chosen_key])} is {chosen}, "
                f"{key}={_short(value)} is {other}; {chosen} kept"
            )
        else:
            warnings.append(f"unknown level {key}={_short(value)}")
    return chosen


def _level_number(value: object) -> str:
    if isinstance(value, bool):
        return ""
    if isinstance(value, int):
        return _LEVEL_BY_NUMBER.get(value, "")
    if isinstance(value, float):
        return _LEVEL_BY_NUMBER.get(int(value), "") if value.is_integer() else ""
    if isinstance(value, str):
        return _LEVEL_BY_DIGIT.get(value.strip(), "")
    return ""


def _duration(event: dict[str, Any], warnings: list[str], extra: dict[str, Any]) -> int | None:
    value = event.get("durationMs")
    if value is None or value == "":
        return None
    milliseconds: int | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        milliseconds = value
    elif isinstance(value, str):
        if _INTEGER.fullmatch(value):
            milliseconds = int(value)
    elif isinstance(value, float) and value.is_integer():
        milliseconds = int(value)
    if milliseconds is not None and _INT64_MIN <= milliseconds <= _INT64_MAX:
        return milliseconds
    extra["durationMs"] = value
    warnings.append(f"durationMs {_short(value)} is not a whole number; kept in AdditionalFields")
    return None


def _identity(
    event: dict[str, Any], warnings: list[str], extra: dict[str, Any]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Authorization_d and Claims_d, from `identity` in any of its shapes, then REST fields."""
    identity = event.get("identity")
    if type(identity) is dict and "authorization" not in event and "claims" not in event:
        # The usual shape, {"authorization": {...}, "claims": {...}}, taken as it is.
        authorization = identity.get("authorization")
        claims = identity.get("claims")
        if (
            type(claims) is dict
            and (authorization is None or type(authorization) is dict)
            and len(identity) == (1 if authorization is None else 2)
        ):
            return authorization, claims
    authorization = claims = None
    if identity is not None:
        wrapper = _object_of(identity)
        if wrapper is None:
            # A plain string ("John Doe") or another non-object: kept, not guessed at.
            extra["identity"] = identity
            if not isinstance(identity, str):
                warnings.append(f"identity is a JSON {json_type(identity)}, not an object")
        else:
            leftover: dict[str, Any] = {}
            claims_key = "claims" if "claims" in wrapper else "claim" if "claim" in wrapper else ""
            for key, value in wrapper.items():
                if key == "authorization":
                    authorization = _object_of(value)
                    if authorization is None and value is not None:
                        leftover[key] = value
                elif key == claims_key:
                    claims = _object_of(value)
                    if claims is None and value is not None:
                        leftover[key] = value
                elif claims_key:
                    leftover[key] = value  # beside a claims wrapper: not a claim itself
            if not claims_key:
                # Flat identity: its keys are the claims themselves.
                flat = {key: value for key, value in wrapper.items() if key != "authorization"}
                claims = flat or None
            if leftover:
                extra["identity"] = leftover
                warnings.append(f"identity fields kept in AdditionalFields: {sorted(leftover)}")
    for key in ("authorization", "claims"):
        if key not in event or event[key] is None:
            continue
        value = event[key]
        parsed = _object_of(value)
        current = authorization if key == "authorization" else claims
        if current is None and parsed is not None:
            if key == "authorization":
                authorization = parsed
            else:
                claims = parsed
        elif parsed != current:
            extra[key] = value
            if parsed is None:
                warnings.append(f"{key} is a JSON {json_type(value)}, not an object")
    return authorization, claims


def _first_claim(claims: dict[str, Any], names: tuple[str, ...]) -> str:
    for name in names:
        value = claims.get(name)
        if isinstance(value, str):
            value = value.strip()
            if value:
                return value
    return ""


def _properties(
    value: object, warnings: list[str], extra: dict[str, Any]
) -> tuple[dict[str, Any] | None, Sequence[Any]]:
    """`properties` with every top-level string that holds a JSON object or array parsed, and
    the values of _PROPERTY_FIELDS in it (the first non-null under any case), in one pass."""
    if value is None:
        return None, _NO_PROPERTY_VALUES
    properties = _object_of(value)
    if properties is None:
        extra["properties"] = value
        warnings.append(f"properties is a JSON {json_type(value)}, not an object")
        return None, _NO_PROPERTY_VALUES
    values: list[Any] = [None] * len(_PROPERTY_FIELDS)
    parsed: dict[str, Any] | None = None  # copied only when something changes
    for key, item in properties.items():
        found = item
        if type(item) is str and item:
            first = item[0]
            if first in _JSON_SPACE:
                first = item.lstrip(_JSON_SPACE)[:1]
            if first == "{" or first == "[":  # noqa: PLR1714 - faster than `in` on this path
                try:
                    nested = loads(item)
                except orjson.JSONDecodeError as error:
                    warnings.append(f"properties.{key} looks like JSON but does not parse: {error}")
                else:
                    if parsed is None:
                        parsed = dict(properties)
                    parsed[key] = found = nested
        # Only a key of one of the fields' lengths can be one: most keys skip lower().
        if found is not None and len(key) in _PROPERTY_KEY_LENGTHS:
            slot = _PROPERTY_SLOTS.get(key.lower())
            if slot is not None and values[slot] is None:
                values[slot] = found
    return (parsed if parsed is not None else properties), values


def _object_field(
    event: dict[str, Any], key: str, warnings: list[str], extra: dict[str, Any]
) -> dict[str, Any] | None:
    value = event.get(key)
    if value is None:
        return None
    parsed = _object_of(value)
    if parsed is None:
        extra[key] = value
        warnings.append(f"{key} is a JSON {json_type(value)}, not an object")
    return parsed


def _object_of(value: object) -> dict[str, Any] | None:
    """The object itself, or the object a string holds as JSON; None for anything else."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.lstrip(_JSON_SPACE).startswith("{"):
        try:
            parsed = loads(value)
        except orjson.JSONDecodeError:
            return None
        if isinstance(parsed, dict):
            return parsed
    return None


def _string(event: dict[str, Any], key: str, warnings: list[str], extra: dict[str, Any]) -> str:
    """A string column's input: text as received ('' when absent); a JSON scalar as its text."""
    value = event.get(key)
    if type(value) is str:
        return value
    if value is None:
        return ""
    text = _scalar_text(value)
    if text is None:
        extra[key] = value
        kind = json_type(value)
        warnings.append(f"{key} is a JSON {kind}, not a string; kept in AdditionalFields")
        return ""
    return text


def _rest_field(
    event: dict[str, Any], key: str, warnings: list[str], extra: dict[str, Any]
) -> tuple[str, str]:
    """(value, localizedValue) of a REST `{value, localizedValue}` field, or (text, '')."""
    field = event.get(key)
    if not isinstance(field, dict):
        return _string(event, key, warnings, extra), ""
    value = _scalar_text(field.get("value"))
    localized = _scalar_text(field.get("localizedValue"))
    if value is None or localized is None or not _REST_KEYS.issuperset(field):
        extra[key] = field  # more than the columns can hold: kept whole
    return value or "", localized or ""


def _localized_differs(localized: str, value: str) -> bool:
    return bool(localized) and localized != value


def _as_text(value: object) -> str:
    text = _scalar_text(value)
    return text if text is not None else ""


def _scalar_text(value: object) -> str | None:
    """A JSON scalar as text ('' for null); None for an object or array."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def _short(value: object, limit: int = 80) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
