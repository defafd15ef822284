"""azd hooks for the search page's sign-in: the Microsoft Entra app registration App Service
authentication signs users in with (infra/modules/site-auth.bicep; infra/README.md, "Sign-in").

    python3 infra/hooks/search_auth.py preprovision [--env-name NAME]
        find or create the registration `activitylog-search-<env>` (single tenant, ID tokens;
        security groups in the token when SEARCH_ALLOWED_GROUP_ID is set; the app role
        SEARCH_ALLOWED_ROLE, default ActivityLog.Reader, `none` for none, with assignment
        required and the deployer assigned); then `azd env set SEARCH_AUTH_CLIENT_ID <appId>`
        for the deployment's searchAuthClientId (it also prints it, for a deployment without azd)
    python3 infra/hooks/search_auth.py postprovision [--deployment NAME]
        once the app exists: its redirect URI and the federated identity credential that lets
        App Service authentication use the app's managed identity instead of a client secret;
        the deployment's outputs come from azd's environment, or from `az deployment sub show`

Every `az` call against Azure Resource Manager names azd's subscription (AZURE_SUBSCRIPTION_ID,
which azd gives its hooks; else az's current one, said so). `az ad` and Microsoft Graph calls
are tenant-level: az runs them in the tenant it is signed in to and does not take
--subscription there (Azure/azure-cli#29837), so the hook first checks that this tenant is the
subscription's, and stops, saying how to fix it, when it is not. az's errors are shown, never
discarded. Standard library only: azd runs this with the system's Python 3.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_ROLE = "ActivityLog.Reader"
NO_ROLE = "none"  # SEARCH_ALLOWED_ROLE=none: no app role (main.bicep reads it the same way)
FIC_NAME = "app-service-authentication"
FIC_AUDIENCE = "api://AzureADTokenExchange"  # managed identity tokens, global Azure
GRAPH = "https://graph.microsoft.com/v1.0"
# The same checks as shared/core/access.py (tests/test_infra.py holds them equal).
GROUP_ID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
ROLE_VALUE = re.compile(r"(?!\.)[0-9A-Za-z!#$%&'()*+,\-./:;<=>?@\[\]^_`{|}~]{1,120}")
OUTPUTS = (
    "SEARCH_AUTH_CLIENT_ID",
    "SEARCH_AUTH_REDIRECT_URI",
    "SEARCH_AUTH_ISSUER",
    "APP_IDENTITY_PRINCIPAL_ID",
    "SEARCH_PAGE_URL",
)


class HookError(Exception):
    """Why the hook stopped; printed, then exit status 1."""


def say(message: str) -> None:
    print(f"search_auth: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Az:
    """The Azure CLI; `arm=True` calls name the subscription. `command` is split on spaces, the
    other arguments are passed as they are."""

    exe: str
    subscription: str

    def call(self, command: str, *args: str, arm: bool = False) -> subprocess.CompletedProcess[str]:
        argv = [self.exe, *command.split(), *args]
        if arm:
            argv += ["--subscription", self.subscription]
        return subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603

    def out(self, command: str, *args: str, arm: bool = False, hint: str = "") -> str:
        """stdout of a call that must succeed; else stop, showing az's error."""
        done = self.call(command, *args, arm=arm)
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            raise HookError(f"az {command} failed (az's error above){hint}")
        return done.stdout.strip()

    def json(self, command: str, *args: str, arm: bool = False, hint: str = "") -> Any:
        text = self.out(command, *args, "--output", "json", arm=arm, hint=hint)
        return json.loads(text) if text else None


def connect(env: dict[str, str]) -> Az:
    """az, azd's subscription, and the check that az's tenant is that subscription's."""
    exe = shutil.which("az")
    if exe is None:
        raise HookError("the Azure CLI (az) is required: https://aka.ms/installazurecli")
    probe = Az(exe, "")
    subscription = env.get("AZURE_SUBSCRIPTION_ID", "").strip()
    if not subscription:
        subscription = probe.out("account show", "--query", "id", "--output", "tsv")
        say(f"AZURE_SUBSCRIPTION_ID is not set: using az's current subscription {subscription}")
    az = Az(exe, subscription)
    wanted = az.out("account show", "--query", "tenantId", "--output", "tsv", arm=True)
    current = probe.out("account show", "--query", "tenantId", "--output", "tsv")
    if wanted.lower() != current.lower():
        raise HookError(
            f"az is signed in to tenant {current}, but subscription {subscription} is in tenant "
            f"{wanted}; app registrations are made in az's tenant. Run `az account set "
            f"--subscription {subscription}` (or `az login --tenant {wanted}`), then again"
        )
    return az


# --- preprovision ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Wanted:
    display_name: str
    client_id: str  # an existing registration to use, or ""
    group: str
    role: str
    assign_deployer: bool


