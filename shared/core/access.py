"""Who may see the search page: the signed-in principal App Service authentication passes on.

Pure: no I/O. In Azure the page's functions (auth level ANONYMOUS at the Functions host) sit
behind App Service built-in authentication ("Easy Auth") with Microsoft Entra ID
(infra/modules/site-auth.bicep). For a signed-in request the platform sets
X-MS-CLIENT-PRINCIPAL, base64 of JSON `{"auth_typ", "claims": [{"typ", "val"}], "name_typ",
"role_typ"}`, and X-MS-CLIENT-PRINCIPAL-IDP (`aad` for Entra ID), and "external requests
aren't allowed to set these headers, so they're present only if set by App Service"
(Learn, "Work with user identities in Azure App Service authentication":
https://learn.microsoft.com/azure/app-service/configure-authentication-user-identities).
Claims go through App Service's default claims mapping: a role may arrive as `roles` or as the
long role claim type (.NET's ClaimTypes.Role); groups as `groups` (object ids).

So the headers can be trusted only where Easy Auth runs: with it off, anyone can send them.
`read_page_access` therefore refuses SIGNED_IN in Azure unless the platform says App Service
authentication is on (WEBSITE_AUTH_ENABLED, "Read-only. Injected into a Windows or Linux app to
indicate whether App Service authentication is enabled": Learn, "Environment variables and app
settings reference", https://learn.microsoft.com/azure/app-service/reference-app-settings), and
refuses LOCAL there at all. LOCAL (no sign-in) is for `python -m shared serve` on loopback.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

# Set by App Service authentication (see the module docstring for the page that says so).
PRINCIPAL_HEADER = "x-ms-client-principal"
PRINCIPAL_IDP_HEADER = "x-ms-client-principal-idp"
ENTRA_IDP = "aad"  # the identity provider name App Service gives Microsoft Entra ID
GROUPS_CLAIM = "groups"
ROLES_CLAIMS = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
# A user in more groups than a token carries (200 in a JWT) gets no `groups` claim, only an
# overage marker (`_claim_names`, or `hasgroups`): nothing to match, so the app role is the way
# (Learn, "Access token claims reference",
# https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference, and
# https://learn.microsoft.com/troubleshoot/entra/entra-id/app-integration/get-signed-in-users-groups-in-access-token).
_OVERAGE_CLAIMS = ("hasgroups", "_claim_names")
# Far above a real principal (hundreds of claims); bounds what one request makes us decode.
MAX_PRINCIPAL_HEADER = 64 * 1024

# Platform variables (App Service sets them; see the module docstring).
SITE_NAME_VARIABLE = "WEBSITE_SITE_NAME"  # set in Azure only: the app's name
AUTH_ENABLED_VARIABLE = "WEBSITE_AUTH_ENABLED"  # `True` while App Service authentication is on

_GROUP_ID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# An app role's value: at most 120 characters of letters, digits and
# ! # $ % & ' ( ) * + , - . / : ; < = > ? @ [ ] ^ _ ` { | } ~, not starting with '.' (Microsoft
# Graph, "appRole resource type", https://learn.microsoft.com/graph/api/resources/approle).
_ROLE_VALUE = re.compile(r"(?!\.)[0-9A-Za-z!#$%&'()*+,\-./:;<=>?@\[\]^_`{|}~]{1,120}")

SIGN_IN_REQUIRED = (401, "sign-in required")


class PageAccessMode(StrEnum):
    SIGNED_IN = "signed-in"
    LOCAL = "local"


@dataclass(frozen=True, slots=True)
class PageAccess:
    mode: PageAccessMode = PageAccessMode.SIGNED_IN
    allowed_group: str = ""  # object id of an Entra group; "" = any
    allowed_role: str = ""  # app role value; "" = any


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """The header's one value, names compared case-insensitively; None when absent, and when
    sent more than once with different values (one of them cannot be the platform's)."""
    values = {value for key, value in headers.items() if key.lower() == name}
    return values.pop() if len(values) == 1 else None


def _principal(raw: str) -> dict[str, Any] | None:
    """The decoded client principal, or None when it is not the documented shape."""
    if len(raw) > MAX_PRINCIPAL_HEADER:
        return None
    try:
        doc: Any = orjson.loads(base64.b64decode(raw.strip(), validate=True))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("claims"), list):
        return None
    for claim in doc["claims"]:
        if not (
            isinstance(claim, dict)
            and isinstance(claim.get("typ"), str)
            and isinstance(claim.get("val"), str)
        ):
            return None
    return doc


