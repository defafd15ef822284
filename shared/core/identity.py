"""Who and what an event says about itself: Authorization_d, Claims_d, Caller, AadTenantId, and
Properties_d with the values read from inside `properties`. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from shared.core.decode import json_type, loads
from shared.core.fields import JSON_SPACE, as_text, object_of, string_field

_CLAIMS = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/"
CALLER_CLAIMS = (
    _CLAIMS + "upn",
    _CLAIMS + "emailaddress",
    _CLAIMS + "name",
    _CLAIMS + "spn",
    "appid",
)
TENANT_CLAIMS = ("http://schemas.microsoft.com/identity/claims/tenantid", "tid")

# Keys read inside `properties`, matched without regard to case (PIM events send `TenantID`).
PROPERTY_FIELDS = ("eventcategory", "subscriptionid", "tenantid", "eventdataid", "hierarchy")
# Where each one's value is in what `properties_column` returns.
EVENT_CATEGORY, SUBSCRIPTION, TENANT, EVENT_DATA_ID, HIERARCHY = range(len(PROPERTY_FIELDS))
_PROPERTY_SLOTS = {name: slot for slot, name in enumerate(PROPERTY_FIELDS)}
_PROPERTY_KEY_LENGTHS = frozenset(len(name) for name in PROPERTY_FIELDS)
_NO_PROPERTY_VALUES = (None,) * len(PROPERTY_FIELDS)


def identity_columns(
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
        authorization, claims = _unwrapped(identity, warnings, extra)
    if "authorization" in event or "claims" in event:
        authorization, claims = _with_rest(event, authorization, claims, warnings, extra)
    return authorization, claims


def _unwrapped(
    identity: object, warnings: list[str], extra: dict[str, Any]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(authorization, claims) of an `identity` of any shape other than the usual one."""
    wrapper = object_of(identity)
    if wrapper is None:
        # A plain string ("John Doe") or another non-object: kept, not guessed at.
        extra["identity"] = identity
        if not isinstance(identity, str):
            warnings.append(f"identity is a JSON {json_type(identity)}, not an object")
        return None, None
    authorization = claims = None
    leftover: dict[str, Any] = {}
    claims_key = "claims" if "claims" in wrapper else "claim" if "claim" in wrapper else ""
    for key, value in wrapper.items():
        if key == "authorization":
            authorization = object_of(value)
            if authorization is None and value is not None:
                leftover[key] = value
        elif key == claims_key:
            claims = object_of(value)
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
    return authorization, claims


def _with_rest(
    event: dict[str, Any],
    authorization: dict[str, Any] | None,
    claims: dict[str, Any] | None,
    warnings: list[str],
    extra: dict[str, Any],
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The REST form's top-level `authorization` and `claims` fill what `identity` did not."""
    for key in ("authorization", "claims"):
        value = event.get(key)
        if value is None:
            continue
        parsed = object_of(value)
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


def who_columns(
    event: dict[str, Any],
    claims: dict[str, Any] | None,
    property_tenant: object,
    warnings: list[str],
    extra: dict[str, Any],
) -> tuple[str, str]:
    """Caller and AadTenantId: the top-level fields, else `properties`, else the claims."""
    caller = string_field(event, "caller", warnings, extra).strip()
    if not caller and claims:
        caller = _first_claim(claims, CALLER_CLAIMS)
    tenant = string_field(event, "tenantId", warnings, extra).strip().lower()
    if not tenant:
        tenant = as_text(property_tenant).strip().lower()
        if not tenant and claims:
            tenant = _first_claim(claims, TENANT_CLAIMS).lower()
    return caller, tenant


def _first_claim(claims: dict[str, Any], names: tuple[str, ...]) -> str:
    for name in names:
        value = claims.get(name)
        if isinstance(value, str):
            value = value.strip()
            if value:
                return value
    return ""


def properties_column(
    value: object, warnings: list[str], extra: dict[str, Any]
) -> tuple[dict[str, Any] | None, Sequence[Any]]:
    """`properties` with every top-level string that holds a JSON object or array parsed, and
    the values of PROPERTY_FIELDS in it (the first non-null under any case), in one pass."""
    if value is None:
        return None, _NO_PROPERTY_VALUES
    properties = object_of(value)
    if properties is None:
        extra["properties"] = value
        warnings.append(f"properties is a JSON {json_type(value)}, not an object")
        return None, _NO_PROPERTY_VALUES
    values: list[Any] = [None] * len(PROPERTY_FIELDS)
    parsed: dict[str, Any] | None = None  # copied only when something changes
    for key, item in properties.items():
        found = item
        if type(item) is str and item:
            first = item[0]
            if first in JSON_SPACE:
                first = item.lstrip(JSON_SPACE)[:1]
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
