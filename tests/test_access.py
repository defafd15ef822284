"""Who may see the search page: the client principal App Service authentication passes on,
checked against the group or app role the deployer names; and the settings that say so."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from shared import settings as names
from shared.core.access import (
    MAX_PRINCIPAL_HEADER,
    PRINCIPAL_HEADER,
    PRINCIPAL_IDP_HEADER,
    ROLES_CLAIMS,
    PageAccess,
    PageAccessMode,
    page_access_denied,
)
from shared.settings import Section, SettingsError, load_settings, read_settings

GROUP = "0f2c6a8e-3b1d-4c5e-9a7f-112233445566"
OTHER_GROUP = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
ROLE = "ActivityLog.Reader"
SIGNED_IN = PageAccess()
BY_GROUP = PageAccess(allowed_group=GROUP)
BY_ROLE = PageAccess(allowed_role=ROLE)
HOSTED = {"WEBSITE_SITE_NAME": "func-activitylog-abc", "WEBSITE_AUTH_ENABLED": "True"}


def encode(doc: Any) -> str:
    return base64.b64encode(orjson.dumps(doc)).decode()


def principal(*claims: tuple[str, str], auth_typ: str = "aad") -> str:
    """X-MS-CLIENT-PRINCIPAL as App Service sets it (Learn, "Work with user identities")."""
    return encode(
        {
            "auth_typ": auth_typ,
            "claims": [{"typ": typ, "val": val} for typ, val in claims],
            "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
            "role_typ": ROLES_CLAIMS[1],
        }
    )


def headers(*claims: tuple[str, str], idp: str | None = "aad") -> dict[str, str]:
    sent = {"X-MS-CLIENT-PRINCIPAL": principal(("name", "ana@contoso.com"), *claims)}
    if idp is not None:
        sent["X-MS-CLIENT-PRINCIPAL-IDP"] = idp
    return sent


# --- who may see the page ----------------------------------------------------------------------


def test_local_lets_everything_through() -> None:
    local = PageAccess(mode=PageAccessMode.LOCAL, allowed_group=GROUP, allowed_role=ROLE)
    assert page_access_denied({}, local) is None
    assert page_access_denied({PRINCIPAL_HEADER: "not base64"}, local) is None


def test_signed_in_is_the_default_and_needs_a_principal() -> None:
    assert PageAccess().mode is PageAccessMode.SIGNED_IN
    assert page_access_denied({}, SIGNED_IN) == (401, "sign-in required")
    assert page_access_denied({"Authorization": "Bearer x"}, SIGNED_IN) == (401, "sign-in required")


def test_any_signed_in_user_when_no_group_nor_role_is_named() -> None:
    assert page_access_denied(headers(), SIGNED_IN) is None


@pytest.mark.parametrize(
    "name",
    [PRINCIPAL_HEADER, "X-MS-CLIENT-PRINCIPAL", "X-Ms-Client-Principal", "x-MS-client-PRINCIPAL"],
)
def test_header_names_are_case_insensitive(name: str) -> None:
    sent = {name: principal(("groups", GROUP)), PRINCIPAL_IDP_HEADER.upper(): "aad"}
    assert page_access_denied(sent, BY_GROUP) is None


def test_the_allowed_group() -> None:
    assert page_access_denied(headers(("groups", OTHER_GROUP), ("groups", GROUP)), BY_GROUP) is None
    # Object ids are GUIDs: case does not matter.
    assert page_access_denied(headers(("groups", GROUP.upper())), BY_GROUP) is None
    denied = page_access_denied(headers(("groups", OTHER_GROUP)), BY_GROUP)
    assert denied == (403, "not a member of the group allowed to use this page")
    assert page_access_denied(headers(), BY_GROUP) == denied


def test_a_group_is_matched_whole_and_only_as_a_group() -> None:
    for claims in (
        [("groups", GROUP + "0")],
        [("groups", "x" + GROUP)],
        [("roles", GROUP)],
        [("http://schemas.microsoft.com/ws/2008/06/identity/claims/groups", GROUP)],
    ):
        assert page_access_denied(headers(*claims), BY_GROUP) is not None, claims


def test_group_overage_says_to_use_the_app_role() -> None:
    # More groups than a token carries: an overage marker instead of `groups`.
    for marker in (("hasgroups", "true"), ("_claim_names", '{"groups":"src1"}')):
        status, reason = page_access_denied(headers(marker), BY_GROUP) or (0, "")
        assert status == 403
        assert "app role" in reason


@pytest.mark.parametrize("claim_type", ROLES_CLAIMS)
def test_the_allowed_role_as_either_claim_type(claim_type: str) -> None:
    assert page_access_denied(headers((claim_type, ROLE)), BY_ROLE) is None


def test_a_missing_role_is_forbidden() -> None:
    expected = (403, "not assigned the app role allowed to use this page")
    for claims in (
        [],
        [("roles", "ActivityLog.Writer")],
        [("groups", ROLE)],
        [("roles", ROLE.lower())],
    ):
        assert page_access_denied(headers(*claims), BY_ROLE) == expected, claims


def test_group_and_role_both_named_need_both() -> None:
    both = PageAccess(allowed_group=GROUP, allowed_role=ROLE)
    assert page_access_denied(headers(("groups", GROUP), ("roles", ROLE)), both) is None
    assert page_access_denied(headers(("groups", GROUP)), both) is not None
    assert page_access_denied(headers(("roles", ROLE)), both) is not None


def test_only_microsoft_entra_id_signs_in() -> None:
    assert page_access_denied(headers(idp="github"), SIGNED_IN) == (401, "sign-in required")
    # Without the IDP header, the principal's own auth_typ decides.
    assert page_access_denied(headers(idp=None), SIGNED_IN) is None
    other = {PRINCIPAL_HEADER: principal(auth_typ="google")}
    assert page_access_denied(other, SIGNED_IN) == (401, "sign-in required")
    assert page_access_denied({PRINCIPAL_HEADER: encode({"claims": []})}, SIGNED_IN) == (
        401,
        "sign-in required",
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not base64 at all!",
        base64.b64encode(b"not json").decode(),
        base64.b64encode(b"[]").decode(),
        encode({"auth_typ": "aad"}),
        encode({"auth_typ": "aad", "claims": {"typ": "groups", "val": GROUP}}),
        encode({"auth_typ": "aad", "claims": [["groups", GROUP]]}),
        encode({"auth_typ": "aad", "claims": [{"typ": "groups", "val": [GROUP]}]}),
        encode({"auth_typ": "aad", "claims": [{"typ": "groups"}]}),
        principal(("groups", GROUP))[:-4],  # truncated
        principal(("groups", GROUP)).replace("+", "-").replace("/", "_") + "$",
        "A" * (MAX_PRINCIPAL_HEADER + 4),
    ],
)
def test_a_malformed_principal_is_not_signed_in(value: str) -> None:
    sent = {PRINCIPAL_HEADER: value, PRINCIPAL_IDP_HEADER: "aad"}
    assert page_access_denied(sent, SIGNED_IN) == (401, "sign-in required")
    assert page_access_denied(sent, BY_GROUP) == (401, "sign-in required")


def test_two_different_principals_are_refused() -> None:
    # One of them cannot be the platform's (it strips what clients send): trust neither.
    sent = {
        "x-ms-client-principal": principal(),
        "X-MS-CLIENT-PRINCIPAL": principal(("groups", GROUP)),
        PRINCIPAL_IDP_HEADER: "aad",
    }
    assert page_access_denied(sent, BY_GROUP) == (401, "sign-in required")
    # The same value twice is one header, whatever the case of its name.
    same = principal(("groups", GROUP))
    twice = {
        "x-ms-client-principal": same,
        "X-MS-CLIENT-PRINCIPAL": same,
        PRINCIPAL_IDP_HEADER: "aad",
    }
    assert page_access_denied(twice, BY_GROUP) is None


def test_other_identity_headers_grant_nothing() -> None:
    # Only the principal's claims count: a name or id header alone is not a sign-in.
    spoofed = {
        "X-MS-CLIENT-PRINCIPAL-ID": GROUP,
        "X-MS-CLIENT-PRINCIPAL-NAME": "admin@contoso.com",
        PRINCIPAL_IDP_HEADER: "aad",
        "X-MS-TOKEN-AAD-ID-TOKEN": "eyJ...",
    }
    assert page_access_denied(spoofed, SIGNED_IN) == (401, "sign-in required")


# --- the settings ------------------------------------------------------------------------------


def test_settings_default_to_signed_in_with_no_restriction() -> None:
    assert load_settings({}).page_access == PageAccess()


def test_settings_read_mode_group_and_role() -> None:
    access = load_settings(
        {
            names.PAGE_ACCESS: " Signed-In ",
            names.PAGE_ALLOWED_GROUP: GROUP.upper(),
            names.PAGE_ALLOWED_ROLE: ROLE,
        }
    ).page_access
    assert access == PageAccess(PageAccessMode.SIGNED_IN, GROUP, ROLE)
    assert load_settings({names.PAGE_ACCESS: "LOCAL"}).page_access.mode is PageAccessMode.LOCAL


def test_signed_in_in_azure_needs_app_service_authentication() -> None:
    assert load_settings(HOSTED).page_access == PageAccess()
    for enabled in ("", "False", "no"):
        env = {**HOSTED, "WEBSITE_AUTH_ENABLED": enabled}
        with pytest.raises(SettingsError) as raised:
            load_settings(env)
        assert raised.value.setting == names.PAGE_ACCESS
        assert "WEBSITE_AUTH_ENABLED" in str(raised.value)


def test_local_is_refused_in_azure() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({**HOSTED, names.PAGE_ACCESS: "local"})
    assert raised.value.setting == names.PAGE_ACCESS
    assert "python -m shared serve" in str(raised.value)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        (names.PAGE_ACCESS, "anyone"),
        (names.PAGE_ACCESS, "off"),
        (names.PAGE_ALLOWED_GROUP, "Auditors"),
        (names.PAGE_ALLOWED_GROUP, GROUP + "0"),
        (names.PAGE_ALLOWED_GROUP, "{" + GROUP + "}"),
        (names.PAGE_ALLOWED_ROLE, "Activity Log Reader"),
        (names.PAGE_ALLOWED_ROLE, ".Reader"),
        (names.PAGE_ALLOWED_ROLE, "R" * 121),
        (names.PAGE_ALLOWED_ROLE, "Lecteur.Journal.é"),
    ],
)
def test_a_bad_page_setting_is_named(setting: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({setting: value})
    assert raised.value.setting == setting
    assert setting in str(raised.value)


def test_a_bad_page_setting_stops_only_the_page() -> None:
    # Its own section: the archive's functions still start; the page's raise when they read it.
    settings = read_settings({names.PAGE_ACCESS: "anyone"})
    assert set(settings.invalid) == {Section.PAGE}
    assert settings.retention_days == 365
    with pytest.raises(SettingsError, match=names.PAGE_ACCESS):
        _ = settings.page_access


def test_role_values_graph_allows() -> None:
    for role in ("ActivityLog.Reader", "a", "R" * 120, "Audit:Read/All", "x.y-z_~"):
        assert load_settings({names.PAGE_ALLOWED_ROLE: role}).page_access.allowed_role == role