def wanted(env: dict[str, str], env_name: str) -> Wanted:
    if not env_name:
        raise HookError("no environment name: run it from azd (AZURE_ENV_NAME) or pass --env-name")
    group = env.get("SEARCH_ALLOWED_GROUP_ID", "").strip()
    if group and not GROUP_ID.fullmatch(group):
        raise HookError(f"SEARCH_ALLOWED_GROUP_ID must be a group's object id, got {group!r}")
    # `none`: no role check. (Not ""; azd's ${SEARCH_ALLOWED_ROLE=...} gives the default for "".)
    role = env.get("SEARCH_ALLOWED_ROLE", "").strip() or DEFAULT_ROLE
    role = "" if role.lower() == NO_ROLE else role
    if role and not ROLE_VALUE.fullmatch(role):
        raise HookError(f"SEARCH_ALLOWED_ROLE must be an app role value, got {role!r}")
    client_id = env.get("SEARCH_AUTH_CLIENT_ID", "").strip()
    assign = env.get("SEARCH_ASSIGN_DEPLOYER", "true").strip().lower() not in ("0", "false", "no")
    return Wanted(f"activitylog-search-{env_name}", client_id, group.lower(), role, assign)


APP_FIELDS = "{appId:appId, id:id, appRoles:appRoles}"
CREATE_HINT = ": it needs the Application Developer role, or users allowed to register apps"


def find_or_create_app(az: Az, want: Wanted) -> dict[str, Any]:
    if want.client_id:
        hint = f": is SEARCH_AUTH_CLIENT_ID={want.client_id} an app registration in this tenant?"
        app: dict[str, Any] = az.json(
            "ad app show", "--id", want.client_id, "--query", APP_FIELDS, hint=hint
        )
        say(f"using app registration {app['appId']} (SEARCH_AUTH_CLIENT_ID)")
        return app
    name = want.display_name
    found = az.json("ad app list", "--display-name", name, "--query", f"[].{APP_FIELDS}")
    if len(found) > 1:
        ids = ", ".join(item["appId"] for item in found)
        raise HookError(
            f"{len(found)} app registrations are named {name} ({ids}): choose one with "
            "`azd env set SEARCH_AUTH_CLIENT_ID <appId>`"
        )
    if found:
        say(f"using app registration {found[0]['appId']} ({name})")
        return dict(found[0])
    options = ("--sign-in-audience", "AzureADMyOrg", "--enable-id-token-issuance", "true")
    created: dict[str, Any] = az.json(
        "ad app create", "--display-name", name, *options, "--query", APP_FIELDS, hint=CREATE_HINT
    )
    say(f"created app registration {created['appId']} ({name})")
    return created


def ensure_claims(az: Az, app: dict[str, Any], want: Wanted) -> str:
    """Group claims when a group is named; the app role when one is named. The role's id."""
    if want.group:
        az.out(
            "ad app update", "--id", app["appId"], "--set", "groupMembershipClaims=SecurityGroup"
        )
    if not want.role:
        return ""
    roles: list[dict[str, Any]] = list(app.get("appRoles") or [])
    for role in roles:
        if role.get("value") == want.role:
            return str(role["id"])
    role_id = str(uuid.uuid4())
    roles.append(
        {
            "allowedMemberTypes": ["User"],
            "description": "Can search the Activity Log archive (the search page).",
            "displayName": want.role,
            "id": role_id,
            "isEnabled": True,
            "value": want.role,
        }
    )
    az.out("ad app update", "--id", app["appId"], "--app-roles", json.dumps(roles))
    say(f"app role {want.role} added")
    return role_id


def ensure_service_principal(az: Az, app_id: str, role_required: bool) -> str:
    found = az.out(
        "ad sp list", "--filter", f"appId eq '{app_id}'", "--query", "[].id", "-o", "tsv"
    )
    sp_id = found.splitlines()[0] if found else ""
    if not sp_id:
        sp_id = az.out("ad sp create", "--id", app_id, "--query", "id", "--output", "tsv")
    required = "true" if role_required else "false"
    hint = ": it needs an owner of the service principal, or Cloud Application Administrator"
    az.out(
        "ad sp update", "--id", sp_id, "--set", f"appRoleAssignmentRequired={required}", hint=hint
    )
    return sp_id