def _has(claims: list[dict[str, str]], types: tuple[str, ...], value: str) -> bool:
    return any(claim["typ"] in types and claim["val"] == value for claim in claims)


def _member(claims: list[dict[str, str]], group: str) -> bool:
    # Object ids are GUIDs: compared without regard to case.
    return any(c["typ"] == GROUPS_CLAIM and c["val"].lower() == group.lower() for c in claims)


def _entra_principal(headers: Mapping[str, str]) -> dict[str, Any] | None:
    """The client principal App Service authentication set, when it is a well-formed one from
    Microsoft Entra ID; else None."""
    raw = _header(headers, PRINCIPAL_HEADER)
    principal = _principal(raw) if raw else None
    if principal is None:
        return None
    idp = _header(headers, PRINCIPAL_IDP_HEADER) or principal.get("auth_typ")
    return principal if isinstance(idp, str) and idp.lower() == ENTRA_IDP else None


def page_access_denied(headers: Mapping[str, str], access: PageAccess) -> tuple[int, str] | None:
    """None when the request may see the page; else (HTTP status, reason) to answer with.

    SIGNED_IN: 401 without a well-formed principal from Entra ID; 403 when it lacks the
    allowed group or app role (both, when both are configured). LOCAL: always None."""
    if access.mode is PageAccessMode.LOCAL:
        return None
    principal = _entra_principal(headers)
    if principal is None:
        return SIGN_IN_REQUIRED
    claims: list[dict[str, str]] = principal["claims"]
    if access.allowed_group and not _member(claims, access.allowed_group):
        if any(claim["typ"] in _OVERAGE_CLAIMS for claim in claims):
            return (403, "too many groups to check membership: ask for the app role instead")
        return (403, "not a member of the group allowed to use this page")
    if access.allowed_role and not _has(claims, ROLES_CLAIMS, access.allowed_role):
        return (403, "not assigned the app role allowed to use this page")
    return None


def read_page_access(
    env: Mapping[str, str],
    names: tuple[str, str, str],
    error: Callable[[str, str], Exception],
) -> PageAccess:
    """The page's access from the settings `names` (mode, group, role), checked; raises
    `error(message, setting)` naming the bad setting."""
    mode_name, group_name, role_name = names
    text = env.get(mode_name, "").strip().lower() or PageAccessMode.SIGNED_IN
    if text not in tuple(PageAccessMode):
        choices = ", ".join(PageAccessMode)
        raise error(f"{mode_name} must be one of {choices}; got {text[:40]!r}", mode_name)
    mode = PageAccessMode(text)
    hosted = bool(env.get(SITE_NAME_VARIABLE, "").strip())
    if hosted and mode is PageAccessMode.LOCAL:
        raise error(
            f"{mode_name}=local turns sign-in off: it is for `python -m shared serve` on this "
            "machine, never for an app in Azure",
            mode_name,
        )
    if hosted and env.get(AUTH_ENABLED_VARIABLE, "").strip().lower() != "true":
        raise error(
            f"App Service authentication is off ({AUTH_ENABLED_VARIABLE} is not true): the "
            "page cannot trust who is signed in, so it refuses every request; redeploy "
            "infra/ (modules/site-auth.bicep) to turn it back on",
            mode_name,
        )
    group = env.get(group_name, "").strip()
    if group and not _GROUP_ID.fullmatch(group):
        raise error(
            f"{group_name} must be a group's object id (a GUID); got {group[:64]!r}", group_name
        )
    role = env.get(role_name, "").strip()
    if role and not _ROLE_VALUE.fullmatch(role):
        raise error(
            f"{role_name} must be an app role value (at most 120 letters, digits or "
            f"punctuation, no spaces); got {role[:64]!r}",
            role_name,
        )
    return PageAccess(mode=mode, allowed_group=group.lower(), allowed_role=role)
