"""The column rules: one decoded event to the record of the spec, or the reason it cannot be one.

Pure. `build_record` runs the rules column group by column group; each group reads its input
fields, writes what it could not map to `extra` (the record's AdditionalFields) and notes what
it had to guess in `warnings`. The order the groups run in is the order of the warnings and of
AdditionalFields' keys: keep it.

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

import re
from decimal import Decimal
from functools import lru_cache
from typing import Any

import orjson

from shared.core.eventkey import canonical_json, deep_key, key_of
from shared.core.fields import (
    as_text,
    localized_differs,
    object_field,
    rest_field,
    short,
    string_field,
)
from shared.core.identity import (
    EVENT_CATEGORY,
    EVENT_DATA_ID,
    HIERARCHY,
    SUBSCRIPTION,
    TENANT,
    identity_columns,
    properties_column,
    who_columns,
)
from shared.core.nesting import MAX_NESTING, flatten_deep
from shared.core.records import NormalizedRecord
from shared.core.timeparse import parse_time
from shared.core.vocabulary import category_column, level_column, status_value

_SUBSCRIPTION_IN_ID = re.compile(r"/subscriptions?/([^/]+)")
_RESOURCE_GROUP_IN_ID = re.compile(r"/resourcegroups/([^/]+)")
_PROVIDERS = "/providers/"
_INTEGER = re.compile(r"\s*-?[0-9]{1,19}\s*")
# A numeric string as JSON (or a sign) spells a number: a whole one is an integer however
# written ("20.0", "1e3", "+20"); an exponent past 2 digits is never a 64-bit whole number.
_NUMBER = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,2})?\s*")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# Every top-level field some rule reads; the rest go to AdditionalFields untouched.
RULE_FIELDS = frozenset(
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


def build_record(event: dict[str, Any], fallback_subscription: str) -> NormalizedRecord | str:
    """The record, or the reason it cannot be one."""
    warnings: list[str] = []
    extra = {key: value for key, value in event.items() if key not in RULE_FIELDS}

    time_generated = _time_generated(event, warnings, extra)
    if time_generated is None:
        return _time_reason(event)

    properties, in_properties = properties_column(event.get("properties"), warnings, extra)
    authorization, claims = identity_columns(event, warnings, extra)
    operation_name_value, operation_name = _operation_columns(event, warnings, extra)
    resource_id, subscription_id, resource_group, provider = _resource_columns(
        event, operation_name_value, in_properties[SUBSCRIPTION], warnings, extra
    )
    status, substatus = _status_columns(event, warnings, extra)
    caller, tenant = who_columns(event, claims, in_properties[TENANT], warnings, extra)
    event_data_id, hierarchy, description = _detail_columns(
        event, in_properties[EVENT_DATA_ID], in_properties[HIERARCHY], warnings, extra
    )
    http_request = object_field(event, "httpRequest", warnings, extra)

    record: NormalizedRecord = {
        "TimeGenerated": time_generated,
        "CategoryValue": category_column(event, in_properties[EVENT_CATEGORY], warnings, extra),
        "OperationNameValue": operation_name_value,
        "OperationName": operation_name,
        "ResourceProviderValue": provider,
        "ActivityStatusValue": status,
        "ActivitySubstatusValue": substatus,
        "Level": level_column(event, warnings, extra),
        "ResourceId": resource_id,
        "SubscriptionId": subscription_id,
        "ResourceGroup": resource_group,
        "Caller": caller,
        "CallerIpAddress": string_field(event, "callerIpAddress", warnings, extra).strip(),
        "CorrelationId": string_field(event, "correlationId", warnings, extra).strip(),
        "OperationId": string_field(event, "operationId", warnings, extra).strip(),
        "EventDataId": event_data_id,
        "Location": string_field(event, "location", warnings, extra),
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
    key = _key(record, warnings)  # before the path's subscription: see the module's notes
    if not subscription_id and fallback_subscription:
        record["SubscriptionId"] = fallback_subscription.strip().lower()
        warnings.append("SubscriptionId taken from the blob path")
    record["NormalizationWarnings"] = warnings
    record["EventKey"] = key
    return record


def _key(record: NormalizedRecord, warnings: list[str]) -> str:
    """The record's EventKey, then the record held to MAX_NESTING levels (shared.core.nesting).

    The key is of the event as it came, as every version keyed it, so a redelivery of an event
    archived by an earlier version is still its duplicate; past the 254 levels no JSON writer
    takes, by `deep_key` (since 2026-12-07: the flattened record's key had been an event's
    that held the flattened text as a string, archived as its duplicate)."""
    try:
        canonical = canonical_json(record)
    except orjson.JSONEncodeError:  # past 254 levels: keyed as deep_key says, then held
        key = deep_key(record)
        flatten_deep(record, warnings)
        return key
    # A value nests no deeper than it has brackets: most records have far fewer than the
    # limit, and the walk that flattens is only taken for those that may need it.
    if canonical.count(b"{") + canonical.count(b"[") > MAX_NESTING:
        flatten_deep(record, warnings)
    return key_of(canonical)


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
        warnings.append(f"time {short(value)} does not parse; eventTimestamp used")
    return parsed


def _time_reason(event: dict[str, Any]) -> str:
    present = [key for key in ("time", "eventTimestamp") if event.get(key) is not None]
    if not present:
        reason = "no time: the event has neither 'time' nor 'eventTimestamp'"
        if "EventTimestamp" in event:  # PowerShell's objects, written by ConvertTo-Json
            reason += (
                " (its 'EventTimestamp' is Get-AzActivityLog's form, which is not read: export "
                "with `az monitor activity-log list`, the REST API or a diagnostic setting)"
            )
        return reason
    shown = ", ".join(f"{key}={short(event[key])}" for key in present)
    return f"no parseable time: {shown}"


def _operation_columns(
    event: dict[str, Any], warnings: list[str], extra: dict[str, Any]
) -> tuple[str, str]:
    """OperationNameValue and OperationName."""
    operation_field = event.get("operationName")
    if type(operation_field) is str:
        return operation_field.strip().lower(), operation_field
    operation_value, localized = rest_field(event, "operationName", warnings, extra)
    return operation_value.strip().lower(), localized or operation_value


def _resource_columns(
    event: dict[str, Any],
    operation_name_value: str,
    property_subscription: object,
    warnings: list[str],
    extra: dict[str, Any],
) -> tuple[str, str, str, str]:
    """ResourceId, SubscriptionId (before the blob path's), ResourceGroup and the provider."""
    resource_id, subscription_id, resource_group, id_provider = _resource_parts(
        string_field(event, "resourceId", warnings, extra)
    )
    slash = operation_name_value.find("/")
    provider = operation_name_value[:slash].strip() if slash > 0 else id_provider
    if "resourceProviderName" in event:
        received, localized = rest_field(event, "resourceProviderName", warnings, extra)
        rest_provider = received.strip().lower()
        if not provider:
            provider = rest_provider
        if rest_provider not in ("", provider) or localized_differs(localized, received):
            extra["resourceProviderName"] = event["resourceProviderName"]

    if not subscription_id:
        subscription_id = as_text(property_subscription).strip().lower()
    if "subscriptionId" in event:
        rest_subscription = string_field(event, "subscriptionId", warnings, extra).strip().lower()
        if not subscription_id:
            subscription_id = rest_subscription
        elif rest_subscription not in ("", subscription_id):
            extra["subscriptionId"] = event["subscriptionId"]

    if "resourceGroupName" in event:
        rest_group = string_field(event, "resourceGroupName", warnings, extra).strip().lower()
        if not resource_group:
            resource_group = rest_group
        elif rest_group not in ("", resource_group):
            extra["resourceGroupName"] = event["resourceGroupName"]
    return resource_id, subscription_id, resource_group, provider


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


def _status_columns(
    event: dict[str, Any], warnings: list[str], extra: dict[str, Any]
) -> tuple[str, str]:
    """ActivityStatusValue and ActivitySubstatusValue."""
    status = status_value(string_field(event, "resultType", warnings, extra))
    if "status" in event:
        received, localized = rest_field(event, "status", warnings, extra)
        rest_status = status_value(received)
        if not status:
            status = rest_status
        if rest_status not in ("", status) or localized_differs(localized, received):
            extra["status"] = event["status"]
    substatus = string_field(event, "resultSignature", warnings, extra).strip()
    if "subStatus" in event:
        received, localized = rest_field(event, "subStatus", warnings, extra)
        rest_substatus = received.strip()
        if not substatus:
            substatus = rest_substatus
        if rest_substatus not in ("", substatus) or localized_differs(localized, received):
            extra["subStatus"] = event["subStatus"]
    return status, substatus


def _detail_columns(
    event: dict[str, Any],
    property_event_data: object,
    property_hierarchy: object,
    warnings: list[str],
    extra: dict[str, Any],
) -> tuple[str, str, str]:
    """EventDataId, Hierarchy and Description."""
    event_data_id = string_field(event, "eventDataId", warnings, extra).strip()
    if not event_data_id:
        event_data_id = as_text(property_event_data).strip()
    hierarchy = string_field(event, "hierarchy", warnings, extra)
    if not hierarchy:
        hierarchy = as_text(property_hierarchy)

    description = string_field(event, "resultDescription", warnings, extra)
    if "description" in event:
        other_description = string_field(event, "description", warnings, extra)
        if not description:
            description = other_description
        elif other_description not in ("", description):
            extra["description"] = event["description"]
    return event_data_id, hierarchy, description


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
        elif _NUMBER.fullmatch(value):
            number = Decimal(value.strip())
            if number == number.to_integral_value() and abs(number) <= _INT64_MAX:
                milliseconds = int(number)
    elif isinstance(value, float) and value.is_integer():
        milliseconds = int(value)
    if milliseconds is not None and _INT64_MIN <= milliseconds <= _INT64_MAX:
        return milliseconds
    extra["durationMs"] = value
    warnings.append(f"durationMs {short(value)} is not a whole number; kept in AdditionalFields")
    return None