def assign_deployer(az: Az, sp_id: str, role_id: str, env: dict[str, str]) -> None:
    done = az.call("ad signed-in-user show", "--query", "id", "--output", "tsv")
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        say("az is not signed in as a user (above): assign the app role yourself (infra/README.md)")
        return
    user = done.stdout.strip()
    url = f"{GRAPH}/servicePrincipals/{sp_id}/appRoleAssignedTo"
    query = f"length(value[?principalId=='{user}' && appRoleId=='{role_id}'])"
    get = ("--method", "get", "--url", url, "--query", query, "--output", "tsv")
    if az.out("rest", *get) not in ("", "0"):
        return
    body = json.dumps({"principalId": user, "resourceId": sp_id, "appRoleId": role_id})
    header = ("--headers", "Content-Type=application/json")
    attempts = int(env.get("SEARCH_AUTH_ATTEMPTS", "6"))
    for attempt in range(1, attempts + 1):
        done = az.call("rest", "--method", "post", "--url", url, "--body", body, *header)
        if done.returncode == 0:
            say("you are assigned the app role: you can use the page")
            return
        sys.stderr.write(done.stderr)
        say(f"assigning you the app role failed (above), attempt {attempt} of {attempts}")
        time.sleep(float(env.get("SEARCH_AUTH_RETRY_SECONDS", "10")))
    say(
        "you are not assigned the app role (errors above): the page will refuse you until "
        'someone assigns it (infra/README.md, "Sign-in"); the deployment goes on'
    )


def azd_env_set(env: dict[str, str], env_name: str, name: str, value: str) -> None:
    azd = shutil.which("azd")
    if azd is None or not env.get("AZURE_ENV_NAME"):
        return  # not run by azd: the printed value is for the deployment's parameters
    argv = [azd, "env", "set", name, value, "--environment", env_name]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise HookError(f"azd env set {name} failed (azd's error above)")


def preprovision(env: dict[str, str], env_name: str) -> None:
    want = wanted(env, env_name)
    az = connect(env)
    app = find_or_create_app(az, want)
    role_id = ensure_claims(az, app, want)
    sp_id = ensure_service_principal(az, app["appId"], bool(want.role))
    if role_id and want.assign_deployer:
        assign_deployer(az, sp_id, role_id, env)
    azd_env_set(env, env_name, "SEARCH_AUTH_CLIENT_ID", app["appId"])
    print(f"SEARCH_AUTH_CLIENT_ID={app['appId']}")


# --- postprovision ---------------------------------------------------------------------------


def outputs(az: Az, env: dict[str, str], deployment: str) -> dict[str, str]:
    if deployment:
        query = ("--name", deployment, "--query", "properties.outputs")
        raw = az.json("deployment sub show", *query, arm=True) or {}
        values = {name: str(item.get("value", "")) for name, item in raw.items()}
    else:
        values = {name: env.get(name, "") for name in OUTPUTS}
    if missing := [name for name in OUTPUTS if not values.get(name)]:
        raise HookError(f"the deployment's outputs lack {', '.join(missing)}: provision first")
    return values


def ensure_redirect(az: Az, client_id: str, redirect: str) -> None:
    current = az.json("ad app show", "--id", client_id, "--query", "web.redirectUris") or []
    if redirect in current:
        return
    az.out("ad app update", "--id", client_id, "--web-redirect-uris", *current, redirect)
    say(f"redirect URI {redirect} added")


def ensure_federated_credential(az: Az, client_id: str, issuer: str, subject: str) -> None:
    credential = {
        "name": FIC_NAME,
        "issuer": issuer,
        "subject": subject,
        "audiences": [FIC_AUDIENCE],
        "description": "App Service authentication, with the function app's identity.",
    }
    command = "ad app federated-credential"
    named = f"[?name=='{FIC_NAME}']"
    existing = az.json(f"{command} list", "--id", client_id, "--query", named) or []
    if existing and (existing[0].get("issuer"), existing[0].get("subject")) == (issuer, subject):
        return
    verb = ("update", "--federated-credential-id", FIC_NAME) if existing else ("create",)
    az.out(command, *verb, "--id", client_id, "--parameters", json.dumps(credential))
    say(f"federated identity credential {FIC_NAME} set: subject {subject}")


def postprovision(env: dict[str, str], deployment: str) -> None:
    az = connect(env)
    values = outputs(az, env, deployment)
    client_id = values["SEARCH_AUTH_CLIENT_ID"]
    ensure_redirect(az, client_id, values["SEARCH_AUTH_REDIRECT_URI"])
    issuer, subject = values["SEARCH_AUTH_ISSUER"], values["APP_IDENTITY_PRINCIPAL_ID"]
    ensure_federated_credential(az, client_id, issuer, subject)
    say(f"sign in at {values['SEARCH_PAGE_URL']} (registration changes take minutes to apply)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=("preprovision", "postprovision"))
    parser.add_argument("--env-name", default="", help="without azd: the environmentName")
    parser.add_argument("--deployment", default="", help="without azd: the deployment's name")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    try:
        if args.step == "preprovision":
            preprovision(env, args.env_name or env.get("AZURE_ENV_NAME", ""))
        else:
            postprovision(env, args.deployment)
    except HookError as error:
        say(str(error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
