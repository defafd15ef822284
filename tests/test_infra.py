"""The Bicep in infra/ against the code: it is well formed, sets exactly the app settings the
code reads, names role assignments deterministically, and holds no secret. And the deployment
around it: azure.yaml and the postdeploy hook, the Event Hub the Activity Log can stream to,
Flex Consumption limits, telemetry, the management-group policy, the raw export's lifecycle.

No Bicep compiler runs here (it is a .NET tool), so a small lexer below checks what can be
checked honestly without one: strings, comments and brackets are well formed, every top-level
line starts a Bicep statement, every parameter and output is described. When pycep-parser
(checkov's Bicep parser) is installed, every file must also parse with it. infra/check.sh runs
checkov itself, in its own virtualenv.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared import settings
from shared.core.records import CATEGORIES, COLUMNS
from shared.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
POLICY_DEFINITION = INFRA / "policies" / "activity-log-diagnostic-setting.json"
HOOK = ROOT / "scripts" / "postdeploy.sh"

# Upper-case constants of shared/settings.py that are values, not setting names.
NOT_SETTING_NAMES = {
    "DEVELOPMENT_STORAGE",
    "DEFAULT_ARCHIVE_CONTAINER",
    "CATEGORIES",
    "DEFAULT_ARCHIVE_TIER",
    "ARCHIVE_TIERS",
}

# In Azure a connection is identity-based: the prefix itself is never set, these forms are.
AZURE_CONNECTION_FORMS = {
    # Blob and queue URIs for the blob trigger (its poison queue), blob and table URIs for the
    # app's own clients (shared/adapters/storage.py).
    settings.STORAGE_CONNECTION: (
        "__blobServiceUri",
        "__queueServiceUri",
        "__tableServiceUri",
        "__credential",
        "__clientId",
    ),
    settings.EVENTHUB_CONNECTION: ("__fullyQualifiedNamespace", "__credential", "__clientId"),
}

# Settings only Azure has, each with why: the Functions host, the Python worker and the Azure
# Monitor distro read them (Learn, "Use OpenTelemetry with Azure Functions"); none is a setting of
# shared/settings.py, though shared/adapters/azure_monitor.py looks at the worker's switch, the
# sampler and the authentication string. Locally there is no Application Insights to report to.
AZURE_ONLY = {
    # Entra ID auth of the host's and the worker's telemetry.
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    # The worker configures the Azure Monitor distro; the host does not forward its logs again.
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
    # Standard OpenTelemetry settings of that distro: no auto-instrumentation, every span kept.
    "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
    "OTEL_TRACES_SAMPLER",
    # App Service authentication's client credential: the app's identity instead of a secret
    # (Learn, "Use a managed identity instead of a secret"); read by the platform, not the app.
    "OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID",
}

# Settings only local runs have, each with why.
LOCAL_ONLY = {
    # Core Tools needs it to pick the Python worker; Flex Consumption refuses it as an app
    # setting (the runtime is functionAppConfig.runtime in infra/modules/function-app.bicep).
    "FUNCTIONS_WORKER_RUNTIME",
}


# --------------------------------------------------------------------------------------------
# A small Bicep lexer: enough to find statements, blocks and string literals.
# --------------------------------------------------------------------------------------------


class BicepSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Bicep:
    path: Path
    text: str
    # The text with comments and string literal characters blanked (offsets kept), so brackets
    # and keywords can be found without being fooled by what strings or comments contain.
    code: str
    literals: tuple[str, ...]

    def line_of(self, offset: int) -> int:
        return self.text.count("\n", 0, offset) + 1

    def close(self, opening: int) -> int:
        """Offset of the bracket that closes the one at `opening`."""
        pairs = {"(": ")", "[": "]", "{": "}"}
        stack: list[str] = []
        for index in range(opening, len(self.code)):
            char = self.code[index]
            if char in pairs:
                stack.append(pairs[char])
            elif char in pairs.values():
                if not stack or stack.pop() != char:
                    break
                if not stack:
                    return index
        raise BicepSyntaxError(f"{self.path}:{self.line_of(opening)}: unbalanced bracket")

    def top_level_lines(self) -> list[tuple[int, str]]:
        """(offset, stripped text) of every non-blank line that starts at bracket depth 0."""
        lines: list[tuple[int, str]] = []
        depth = 0
        offset = 0
        for line in self.code.split("\n"):
            if line.strip() and depth == 0:
                lines.append((offset, self.text[offset : offset + len(line)].strip()))
            depth += sum(map(line.count, "([{")) - sum(map(line.count, ")]}"))
            offset += len(line) + 1
        return lines

    def block_after(self, offset: int, opening: str = "{") -> tuple[int, int]:
        """Span (inside the brackets) of the first `opening` bracket at or after offset."""
        start = self.code.index(opening, offset)
        return start + 1, self.close(start)


def lex(path: Path) -> Bicep:
    text = path.read_text(encoding="utf-8")
    code = list(text)
    literals: list[str] = []
    size = len(text)

    def where(offset: int) -> str:
        return f"{path}:{text.count(chr(10), 0, offset) + 1}"

    def blank(start: int, end: int) -> None:
        for index in range(start, end):
            if code[index] != "\n":
                code[index] = " "

    def string(start: int) -> int:
        """Lex a '...' string starting at its quote; return the offset after it."""
        if text.startswith("'''", start):
            end = text.find("'''", start + 3)
            if end < 0:
                raise BicepSyntaxError(f"{where(start)}: unterminated ''' string")
            literals.append(text[start + 3 : end])
            blank(start + 3, end + 3)  # the closing quotes too: a line of them is no statement
            return end + 3
        index = segment = start + 1
        while True:
            if index >= size or text[index] == "\n":
                raise BicepSyntaxError(f"{where(start)}: unterminated string")
            if text[index] == "\\":
                index += 2
            elif text[index] == "'":
                literals.append(text[segment:index])
                blank(segment, index)
                return index + 1
            elif text.startswith("${", index):
                literals.append(text[segment:index])
                blank(segment, index + 2)
                index = expression(index + 2)
                blank(index - 1, index)
                segment = index
            else:
                index += 1

    def expression(start: int) -> int:
        """Lex an interpolation's expression; return the offset after its closing brace."""
        depth = 0
        index = start
        while index < size:
            char = text[index]
            if char == "'":
                index = string(index)
                continue
            if char in "([{":
                depth += 1
            elif char in ")]}":
                if depth == 0:
                    if char != "}":
                        raise BicepSyntaxError(f"{where(index)}: stray {char!r} in interpolation")
                    return index + 1
                depth -= 1
            index += 1
        raise BicepSyntaxError(f"{where(start)}: unterminated interpolation")

    index = 0
    while index < size:
        if text.startswith("//", index):
            end = text.find("\n", index)
            end = size if end < 0 else end
            blank(index, end)
            index = end
        elif text.startswith("/*", index):
            end = text.find("*/", index + 2)
            if end < 0:
                raise BicepSyntaxError(f"{where(index)}: unterminated comment")
            blank(index, end + 2)
            index = end + 2
        elif text[index] == "'":
            index = string(index)
        else:
            index += 1
    return Bicep(path, text, "".join(code), tuple(literals))


STATEMENT = re.compile(
    r"(targetScope|param|var|resource|module|output|metadata|type|func|import|extension)\b|@"
)
RESOURCE = re.compile(r"resource (\w+) '([^']+)'( existing)? = ")
RESOURCE_TYPE = re.compile(r"[A-Za-z]+\.[A-Za-z]+(/[A-Za-z]+)+@\d{4}-\d{2}-\d{2}(-preview)?")
MODULE = re.compile(r"module (\w+) '([^']+)' = ")


@pytest.fixture(scope="module")
def bicep() -> dict[str, Bicep]:
    return {path.relative_to(INFRA).as_posix(): lex(path) for path in BICEP_FILES}


def resources(source: Bicep, type_prefix: str) -> list[tuple[str, str, int, int]]:
    """(symbol, type, body start, body end) of every resource of a type in a file."""
    found: list[tuple[str, str, int, int]] = []
    for offset, line in source.top_level_lines():
        match = RESOURCE.match(line)
        if match and match.group(2).startswith(type_prefix + "@"):
            start, end = source.block_after(offset + len(match.group(0)))
            found.append((match.group(1), match.group(2), start, end))
    return found


def entries(source: Bicep, start: int, end: int) -> dict[str, str]:
    """Depth-1 `key: value` entries of an object body (value: the rest of its first line)."""
    found: dict[str, str] = {}
    depth = 0
    offset = start
    for line in source.code[start:end].split("\n"):
        if depth == 0:
            match = re.match(r"\s*([\w']+):\s*(.*)", source.text[offset : offset + len(line)])
            if match:
                found[match.group(1).strip("'")] = match.group(2).strip()
        depth += sum(map(line.count, "([{")) - sum(map(line.count, ")]}"))
        offset += len(line) + 1
    return found


# --------------------------------------------------------------------------------------------
# The templates are well formed.
# --------------------------------------------------------------------------------------------


def test_infra_has_the_expected_templates(bicep: dict[str, Bicep]) -> None:
    assert "main.bicep" in bicep
    assert bicep["main.bicep"].text.count("targetScope = 'subscription'") == 1
    assert len(bicep) >= 5


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda path: path.name)
def test_every_bicep_file_is_well_formed(path: Path) -> None:
    source = lex(path)
    # Brackets balance and nest.
    stack: list[tuple[str, int]] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for index, char in enumerate(source.code):
        if char in "([{":
            stack.append((char, index))
        elif char in pairs:
            assert stack, f"{path}:{source.line_of(index)}: unmatched {char!r}"
            opening, at = stack.pop()
            assert opening == pairs[char], (
                f"{path}:{source.line_of(index)}: {char!r} closes {opening!r} "
                f"of line {source.line_of(at)}"
            )
    assert not stack, f"{path}:{source.line_of(stack[-1][1])}: {stack[-1][0]!r} never closed"
    # Bicep statements end at a newline, so every line outside brackets starts one.
    for offset, line in source.top_level_lines():
        assert STATEMENT.match(line), f"{path}:{source.line_of(offset)}: not a statement: {line}"
        resource = RESOURCE.match(line)
        if line.startswith("resource "):
            assert resource, f"{path}:{source.line_of(offset)}: malformed resource: {line}"
            assert RESOURCE_TYPE.fullmatch(resource.group(2)), line
        module = MODULE.match(line)
        if line.startswith("module "):
            assert module, f"{path}:{source.line_of(offset)}: malformed module: {line}"
            assert (path.parent / module.group(2)).is_file(), line


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda path: path.name)
def test_every_parameter_and_output_is_described(path: Path) -> None:
    source = lex(path)
    decorators = ""
    for offset, line in source.top_level_lines():
        if line.startswith("@"):
            decorators += source.text[offset : source.text.find("\n", offset)]
            continue
        if line.startswith(("param ", "output ")):
            assert "@description(" in decorators, f"{path}:{source.line_of(offset)}: {line}"
        decorators = ""


@pytest.fixture(scope="module")
def pycep_parser() -> Any:
    # Optional: checkov skips a file its parser rejects, so the templates must stay within
    # what pycep-parser (the version requirements-infra.txt pins) understands.
    pycep = pytest.importorskip("pycep", reason="pycep-parser is not installed")
    return pycep.BicepParser()


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda path: path.name)
def test_bicep_parses_with_checkovs_parser(path: Path, pycep_parser: Any) -> None:
    template = pycep_parser.parse(text=path.read_text(encoding="utf-8"))
    assert template.get("resources") or template.get("modules"), path


def test_lexer_rejects_what_bicep_rejects(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bicep"
    for text in ("var a = 'open\n", "var a = '${b'\n", "/* open\n"):
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(BicepSyntaxError):
            lex(bad)
    bad.write_text("var a = '${b}' // c: ' } ]\nvar d = '''\n{ x '\n'''\n", encoding="utf-8")
    source = lex(bad)
    lines = [line for _, line in source.top_level_lines()]
    assert lines == ["var a = '${b}' // c: ' } ]", "var d = " + "'" * 3]
    assert "\n{ x '\n" in source.literals


# --------------------------------------------------------------------------------------------
# The app settings are exactly those the code reads.
# --------------------------------------------------------------------------------------------


def code_setting_names() -> set[str]:
    names = {
        value
        for name, value in vars(settings).items()
        if name.isupper() and not name.startswith("_") and name not in NOT_SETTING_NAMES
    }
    assert all(isinstance(name, str) for name in names)
    return names


def infra_app_settings(bicep: dict[str, Bicep]) -> list[str]:
    source = bicep["modules/function-app.bicep"]
    ((_, _, start, end),) = resources(source, "Microsoft.Web/sites")
    inner = source.code.index("appSettings: [", start, end)
    array_start, array_end = source.block_after(inner, "[")
    return re.findall(r"^\s*name: '([^']+)'$", source.text[array_start:array_end], re.M)


def bicep_var(source: Bicep, name: str) -> str:
    """The value text of a one-line `var` (a string literal's content, unquoted)."""
    match = re.search(rf"^var {name} = (.+)$", source.text, re.M)
    assert match, f"{source.path}: no var {name}"
    value = match.group(1).strip()
    return value[1:-1] if re.fullmatch(r"'[^']*'", value) else value


def infra_app_setting_values(bicep: dict[str, Bicep]) -> dict[str, str]:
    """Each app setting's value expression; a string literal unquoted, a var resolved."""
    source = bicep["modules/function-app.bicep"]
    ((_, _, start, end),) = resources(source, "Microsoft.Web/sites")
    inner = source.code.index("appSettings: [", start, end)
    array_start, array_end = source.block_after(inner, "[")
    pairs = re.findall(
        r"^\s*name: '([^']+)'\n\s*value: (.+)$", source.text[array_start:array_end], re.M
    )
    values: dict[str, str] = {}
    for name, expression in pairs:
        value = expression.strip()
        if re.fullmatch(r"'[^']*'", value):
            value = value[1:-1]
        elif re.fullmatch(r"[a-z]\w*", value) and f"var {value} = " in source.text:
            value = bicep_var(source, value)
        values[name] = value
    return values


def test_infra_sets_exactly_the_settings_the_code_reads(bicep: dict[str, Bicep]) -> None:
    names = infra_app_settings(bicep)
    assert len(names) == len(set(names)), "a setting is set twice"
    expected = code_setting_names() - AZURE_CONNECTION_FORMS.keys()
    for prefix, forms in AZURE_CONNECTION_FORMS.items():
        expected |= {prefix + form for form in forms}
    assert set(names) == expected | AZURE_ONLY


def test_infra_storage_settings_select_identity_based_storage(bicep: dict[str, Bicep]) -> None:
    prefix = settings.STORAGE_CONNECTION + "__"
    values = {
        "blobServiceUri": "https://st.blob.core.windows.net/",
        "queueServiceUri": "https://st.queue.core.windows.net/",
        "tableServiceUri": "https://st.table.core.windows.net/",
        "credential": "managedidentity",
        "clientId": "client-id",
    }
    env = {
        name: values[name.removeprefix(prefix)]
        for name in infra_app_settings(bicep)
        if name.startswith(prefix)
    }
    loaded = load_settings(env)
    assert loaded.storage_connection == ""
    assert loaded.managed_identity_client_id == "client-id"


def test_local_settings_example_has_the_settings_the_code_reads() -> None:
    example = json.loads((ROOT / "local.settings.example.json").read_text(encoding="utf-8"))
    assert set(example["Values"]) == code_setting_names() | LOCAL_ONLY


def parameter_defaults(source: Bicep) -> dict[str, object]:
    defaults: dict[str, object] = {}
    for _, line in source.top_level_lines():
        match = re.fullmatch(r"param (\w+) (\w+) = (.+)", line)
        if not match:
            continue
        value = match.group(3)
        if re.fullmatch(r"-?\d+", value):
            defaults[match.group(1)] = int(value)
        elif re.fullmatch(r"'[^'$]*'", value):
            defaults[match.group(1)] = value[1:-1]
        elif value in ("true", "false"):
            defaults[match.group(1)] = value == "true"
    return defaults


def test_deployment_defaults_are_the_apps_defaults(bicep: dict[str, Bicep]) -> None:
    defaults = parameter_defaults(bicep["main.bicep"])
    app = load_settings({})
    example = json.loads((ROOT / "local.settings.example.json").read_text(encoding="utf-8"))
    assert defaults["retentionDays"] == app.retention_days
    assert defaults["retentionCategoryDays"] == ""  # the code's default: no overrides
    assert defaults["retentionDryRun"] is app.retention_dry_run
    assert defaults["retentionTimeBudgetSeconds"] == app.retention_time_budget_seconds
    assert defaults["catchupLookbackHours"] == app.catchup_lookback_hours
    assert defaults["sealAfterMinutes"] == app.seal_after_minutes
    assert defaults["storePrefix"] == app.store_prefix
    assert defaults["archiveAccessTier"] == app.archive_tier
    # The schedules have no code default: the example's values are the documented ones.
    assert defaults["catchupSchedule"] == example["Values"][settings.CATCHUP_SCHEDULE]
    assert defaults["retentionSchedule"] == example["Values"][settings.RETENTION_SCHEDULE]
    # The hook, not a second deployment, creates the Event Grid subscription now.
    assert "deployEventGridSubscription" not in bicep["main.bicep"].text
    main = bicep["main.bicep"].text
    assert f"var archiveContainerName = '{settings.DEFAULT_ARCHIVE_CONTAINER}'" in main


# --------------------------------------------------------------------------------------------
# What the resources say.
# --------------------------------------------------------------------------------------------


def test_custom_table_has_the_normalized_record_columns() -> None:
    columns = json.loads((INFRA / "modules" / "activitylog-columns.json").read_text("utf-8"))
    assert [column["name"] for column in columns] == list(COLUMNS)
    types = {column["name"]: column["type"] for column in columns}
    dynamic = {
        "Authorization_d",
        "Claims_d",
        "Properties_d",
        "HttpRequest",
        "AdditionalFields",
        "NormalizationWarnings",
    }
    for name, kind in types.items():
        if name == "TimeGenerated":
            assert kind == "datetime"
        elif name == "DurationMs":
            assert kind in ("int", "long")
        elif name in dynamic:
            assert kind == "dynamic", name
        else:
            assert kind == "string", name


def test_activity_log_export_sends_every_category(bicep: dict[str, Bicep]) -> None:
    source = bicep["modules/activity-log-export.bicep"]
    start, end = source.block_after(source.code.index("var categories = ["), "[")
    categories = re.findall(r"'(\w+)'", source.text[start:end])
    assert sorted(categories) == sorted(CATEGORIES)
    ((_, _, body_start, body_end),) = resources(source, "Microsoft.Insights/diagnosticSettings")
    body = source.text[body_start:body_end]
    assert "eventHubAuthorizationRuleId:" in body
    assert "storageAccountId:" in body


# guid(scope, principal, role): the scope a resource symbol's id (the assignment's `scope:`) or the
# deployment's own scope (no `scope:`); the principal `principalId` (a module parameter) or, for
# an identity created in the same deployment, its resource's id (a principal id cannot name a
# resource: it is not known when the deployment starts); the role `roles.<name>` or a role
# definition created beside it.
ROLE_ASSIGNMENT_NAME = re.compile(
    r"guid\((?:(\w+)\.id|(managementGroup|subscription|resourceGroup)\(\)\.id), "
    r"(principalId|\w+\.id), (roles\.\w+|\w+\.id)\)"
)


def role_assignments(bicep: dict[str, Bicep]) -> list[tuple[Bicep, str, dict[str, str], str]]:
    """(file, symbol, depth-1 entries, body text) of every role assignment in infra/."""
    found = []
    for source in bicep.values():
        for symbol, _, start, end in resources(source, "Microsoft.Authorization/roleAssignments"):
            found.append((source, symbol, entries(source, start, end), source.text[start:end]))
    return found


def test_role_assignments_are_named_from_scope_principal_and_role(
    bicep: dict[str, Bicep],
) -> None:
    found = role_assignments(bicep)
    for source, symbol, body, text in found:
        name = ROLE_ASSIGNMENT_NAME.fullmatch(body.get("name", ""))
        assert name, f"{source.path}: {symbol}: name is not guid(scope.id, principal, role)"
        scope, deployment_scope, principal, role = name.groups()
        if scope:
            assert body["scope"] == scope, symbol
        else:
            assert "scope" not in body, symbol
            assert f"targetScope = '{deployment_scope}'" in source.text, symbol
        assert role in text.split("roleDefinitionId:")[1], symbol
        principal_id = re.search(r"principalId: (\S+)", text.split("properties:")[1])
        assert principal_id, symbol
        if principal == "principalId":
            assert principal_id.group(1) == "principalId", symbol
        else:  # the identity of the resource named
            assert principal_id.group(1) == principal.replace(".id", ".identity.principalId")
    assert len(found) >= 9


def test_storage_keys_are_off_and_tls_enforced(bicep: dict[str, Bicep]) -> None:
    source = bicep["modules/storage.bicep"]
    ((_, _, start, end),) = resources(source, "Microsoft.Storage/storageAccounts")
    body = source.text[start:end]
    for setting in (
        "allowSharedKeyAccess: false",
        "allowBlobPublicAccess: false",
        "minimumTlsVersion: 'TLS1_2'",
        "supportsHttpsTrafficOnly: true",
    ):
        assert setting in body


def test_event_grid_subscription_is_left_to_the_hook(bicep: dict[str, Bicep]) -> None:
    # The subscription needs the published host's blobs_extension key: the postdeploy hook
    # makes it, with what the module decides (its outputs, via main.bicep's outputs).
    source = bicep["modules/event-grid.bicep"]
    assert not resources(source, "Microsoft.EventGrid/systemTopics/eventSubscriptions")
    assert resources(source, "Microsoft.EventGrid/systemTopics")
    blob_function = (ROOT / "functions" / "archive_blob_trigger.py").read_text("utf-8")
    (name,) = re.findall(r'@bp\.function_name\("(\w+)"\)', blob_function)
    assert f"param functionName string = '{name}'" in source.text
    main = bicep["main.bicep"].text
    hook = HOOK.read_text("utf-8")
    for output in (
        "AZURE_RESOURCE_GROUP",
        "FUNCTION_APP_NAME",
        "FUNCTION_APP_URL",
        "EVENTGRID_SYSTEM_TOPIC_NAME",
        "EVENTGRID_SUBSCRIPTION_NAME",
        "EVENTGRID_SUBJECT_BEGINS_WITH",
        "EVENTGRID_MAX_DELIVERY_ATTEMPTS",
        "EVENTGRID_EVENT_TTL_MINUTES",
        "BLOB_TRIGGER_FUNCTION_NAME",
    ):
        assert re.search(rf"^output {output} ", main, re.M), output
        assert output in hook, output
    assert "Host.Functions.$BLOB_TRIGGER_FUNCTION_NAME" in hook
    container = settings.DEFAULT_ARCHIVE_CONTAINER
    assert (
        "output subjectBeginsWith string = '/blobServices/default/containers/${containerName}/'"
        in (source.text)
    )
    assert f"var archiveContainerName = '{container}'" in main


# --------------------------------------------------------------------------------------------
# "Deployed for real": the stream, one-command deployment, limits, telemetry, the tenant,
# the raw export's lifecycle, the roles.
# --------------------------------------------------------------------------------------------


def param_decorators(source: Bicep, name: str) -> str:
    """The decorator lines right above `param <name>`."""
    lines = source.text.split("\n")
    (index,) = [i for i, line in enumerate(lines) if re.match(rf"param {name}\b", line)]
    above: list[str] = []
    for line in reversed(lines[:index]):
        # A decorator, or a line of a decorator's multi-line argument (`@allowed([` ... `])`).
        if not line.startswith(("@", " ", "])")):
            break
        above.insert(0, line)
    return "\n".join(above)


def allowed_values(source: Bicep, name: str) -> list[str]:
    decorators = param_decorators(source, name)
    match = re.search(r"@allowed\(\[(.*?)\]\)", decorators, re.S)
    assert match, f"{source.path}: {name} has no @allowed"
    return re.findall(r"'([^']*)'", match.group(1))


def bound(source: Bicep, name: str, which: str) -> int:
    match = re.search(rf"@{which}\((\d+)\)", param_decorators(source, name))
    assert match, f"{source.path}: {name} has no @{which}"
    return int(match.group(1))


def comment_above(source: Bicep, offset: int) -> str:
    """The `//` comment lines right above the line at offset (blank lines end them)."""
    lines = source.text[:offset].split("\n")[:-1]
    comment: list[str] = []
    for line in reversed(lines):
        if not line.strip().startswith("//"):
            break
        comment.insert(0, line.strip())
    return "\n".join(comment)


def test_event_hub_keeps_the_documented_streaming_path(bicep: dict[str, Bicep]) -> None:
    # The diagnostic setting streams only through a namespace authorization rule (SAS): local
    # auth stays on by default, and the app stays identity-based.
    for name, path in (("eventHubsDisableLocalAuth", "main.bicep"),):
        assert parameter_defaults(bicep[path])[name] is False
    hubs = bicep["modules/event-hubs.bicep"]
    assert parameter_defaults(hubs)["disableLocalAuth"] is False
    ((_, _, start, end),) = resources(hubs, "Microsoft.EventHub/namespaces")
    assert entries(hubs, start, end)["properties"] == "{"
    assert "disableLocalAuth: disableLocalAuth" in hubs.text[start:end]
    # Its own rule: namespace level, the documented rights and no more (Manage, Send, Listen:
    # Learn, "Diagnostic settings in Azure Monitor"), never RootManageSharedAccessKey.
    ((symbol, _, start, end),) = resources(hubs, "Microsoft.EventHub/namespaces/authorizationRules")
    rule = hubs.text[start:end]
    assert "parent: namespace" in rule
    rights = re.findall(r"'(\w+)'", rule.split("rights:")[1])
    assert sorted(rights) == ["Listen", "Manage", "Send"]
    assert parameter_defaults(hubs)["diagnosticsRuleName"] not in ("", "RootManageSharedAccessKey")
    assert f"output diagnosticsRuleId string = {symbol}.id" in hubs.text
    # The diagnostic setting names that rule, and no other authorization rule exists.
    main = bicep["main.bicep"].text
    assert "eventHubAuthorizationRuleId: eventHubs.outputs.diagnosticsRuleId" in main
    created = [
        line
        for source in bicep.values()
        for _, line in source.top_level_lines()
        if re.match(r"resource \w+ 'Microsoft\.EventHub/namespaces/authorizationRules@", line)
        and " existing = " not in line
    ]
    assert len(created) == 1  # the policy's access module only refers to it (`existing`)
    # The app reads the hub with its identity: namespace host name and credential, no key.
    values = infra_app_setting_values(bicep)
    prefix = settings.EVENTHUB_CONNECTION
    assert values[f"{prefix}__fullyQualifiedNamespace"] == "eventHubFullyQualifiedNamespace"
    assert values[f"{prefix}__credential"] == "managedidentity"
    assert prefix not in values


def test_azure_yaml_deploys_everything(bicep: dict[str, Bicep]) -> None:
    text = (ROOT / "azure.yaml").read_text("utf-8")
    lines = [line for line in text.split("\n") if line.strip() and not line.startswith("#")]
    assert re.search(
        r"^services:\n  api:\n    project: \.\n    language: python\n    host: function$",
        "\n".join(lines),
        re.M,
    )
    assert re.search(
        r"^infra:\n  provider: bicep\n  path: infra\n  module: main$", "\n".join(lines), re.M
    )
    hooks = text[text.index("\nhooks:") :]
    assert re.search(
        r"  postdeploy:\n    posix:\n      shell: sh\n      run: \./scripts/postdeploy\.sh", hooks
    )
    assert re.search(
        r"    windows:\n      shell: pwsh\n      run: \./scripts/postdeploy\.ps1", hooks
    )
    assert "continueOnError: false" in hooks
    assert (ROOT / "scripts" / "postdeploy.ps1").is_file()
    # azd's parameters, and how azd finds what it deploys to.
    parameters = json.loads((INFRA / "main.parameters.json").read_text("utf-8"))["parameters"]
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert parameters["location"]["value"] == "${AZURE_LOCATION}"
    defaults = parameter_defaults(bicep["main.bicep"])
    for name in parameters:
        assert name in defaults or re.search(rf"^param {name} ", bicep["main.bicep"].text, re.M)
    app = bicep["modules/function-app.bicep"]
    assert "tags: union(tags, { 'azd-service-name': serviceName })" in app.text
    assert parameter_defaults(app)["serviceName"] == "api"
    assert "'azd-env-name': environmentName" in bicep["main.bicep"].text
    for output in ("AZURE_LOCATION", "AZURE_RESOURCE_GROUP", "FUNCTION_APP_NAME"):
        assert re.search(rf"^output {output} ", bicep["main.bicep"].text, re.M)


# The Azure CLI's current subscription in the stand-in `az` (`az account show`).
CLI_SUBSCRIPTION = "00000000-0000-0000-0000-0000000000c1"
# azd's AZURE_SUBSCRIPTION_ID, another one.
AZD_SUBSCRIPTION = "00000000-0000-0000-0000-0000000000d2"


def fake_tools(tmp_path: Path, log: Path, keys: str = "late") -> dict[str, str]:
    """An `az`, `func` and `curl` that log their arguments and fail their first calls, as the
    real ones do while role assignments propagate; the environment to run the hook with.

    keys: how `az functionapp keys list` answers. late: fails twice (503 on stderr), then the
    key; login: always fails as az does when not logged in; none: succeeds, never a key."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    outputs = {
        "AZURE_RESOURCE_GROUP": "rg-test",
        "FUNCTION_APP_NAME": "func-test",
        "FUNCTION_APP_URL": "https://func-test-abc.westeurope-01.azurewebsites.net",
        "EVENTGRID_SYSTEM_TOPIC_NAME": "evgt-test",
        "EVENTGRID_SUBSCRIPTION_NAME": "archive-blob-blob-created",
        "EVENTGRID_SUBJECT_BEGINS_WITH": "/blobServices/default/containers/insights-activity-logs/",
        "EVENTGRID_MAX_DELIVERY_ATTEMPTS": "30",
        "EVENTGRID_EVENT_TTL_MINUTES": "1440",
        "BLOB_TRIGGER_FUNCTION_NAME": "archive_blob",
    }
    cases = "\n".join(f"      {name}) echo '{value}' ;;" for name, value in outputs.items())
    tools = {
        "az": f"""#!/bin/sh
printf '%s\\n' "az $*" >> "$FAKE_LOG"
count() {{ n=$(cat "$FAKE_LOG.$1" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$FAKE_LOG.$1"; }}
case "$*" in
  "account show"*)
    echo '{CLI_SUBSCRIPTION}' ;;
  "functionapp keys list"*)
    count keys
    case "$FAKE_KEYS" in
      login) echo "ERROR: Please run 'az login' to setup account." >&2; exit 1 ;;
      none) ;;
      *) [ "$n" -ge 3 ] && echo 'KEYVALUE123' ||
           {{ echo 'ERROR: 503 (Service Unavailable)' >&2; exit 1; }} ;;
    esac ;;
  "eventgrid system-topic event-subscription create"*)
    count create
    [ "$n" -ge 2 ] || {{ echo "ERROR: Webhook validation handshake failed for $*" >&2; exit 1; }} ;;
  "deployment sub show"*)
    name=$(printf '%s' "$*" | sed 's/.*properties\\.outputs\\.\\([A-Z_]*\\)\\.value.*/\\1/')
    case "$name" in
{cases}
    esac ;;
esac
""",
        "func": """#!/bin/sh
printf '%s\\n' "func $*" >> "$FAKE_LOG"
n=$(cat "$FAKE_LOG.func" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$FAKE_LOG.func"
[ "$n" -ge 2 ] || { echo 'Status code: 403, AuthorizationPermissionMismatch'; exit 1; }
echo 'Deployment completed successfully.'
""",
        "curl": """#!/bin/sh
printf '%s\\n' "curl $*" >> "$FAKE_LOG"
""",
    }
    for name, body in tools.items():
        path = bin_dir / name
        path.write_text(body, "utf-8")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "FAKE_LOG": str(log),
        "FAKE_KEYS": keys,
        "POSTDEPLOY_RETRY_SECONDS": "0",
        "POSTDEPLOY_ATTEMPTS": "5",
        "HOME": str(tmp_path),
    }


def test_the_hook_retries_then_creates_the_event_grid_subscription(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    env = fake_tools(tmp_path, log)
    done = subprocess.run(
        ["sh", str(HOOK), "--deployment", "activitylog-test", "--publish"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    calls = log.read_text("utf-8").splitlines()
    # No AZURE_SUBSCRIPTION_ID (no azd): the CLI's current subscription, read once and named.
    assert [c for c in calls if c.startswith("az account show")] == [calls[0]]
    assert f"using the Azure CLI's current subscription {CLI_SUBSCRIPTION}" in done.stderr
    for call in calls[1:]:
        if call.startswith(("az ", "func ")):
            assert f"--subscription {CLI_SUBSCRIPTION}" in call, call
    # The publish is retried while storage answers 403.
    assert [c for c in calls if c.startswith("func ")] == [
        f"func azure functionapp publish func-test --subscription {CLI_SUBSCRIPTION}"
    ] * 2
    # The key is awaited (the host poked meanwhile), then the subscription is created, retried
    # while Event Grid's validation of the webhook fails.
    keys = [c for c in calls if c.startswith("az functionapp keys list")]
    assert len(keys) == 3
    assert all("--query systemKeys.blobs_extension" in c for c in keys)
    assert any(c.startswith("curl ") and "/api/activity" in c for c in calls)
    creates = [
        c for c in calls if c.startswith("az eventgrid system-topic event-subscription create")
    ]
    assert len(creates) == 2
    create = creates[-1]
    endpoint = (
        "https://func-test-abc.westeurope-01.azurewebsites.net/runtime/webhooks/blobs"
        "?functionName=Host.Functions.archive_blob&code=KEYVALUE123"
    )
    for argument in (
        "--name archive-blob-blob-created",
        "--resource-group rg-test",
        "--system-topic-name evgt-test",
        "--endpoint-type webhook",
        f"--endpoint {endpoint}",
        "--included-event-types Microsoft.Storage.BlobCreated",
        "--subject-begins-with /blobServices/default/containers/insights-activity-logs/",
        "--max-delivery-attempts 30",
        "--event-ttl 1440",
    ):
        assert argument in create, argument
    # The key reaches Event Grid, never the output (even when az echoes the endpoint).
    assert "KEYVALUE123" not in done.stdout + done.stderr
    assert "code=***" in done.stderr
    # The failed key lookups are shown, each with what the hook does about it.
    assert done.stderr.count("ERROR: 503 (Service Unavailable)") == 2
    assert done.stderr.count("az could not read the keys of func-test (error above)") == 2


def run_hook(tmp_path: Path, *arguments: str, **env: str) -> tuple[Any, list[str]]:
    """The hook run against the stand-in tools: (the finished process, the calls it made)."""
    log = tmp_path / "calls.log"
    keys = env.pop("keys", "late")
    done = subprocess.run(
        ["sh", str(HOOK), *arguments],
        env={**fake_tools(tmp_path, log, keys), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done, log.read_text("utf-8").splitlines() if log.exists() else []


def test_the_hook_gives_up_when_the_key_never_comes(tmp_path: Path) -> None:
    # az answers, the host never creates the key: the app is not running its blob trigger.
    done, calls = run_hook(
        tmp_path, "--deployment", "activitylog-test", keys="none", POSTDEPLOY_ATTEMPTS="2"
    )
    assert done.returncode == 1
    assert "blobs_extension key after 2 attempts" in done.stderr
    assert "no blobs_extension key yet" in done.stderr
    assert not any("event-subscription create" in c for c in calls)


def test_the_hook_shows_why_the_key_lookup_fails(tmp_path: Path) -> None:
    # az itself fails every time: its error is shown each time, never discarded, and the end
    # says what to check, instead of blaming a key the host has not created.
    done, calls = run_hook(
        tmp_path, "--deployment", "activitylog-test", keys="late", POSTDEPLOY_ATTEMPTS="2"
    )
    assert done.returncode == 1
    assert len([c for c in calls if c.startswith("az functionapp keys list")]) == 2
    assert done.stderr.count("ERROR: 503 (Service Unavailable)") == 2
    assert "az functionapp keys list still fails after 2 attempts (az's error above)" in (
        done.stderr
    )
    for advice in (
        f"logged in to subscription {CLI_SUBSCRIPTION}",
        "func-test exists in resource group rg-test",
        "Microsoft.Web/sites/host/listkeys/action",
    ):
        assert advice in done.stderr, advice
    assert "has not created its blobs_extension key" not in done.stderr
    assert not any("event-subscription create" in c for c in calls)


def test_the_hook_stops_at_once_when_az_is_not_logged_in(tmp_path: Path) -> None:
    done, calls = run_hook(tmp_path, "--deployment", "activitylog-test", keys="login")
    assert done.returncode == 1
    # One lookup, not POSTDEPLOY_ATTEMPTS of them: no wait makes az logged in.
    assert len([c for c in calls if c.startswith("az functionapp keys list")]) == 1
    assert "ERROR: Please run 'az login' to setup account." in done.stderr
    assert "waiting cannot fix it: log in with 'az login'" in done.stderr


def test_the_hook_runs_every_az_call_in_azds_subscription(tmp_path: Path) -> None:
    # azd gives its hooks AZURE_SUBSCRIPTION_ID: every call names it, whatever the Azure CLI's
    # current subscription is (here another one), and the CLI is not asked.
    done, calls = run_hook(
        tmp_path,
        "--deployment",
        "activitylog-test",
        "--publish",
        AZURE_SUBSCRIPTION_ID=AZD_SUBSCRIPTION,
    )
    assert done.returncode == 0, done.stderr
    assert not any(c.startswith("az account") for c in calls)
    commands = [c for c in calls if c.startswith(("az ", "func "))]
    assert {c.split(" --")[0] for c in commands} == {
        "az deployment sub show",
        "func azure functionapp publish func-test",
        "az functionapp keys list",
        "az eventgrid system-topic event-subscription create",
    }
    for call in commands:
        assert f"--subscription {AZD_SUBSCRIPTION}" in call, call
    assert CLI_SUBSCRIPTION not in "\n".join(calls) + done.stderr


def az_invocations(script: str, continuation: str) -> list[str]:
    """Every `az` command a hook script runs, its continued lines joined."""
    text = script.replace(continuation + "\n", " ")
    return [
        match.group(1) for match in re.finditer(r"(?:^\s*|\$\(|= |\bif )(az [^\n]*)", text, re.M)
    ]


def test_the_hooks_name_the_subscription_and_keep_az_errors() -> None:
    # The same rules for both hooks, read from their source (no PowerShell here): every az
    # call but the one that reads the CLI's current subscription names --subscription, the
    # publish too, and no az error output is thrown away.
    ps1 = (ROOT / "scripts" / "postdeploy.ps1").read_text("utf-8")
    sh = HOOK.read_text("utf-8")
    for script, continuation in ((sh, "\\"), (ps1, "`")):
        calls = az_invocations(script, continuation)
        assert len(calls) >= 4, calls
        for call in calls:
            assert "/dev/null" not in call and "$null" not in call, call
            if call.startswith("az account show"):
                continue
            assert re.search(r"--subscription \"?\$subscription\b", call), call
        (publish,) = re.findall(r"(?:\bif |& )(func azure functionapp publish .*)", script)
        assert re.search(r"--subscription \"?\$subscription\b", publish), publish
    assert "2>$null" not in ps1
    assert not re.search(r"^\s*az .*(2>/dev/null|\|\| true)", sh, re.M)
    assert "AZURE_SUBSCRIPTION_ID" in sh and "AZURE_SUBSCRIPTION_ID" in ps1


def test_the_windows_hook_does_what_the_posix_one_does() -> None:
    # No PowerShell here: the same commands, arguments and retries, read from the source.
    ps1 = (ROOT / "scripts" / "postdeploy.ps1").read_text("utf-8")
    sh = HOOK.read_text("utf-8")
    for text in (
        "systemKeys.blobs_extension",
        "az eventgrid system-topic event-subscription create",
        "--included-event-types Microsoft.Storage.BlobCreated",
        "--subject-begins-with",
        "--max-delivery-attempts",
        "--event-ttl",
        "runtime/webhooks/blobs?functionName=Host.Functions.",
        "func azure functionapp publish",
        "403|Forbidden|AuthorizationPermissionMismatch|AuthorizationFailure",
        "POSTDEPLOY_ATTEMPTS",
        "POSTDEPLOY_RETRY_SECONDS",
        "az deployment sub show",
        "azd env get-values",
        "az account show --query id --output tsv",
        "AZURE_SUBSCRIPTION_ID is not set: using the Azure CLI's current subscription",
        "az functionapp keys list still fails after $attempts attempts (az's error above)",
        "az login|doesn't exist in cloud|SubscriptionNotFound",
        "Microsoft.Web/sites/host/listkeys/action",
    ):
        assert text in ps1, text
        assert text in sh, text
    assert "Start-Sleep" in ps1
    assert "code=***" in ps1


def test_flex_consumption_limits_and_python(bicep: dict[str, Bicep]) -> None:
    main, app = bicep["main.bicep"], bicep["modules/function-app.bicep"]
    for source in (main, app):
        # 40: the lowest maximum Learn long documented for Flex Consumption (now 1).
        default = parameter_defaults(source)["maximumInstanceCount"]
        assert isinstance(default, int)
        assert default >= 40
        assert bound(source, "maximumInstanceCount", "minValue") >= 40
        assert bound(source, "maximumInstanceCount", "maxValue") <= 1000
        assert parameter_defaults(source)["pythonVersion"] == "3.12"
        assert sorted(allowed_values(source, "pythonVersion")) == ["3.11", "3.12"]
    assert "pythonVersion: pythonVersion" in main.text
    assert "maximumInstanceCount: maximumInstanceCount" in main.text
    ((_, _, start, end),) = resources(app, "Microsoft.Web/sites")
    site = app.text[start:end]
    assert re.search(r"runtime: \{\s*name: 'python'\s*version: pythonVersion\s*\}", site)
    assert "maximumInstanceCount: maximumInstanceCount" in site
    parameters = json.loads((INFRA / "main.parameters.json").read_text("utf-8"))["parameters"]
    assert parameters["pythonVersion"]["value"] == "${PYTHON_VERSION=3.12}"


# --------------------------------------------------------------------------------------------
# Event Hubs capacity and the trigger's batching (infra/README.md, "Event Hubs capacity";
# README.md, "Scale: what carries 1, 10 and 100 million events a day").
# --------------------------------------------------------------------------------------------

# main.bicep parameter -> (event-hubs.bicep parameter, default, (min, max) or allowed values).
# Learn, "Azure Event Hubs quotas and limits": Standard takes 1 to 40 TUs and 32 partitions a
# hub, Premium 100 partitions a hub; Premium PUs are 1, 2, 4, 8 or 16 (the service refuses
# other counts; the shared bounds are Standard's).
EVENT_HUBS_CAPACITY: dict[str, tuple[str, object, object]] = {
    "eventHubsSku": ("namespaceSku", "Standard", ["Standard", "Premium"]),
    "eventHubsCapacity": ("capacity", 1, (1, 40)),
    "eventHubsAutoInflate": ("autoInflate", True, None),
    "eventHubsMaximumThroughputUnits": ("maximumThroughputUnits", 4, (1, 40)),
    "eventHubPartitionCount": ("partitionCount", 4, (1, 100)),
}
EVENT_HUBS_PAGES = (
    "learn.microsoft.com/azure/event-hubs/event-hubs-quotas",
    "learn.microsoft.com/azure/event-hubs/event-hubs-scalability",
    "learn.microsoft.com/azure/event-hubs/event-hubs-auto-inflate",
    "learn.microsoft.com/azure/azure-functions/functions-target-based-scaling",
    "learn.microsoft.com/azure/azure-functions/functions-bindings-event-hubs#hostjson-settings",
)


def test_event_hubs_capacity_is_parameters(bicep: dict[str, Bicep]) -> None:
    main, hubs = bicep["main.bicep"], bicep["modules/event-hubs.bicep"]
    main_defaults, hub_defaults = parameter_defaults(main), parameter_defaults(hubs)
    readme = (INFRA / "README.md").read_text("utf-8")
    for name, (inner, default, limits) in EVENT_HUBS_CAPACITY.items():
        assert main_defaults[name] == default == hub_defaults[inner], name
        assert re.search(rf"^    {inner}: {name}$", main.text, re.M), name
        for source, param in ((main, name), (hubs, inner)):
            if isinstance(limits, list):
                assert allowed_values(source, param) == limits, param
            elif limits is not None:
                assert (bound(source, param, "minValue"), bound(source, param, "maxValue")) == (
                    limits
                ), param
        shown = str(default).lower() if isinstance(default, bool) else default
        assert f"| `{name}` | `{shown}` |" in readme, name
    # The namespace takes them: tier, capacity, auto-inflate and its maximum; the hub its
    # partitions. Nothing is left hard-coded.
    ((_, _, start, end),) = resources(hubs, "Microsoft.EventHub/namespaces")
    namespace = hubs.text[start:end]
    sku = r"sku: \{\s*name: namespaceSku\s*tier: namespaceSku\s*capacity: capacity\s*\}"
    assert re.search(sku, namespace)
    assert "isAutoInflateEnabled: autoInflateEnabled" in namespace
    assert "maximumThroughputUnits: autoInflateMaximum" in namespace
    ((_, _, start, end),) = resources(hubs, "Microsoft.EventHub/namespaces/eventhubs")
    assert "partitionCount: partitionCount" in hubs.text[start:end]
    section = readme.split("\n### Event Hubs capacity\n")[1].split("\n### ")[0]
    for page in EVENT_HUBS_PAGES:
        assert page in section, page


def deployed_namespace(parsed: dict[str, Any], **values: Any) -> dict[str, Any]:
    """The namespace's sku and properties as event-hubs.bicep deploys them for these values."""
    parameters = {name: p.get("default") for name, p in parsed["parameters"].items()}
    parameters.update(values)

    def lookup(name: str) -> Any:
        if name in parameters:
            return parameters[name]
        if name in parsed["variables"]:
            return evaluate(parsed["variables"][name]["value"], lookup)
        return None

    config = parsed["resources"]["namespace"]["config"]
    found: dict[str, Any] = evaluate({"sku": config["sku"], **config["properties"]}, lookup)
    return found


def test_event_hubs_namespace_as_deployed(pycep_parser: Any) -> None:
    parsed = pycep_parser.parse(text=(INFRA / "modules" / "event-hubs.bicep").read_text("utf-8"))
    default = deployed_namespace(parsed)
    assert default["sku"] == {"name": "Standard", "tier": "Standard", "capacity": 1}
    assert (default["isAutoInflateEnabled"], default["maximumThroughputUnits"]) == (True, 4)
    # Off: the API's convention is a maximum of 0.
    off = deployed_namespace(parsed, autoInflate=False)
    assert (off["isAutoInflateEnabled"], off["maximumThroughputUnits"]) == (False, 0)
    # A maximum below the starting capacity is raised to it.
    raised = deployed_namespace(parsed, capacity=6, maximumThroughputUnits=4)
    assert (raised["sku"]["capacity"], raised["maximumThroughputUnits"]) == (6, 6)
    # Premium has processing units and no auto-inflate, whatever autoInflate says.
    premium = deployed_namespace(parsed, namespaceSku="Premium", capacity=2)
    assert premium["sku"] == {"name": "Premium", "tier": "Premium", "capacity": 2}
    assert (premium["isAutoInflateEnabled"], premium["maximumThroughputUnits"]) == (False, 0)


def test_host_json_batches_large_invocations_and_keeps_checkpoints() -> None:
    # Learn, "Azure Event Hubs trigger and bindings for Azure Functions", host.json settings:
    # minEventBatchSize "must be less than maxEventBatchSize", maxWaitTime is only considered
    # when minEventBatchSize is larger than 1, and "The longest allowed wait time is 10 minutes";
    # batchCheckpointFrequency above 1 can keep target-based scaling from scaling in.
    hubs = json.loads((ROOT / "host.json").read_text("utf-8"))["extensions"]["eventHubs"]
    assert 1 < hubs["minEventBatchSize"] < hubs["maxEventBatchSize"] == 1000
    hours, minutes, seconds = (int(part) for part in hubs["maxWaitTime"].split(":"))
    wait = hours * 3600 + minutes * 60 + seconds
    assert 0 < wait <= 600
    assert hubs["batchCheckpointFrequency"] == 1
    assert hubs["prefetchCount"] >= hubs["maxEventBatchSize"]
    # The README's scale section names the page and the parameters main.bicep has.
    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme.split("\n## Scale: what carries 1, 10 and 100 million events a day\n")[1]
    section = section.split("\n## ")[0]
    assert "functions-bindings-event-hubs#hostjson-settings" in section
    assert '"Search at scale" under Benchmarks' in section  # where its figures are measured
    main = lex(INFRA / "main.bicep")
    for name in set(re.findall(r"`(\w+)=[^`]+`", section)):
        assert re.search(rf"^param {name} ", main.text, re.M), name


def code_instrumentations() -> tuple[str, ...]:
    # Where the distro is configured in the app's code (shared/adapters is being reworked:
    # either module may hold it).
    for module in ("shared.adapters.azure_monitor", "shared.adapters.telemetry"):
        try:
            found = getattr(importlib.import_module(module), "INSTRUMENTATIONS", None)
        except ImportError:
            continue
        if found is not None:
            return tuple(found)
    raise AssertionError("no INSTRUMENTATIONS in shared.adapters")


def test_telemetry_follows_the_functions_opentelemetry_page(bicep: dict[str, Bicep]) -> None:
    host = json.loads((ROOT / "host.json").read_text("utf-8"))
    assert host["telemetryMode"] == "OpenTelemetry"
    # "If you set telemetryMode to OpenTelemetry, the configuration in the
    # logging.applicationInsights section of host.json doesn't apply": none is left to mislead.
    assert "applicationInsights" not in host.get("logging", {})
    values = infra_app_setting_values(bicep)
    assert values["APPLICATIONINSIGHTS_CONNECTION_STRING"].endswith(".properties.ConnectionString")
    assert values["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        "ClientId=${identityClientId};Authorization=AAD"
    )
    # Python and Application Insights: the worker configures the distro; not the OTLP switch.
    assert values["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"
    assert "PYTHON_ENABLE_OPENTELEMETRY" not in values
    # Nothing reported twice: the worker's distro instruments no library, like the app's code.
    assert tuple(values["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"].split(",")) == (
        code_instrumentations()
    )
    assert values["OTEL_TRACES_SAMPLER"] == "always_on"
    requirements = (ROOT / "requirements.txt").read_text("utf-8")
    assert re.search(r"^azure-monitor-opentelemetry==", requirements, re.M)
    # Monitoring Metrics Publisher on Application Insights: Entra ID ingestion.
    rbac = bicep["modules/rbac.bicep"]
    assert "scope: applicationInsights" in rbac.text


def test_readme_telemetry_says_what_the_code_does(bicep: dict[str, Bicep]) -> None:
    # infra/README.md, "Telemetry", against the code it describes: the worker's switch is the
    # code's, infra sets it, and with it the code only filters the worker's log handler.
    from shared.adapters import azure_monitor

    readme = (INFRA / "README.md").read_text("utf-8")
    section = " ".join(readme.split("\n## Telemetry\n")[1].split("\n## ")[0].split())
    assert "opentelemetry-howto?pivots=programming-language-python" in section
    assert azure_monitor.WORKER_EXPORTS == "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"
    assert infra_app_setting_values(bicep)[azure_monitor.WORKER_EXPORTS] == "true"
    assert "does **not** configure the distro again" in section
    for logger in (*azure_monitor.APP_LOGGERS, *azure_monitor.UNEXPORTED_LOGGERS):
        assert f"`{logger}`" in section, logger
    assert "`AzureWebJobsStorage__clientId`" in section
    assert azure_monitor.IDENTITY_CLIENT_ID == "AzureWebJobsStorage__clientId"
    # What an earlier version said and the code no longer does.
    assert "still calls `configure_azure_monitor()` itself" not in section
    assert "reported to the team" not in section


def load_policy_definition() -> dict[str, Any]:
    definition: dict[str, Any] = json.loads(POLICY_DEFINITION.read_text("utf-8"))
    return definition


def test_management_group_policy_deploys_the_setting_everywhere(bicep: dict[str, Bicep]) -> None:
    source = bicep["onboard-management-group.bicep"]
    assert source.text.count("targetScope = 'managementGroup'") == 1
    definition = load_policy_definition()["properties"]
    rule = definition["policyRule"]
    # Every subscription under the group, DeployIfNotExists by default.
    assert rule["if"] == {"field": "type", "equals": "Microsoft.Resources/subscriptions"}
    assert rule["then"]["effect"] == "[parameters('effect')]"
    assert definition["parameters"]["effect"]["defaultValue"] == "DeployIfNotExists"
    assert parameter_defaults(source)["effect"] == "DeployIfNotExists"
    details = rule["then"]["details"]
    assert details["type"] == "Microsoft.Insights/diagnosticSettings"
    assert details["existenceScope"] == details["deploymentScope"] == "Subscription"
    assert details["deployment"]["location"] == "__LOCATION__"
    assert "'__LOCATION__', location)" in source.text
    # The setting it deploys: every category, to the hub through its rule, and to the archive.
    template = details["deployment"]["properties"]["template"]
    (setting,) = template["resources"]
    assert setting["type"] == "Microsoft.Insights/diagnosticSettings"
    logs = setting["properties"]["logs"]
    assert sorted(log["category"] for log in logs) == sorted(CATEGORIES)
    assert all(log["enabled"] is True for log in logs)
    assert setting["properties"]["eventHubAuthorizationRuleId"] == (
        "[parameters('eventHubAuthorizationRuleId')]"
    )
    assert setting["properties"]["eventHubName"] == "[parameters('eventHubName')]"
    assert "parameters('storageAccountId')" in setting["properties"]["storageAccountId"]
    condition = json.dumps(details["existenceCondition"])
    for category in CATEGORIES:
        assert f'"{category}"' in condition
    for field in ("eventHubAuthorizationRuleId", "eventHubName", "storageAccountId"):
        assert f"Microsoft.Insights/diagnosticSettings/{field}" in condition
    # The assignment: at this scope, with a system-assigned identity, every parameter given.
    ((_, _, start, end),) = resources(source, "Microsoft.Authorization/policyAssignments")
    assignment = source.text[start:end]
    assert "scope:" not in entries(source, start, end)
    assert re.search(r"identity: \{\s*type: 'SystemAssigned'\s*\}", assignment)
    assert "policyDefinitionId: policyDefinition.id" in assignment
    given = set(re.findall(r"^      (\w+): \{\n        value:", assignment, re.M))
    required = {n for n, p in definition["parameters"].items() if "defaultValue" not in p}
    assert required <= given <= set(definition["parameters"])
    assert "eventHubAuthorizationRuleId" in given and "storageAccountId" in given
    # The roles the definition lists, assigned to that identity at the group.
    listed = {role.rsplit("/", 1)[1] for role in details["roleDefinitionIds"]}
    roles = dict(re.findall(r"^  (\w+): '([0-9a-f-]{36})'$", source.text, re.M))
    assigned = {
        roles[m.group(1)]
        for _, _, body, _ in role_assignments({"mg": source})
        if (m := re.search(r"roles\.(\w+)\)$", body["name"]))
    }
    assert assigned == listed == {"749f88d5-cbae-40b8-bcfc-e573ddc772fa"}  # Monitoring Contributor
    # ListKeys on the rule and the archive account only (the diagnostic setting names them).
    access = bicep["modules/policy-destination-access.bicep"]
    ((_, _, start, end),) = resources(access, "Microsoft.Authorization/roleDefinitions")
    actions = sorted(re.findall(r"'(Microsoft\.[\w/.]+)'", access.text[start:end]))
    assert actions == sorted(
        [
            "Microsoft.EventHub/namespaces/read",
            "Microsoft.EventHub/namespaces/authorizationRules/read",
            "Microsoft.EventHub/namespaces/authorizationRules/listkeys/action",
            "Microsoft.Storage/storageAccounts/read",
            "Microsoft.Storage/storageAccounts/listkeys/action",
        ]
    )
    assert "resourceGroup().id" in access.text[start:end].split("assignableScopes:")[1]
    scopes = sorted(body["scope"] for _, _, body, _ in role_assignments({"a": access}))
    assert scopes == ["rule", "storage"]
    assert (
        "scope: resourceGroup(destinationSubscriptionId, destinationResourceGroup)" in source.text
    )
    # And a remediation task for the subscriptions that already exist.
    ((_, _, start, end),) = resources(source, "Microsoft.PolicyInsights/remediations")
    remediation = source.text[start:end]
    assert "policyAssignmentId: policyAssignment.id" in remediation
    assert "resourceDiscoveryMode: 'ExistingNonCompliant'" in remediation
    assert re.search(r"remediations@[\d-]+' = if \(!empty\(remediationName\)\)", source.text)


def bicep_rule_var(source: Bicep, name: str, condition: str) -> str:
    """The array text of a `var <name> = (<condition>) ? [ ... ] : []` (the brackets' inside)."""
    head = f"var {name} = ({condition}) ? ["
    offset = source.text.index(head)
    start, end = source.block_after(offset + len(head) - 1, "[")
    assert source.text[end : end + 7] == "] : []\n", f"{name}: not `... ] : []`"
    return source.text[start:end]


def test_lifecycle_policy_exists_only_with_a_rule(bicep: dict[str, Bicep]) -> None:
    storage = bicep["modules/storage.bicep"]
    ((_, _, start, end),) = resources(
        storage, "Microsoft.Storage/storageAccounts/managementPolicies"
    )
    # One policy per account, holding whichever optional rules are on, and none when neither is
    # (a policy needs at least one rule).
    assert re.search(
        r"managementPolicies@[\d-]+' = if \(!empty\(lifecycleRules\)\) \{", storage.text
    )
    assert "var lifecycleRules = concat(rawExportRules, recordsArchiveRules)" in storage.text
    assert re.search(r"policy: \{\s*rules: lifecycleRules\s*\}", storage.text[start:end])
    for page in (
        "learn.microsoft.com/azure/storage/blobs/lifecycle-management-overview",
        "learn.microsoft.com/azure/storage/blobs/lifecycle-management-policy-structure",
        "learn.microsoft.com/azure/templates/microsoft.storage/storageaccounts/managementpolicies",
    ):
        assert page in storage.text, page


def test_raw_export_lifecycle_rule(bicep: dict[str, Bicep]) -> None:
    storage = bicep["modules/storage.bicep"]
    main = bicep["main.bicep"]
    rule = bicep_rule_var(storage, "rawExportRules", "rawArchiveExpiryDays > 0")
    assert "name: 'expire-raw-activity-log-export'" in rule
    # Azure's own raw export only, and only deletes (the one action append blobs support).
    assert re.search(r"prefixMatch: \[\s*'\$\{archiveContainerName\}/'\s*\]", rule)
    assert "archiveContainerName: archiveContainerName" in main.text
    assert f"var archiveContainerName = '{settings.DEFAULT_ARCHIVE_CONTAINER}'" in main.text
    assert "'appendBlob'" in rule
    actions = rule.split("actions:")[1]
    assert "delete:" in actions and "tierTo" not in actions
    assert (
        "daysAfterModificationGreaterThan: max(rawArchiveExpiryDays, rawArchiveExpiryFloorDays)"
        in rule
    )
    # Off by default (0 keeps: the raw blobs are the only byte-exact copy of Azure's export),
    # and never sooner than twice the longest window in which the app may still need a blob.
    assert parameter_defaults(main)["rawArchiveExpiryDays"] == 0
    assert parameter_defaults(storage)["rawArchiveExpiryDays"] == 0
    floor_days = int(bicep_var(storage, "rawArchiveExpiryFloorDays"))
    seal_minutes = bound(main, "sealAfterMinutes", "maxValue")
    lookback_hours = bound(main, "catchupLookbackHours", "maxValue")
    assert floor_days * 24 * 60 >= 2 * (seal_minutes + lookback_hours * 60)
    assert "rawArchiveExpiryDays: rawArchiveExpiryDays" in main.text
    assert "learn.microsoft.com/azure/storage/blobs/lifecycle-management-policy-delete" in (
        storage.text
    )


def test_records_container_is_created_private(bicep: dict[str, Bicep]) -> None:
    storage, main = bicep["modules/storage.bicep"], bicep["main.bicep"]
    # Named as the app names it, from the store prefix (shared/settings.py).
    assert "var recordsContainerName = '${storePrefix}-records'" in main.text
    prefix = parameter_defaults(main)["storePrefix"]
    assert f"{prefix}-records" == load_settings({}).records_container
    assert "recordsContainerName: recordsContainerName" in main.text
    containers = {
        symbol: entries(storage, start, end)
        for symbol, _, start, end in resources(
            storage, "Microsoft.Storage/storageAccounts/blobServices/containers"
        )
    }
    assert containers["recordsContainer"]["name"] == "recordsContainerName"
    assert containers["recordsContainer"]["parent"] == "blobService"
    ((_, _, start, end),) = [
        r
        for r in resources(storage, "Microsoft.Storage/storageAccounts/blobServices/containers")
        if r[0] == "recordsContainer"
    ]
    assert re.search(r"properties: \{\s*publicAccess: 'None'\s*\}", storage.text[start:end])
    # Once: not in the list of other containers as well.
    listed = main.text[main.text.index("containerNames: [") :]
    assert "recordsContainerName" not in listed[: listed.index("]")]
    assert re.search(
        r"^output RECORDS_CONTAINER string = storage\.outputs\.recordsContainerName$",
        main.text,
        re.M,
    )


def test_no_template_creates_what_the_app_creates_or_dropped(bicep: dict[str, Bicep]) -> None:
    # Index tables are one a month, created and deleted whole by the app at run time; the old
    # records and lookup tables and the oversize container no longer exist.
    for name, source in bicep.items():
        assert not resources(source, "Microsoft.Storage/storageAccounts/tableServices/tables"), name
        assert not resources(source, "Microsoft.Storage/storageAccounts/tableServices"), name
        for gone in ("${storePrefix}records", "${storePrefix}lookup", "-oversize"):
            assert gone not in source.text, (name, gone)


def test_archive_tier_setting_defaults_to_cold(bicep: dict[str, Bicep]) -> None:
    main, app = bicep["main.bicep"], bicep["modules/function-app.bicep"]
    tiers = list(settings.ARCHIVE_TIERS)
    assert settings.DEFAULT_ARCHIVE_TIER == "Cold"
    assert sorted(tiers) == ["Cold", "Cool", "Hot"]  # online tiers only: never Archive
    assert allowed_values(main, "archiveAccessTier") == tiers
    assert parameter_defaults(main)["archiveAccessTier"] == settings.DEFAULT_ARCHIVE_TIER
    assert allowed_values(app, "archiveTier") == tiers
    assert parameter_defaults(app)["archiveTier"] == settings.DEFAULT_ARCHIVE_TIER
    assert "archiveTier: archiveAccessTier" in main.text
    assert infra_app_setting_values(bicep)[settings.ARCHIVE_TIER] == "archiveTier"
    assert load_settings({}).archive_tier == settings.DEFAULT_ARCHIVE_TIER
    example = json.loads((ROOT / "local.settings.example.json").read_text(encoding="utf-8"))
    assert example["Values"][settings.ARCHIVE_TIER] == settings.DEFAULT_ARCHIVE_TIER
    # Why Cold: online unlike Archive; its 90-day early deletion fits the 90-day minimum retention.
    description = param_decorators(main, "archiveAccessTier")
    assert "online" in description and "90-day" in description
    assert "learn.microsoft.com/azure/storage/blobs/access-tiers-overview" in main.text


def test_records_archive_tier_rule_is_optional_and_off(bicep: dict[str, Bicep]) -> None:
    storage, main = bicep["modules/storage.bicep"], bicep["main.bicep"]
    for source in (main, storage):
        assert parameter_defaults(source)["archiveToArchiveTierAfterDays"] == 0
        assert bound(source, "archiveToArchiveTierAfterDays", "minValue") == 0
        # Why off: archived blobs are offline, unreadable by the app until rehydrated.
        description = param_decorators(source, "archiveToArchiveTierAfterDays")
        assert "offline" in description and "rehydrated" in description
    assert "archiveToArchiveTierAfterDays: archiveToArchiveTierAfterDays" in main.text
    rule = bicep_rule_var(storage, "recordsArchiveRules", "archiveToArchiveTierAfterDays > 0")
    assert "name: 'archive-tier-app-records'" in rule
    # The app's records container, block blobs (the only ones it writes; the only ones that tier).
    assert re.search(r"prefixMatch: \[\s*'\$\{recordsContainerName\}/'\s*\]", rule)
    assert re.search(r"blobTypes: \[\s*'blockBlob'\s*\]", rule)
    # Tiering only: the app enforces per-category retention itself, so no lifecycle delete.
    actions = rule.split("actions:")[1]
    assert re.search(
        r"tierToArchive: \{\s*(//[^\n]*\n\s*)*daysAfterModificationGreaterThan: "
        r"archiveToArchiveTierAfterDays\s*\}",
        actions,
    )
    assert "delete" not in actions and "tierToCool" not in actions and "tierToCold" not in actions
    why = comment_above(storage, storage.text.index("var recordsArchiveRules"))
    assert "no delete action" in why and "retention itself" in why
    assert "learn.microsoft.com/azure/storage/blobs/lifecycle-management-policy-access-tiers" in why


def test_records_immutability_is_optional_unlocked_and_off(bicep: dict[str, Bicep]) -> None:
    storage, main = bicep["modules/storage.bicep"], bicep["main.bicep"]
    found = [
        (name, resource)
        for name, source in bicep.items()
        for resource in resources(
            source, "Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies"
        )
    ]
    assert [(name, symbol) for name, (symbol, *_) in found] == [
        ("modules/storage.bicep", "recordsImmutability")
    ]
    ((_, (_, _, start, end)),) = found
    body = entries(storage, start, end)
    assert body["parent"] == "recordsContainer"
    assert body["name"] == "'default'"
    properties = entries(
        storage, *storage.block_after(storage.code.index("properties: {", start, end))
    )
    assert properties == {
        "immutabilityPeriodSinceCreationInDays": "archiveImmutabilityDays",
        "allowProtectedAppendWrites": "false",
    }
    assert re.search(
        r"immutabilityPolicies@[\d-]+' = if \(archiveImmutabilityDays > 0\) \{", storage.text
    )
    # Never locked by the template (no lock resource, no state): the user locks it after review.
    assert "/lock" not in storage.code and "state:" not in storage.text[start:end]
    for source in (main, storage):
        assert parameter_defaults(source)["archiveImmutabilityDays"] == 0
        assert bound(source, "archiveImmutabilityDays", "minValue") == 0
        assert bound(source, "archiveImmutabilityDays", "maxValue") == 146000  # 400 years
    assert "archiveImmutabilityDays: archiveImmutabilityDays" in main.text
    why = comment_above(storage, storage.text.index("resource recordsImmutability "))
    assert "skips" in why and "reports" in why and "shortest retention" in why
    assert "unlocked" in why
    for page in (
        "learn.microsoft.com/azure/templates/microsoft.storage/storageaccounts/blobservices/containers/immutabilitypolicies",
        "learn.microsoft.com/azure/storage/blobs/immutable-storage-overview",
        "learn.microsoft.com/rest/api/storagerp/blob-containers/lock-immutability-policy",
    ):
        assert page in why, page
    retention_page = "immutable-time-based-retention-policy-overview"
    assert f"learn.microsoft.com/azure/storage/blobs/{retention_page}" in storage.text


class DeploymentValidationError(Exception):
    """What ARM would refuse while validating the template, before deploying anything."""


# A small evaluator of pycep's expression trees: enough to compute, for given parameter values,
# which lifecycle rules and which immutability policy storage.bicep deploys, and what total
# retention monitoring.bicep gives the table. Like ARM, it evaluates only the branch a condition
# selects, and a property an object does not have stops it (DeploymentValidationError).
def evaluate(node: Any, lookup: Any) -> Any:
    if isinstance(node, (bool, int)) or node is None:
        return node
    if isinstance(node, str):
        found = lookup(node)
        if found is not None:
            return found
        return re.sub(r"\$\{(\w+)\}", lambda m: str(evaluate(m.group(1), lookup)), node)
    if isinstance(node, list):
        return [evaluate(item, lookup) for item in node]
    if set(node) == {"operator"}:
        kind, operands = node["operator"]["type"], node["operator"]["operands"]
        if kind == "conditional":
            chosen = "true_value" if evaluate(operands["condition"], lookup) else "false_value"
            return evaluate(operands[chosen], lookup)
        if kind == "not":
            return not evaluate(operands["bool_value"], lookup)
        first, second = (evaluate(operands[k], lookup) for k in ("operand_1", "operand_2"))
        if kind == "index_accessor":
            # pycep keeps a quoted key's quotes; ARM looks the property up by its name.
            found = {str(key).strip("'"): value for key, value in first.items()}
            if str(second) not in found:
                raise DeploymentValidationError(
                    f"The language expression property '{second}' doesn't exist, available "
                    f"properties are '{', '.join(found)}'."
                )
            return found[str(second)]
        return {
            "greater_than": lambda: first > second,
            "less_than_or_equals": lambda: first <= second,
            "equals": lambda: first == second,
            "or": lambda: first or second,
            "and": lambda: first and second,
        }[kind]()
    if set(node) == {"function"}:
        kind = node["function"]["type"]
        arguments = [evaluate(v, lookup) for v in node["function"]["parameters"].values()]
        if kind == "concat":
            return [item for argument in arguments for item in argument]
        if kind == "empty":
            return not arguments[0]
        if kind == "max":
            return max(arguments)
        if kind == "string":
            return str(arguments[0])
        raise AssertionError(f"no evaluator for {kind}()")
    return {key: evaluate(value, lookup) for key, value in node.items()}


def deployed_storage(parsed: dict[str, Any], **values: Any) -> dict[str, Any]:
    """What storage.bicep deploys for these parameter values (defaults for the rest):
    the lifecycle rules (None without a policy) and the immutability policy's properties."""
    parameters = {name: p.get("default") for name, p in parsed["parameters"].items()}
    parameters.update(values)

    def lookup(name: str) -> Any:
        if name in parameters:
            return parameters[name]
        if name in parsed["variables"]:
            return evaluate(parsed["variables"][name]["value"], lookup)
        return None

    resources_ = parsed["resources"]
    lifecycle, immutability = resources_["lifecycle"]["config"], resources_["recordsImmutability"]
    return {
        "rules": evaluate(lifecycle["config"]["properties"]["policy"]["rules"], lookup)
        if evaluate(lifecycle["condition"], lookup)
        else None,
        "immutability": evaluate(immutability["config"]["config"]["properties"], lookup)
        if evaluate(immutability["config"]["condition"], lookup)
        else None,
    }


def test_storage_lifecycle_and_immutability_as_deployed(pycep_parser: Any) -> None:
    parsed = pycep_parser.parse(text=(INFRA / "modules" / "storage.bicep").read_text("utf-8"))
    main = pycep_parser.parse(text=(INFRA / "main.bicep").read_text("utf-8"))
    records = evaluate(
        main["variables"]["recordsContainerName"]["value"],
        lambda name: main["parameters"][name]["default"] if name in main["parameters"] else None,
    )
    assert records == load_settings({}).records_container == "activitylog-records"
    base = {"recordsContainerName": records}
    # Defaults: no lifecycle policy at all, no immutability policy.
    assert deployed_storage(parsed, **base) == {"rules": None, "immutability": None}
    # The raw export rule alone, raised to its floor.
    (raw,) = deployed_storage(parsed, **base, rawArchiveExpiryDays=7)["rules"]
    assert raw["name"] == "expire-raw-activity-log-export"
    assert raw["definition"]["filters"]["prefixMatch"] == ["insights-activity-logs/"]
    assert raw["definition"]["actions"] == {
        "baseBlob": {"delete": {"daysAfterModificationGreaterThan": 30}}
    }
    # The records archive rule alone: tier to Archive, nothing else.
    (tier,) = deployed_storage(parsed, **base, archiveToArchiveTierAfterDays=365)["rules"]
    assert tier["name"] == "archive-tier-app-records"
    assert tier["enabled"] is True and tier["type"] == "Lifecycle"
    assert tier["definition"]["filters"] == {
        "blobTypes": ["blockBlob"],
        "prefixMatch": ["activitylog-records/"],
    }
    assert tier["definition"]["actions"] == {
        "baseBlob": {"tierToArchive": {"daysAfterModificationGreaterThan": 365}}
    }
    # Both: one policy, two rules.
    both = deployed_storage(
        parsed, **base, rawArchiveExpiryDays=45, archiveToArchiveTierAfterDays=200
    )["rules"]
    assert [rule["name"] for rule in both] == [raw["name"], tier["name"]]
    # Immutability: only when asked, unlocked, no protected append writes.
    assert deployed_storage(parsed, **base, archiveImmutabilityDays=90)["immutability"] == {
        "immutabilityPeriodSinceCreationInDays": 90,
        "allowProtectedAppendWrites": False,
    }
    # main.bicep passes all three through with the same (off) defaults.
    params = main["modules"]["storage"]["config"]["params"]
    for name in (
        "rawArchiveExpiryDays",
        "archiveToArchiveTierAfterDays",
        "archiveImmutabilityDays",
    ):
        assert params[name] == name
        assert main["parameters"][name]["default"] == parsed["parameters"][name]["default"] == 0
    tier_param = main["parameters"]["archiveAccessTier"]
    assert tier_param["default"] == "Cold"
    (allowed,) = [d["argument"] for d in tier_param["decorators"] if d["type"] == "allowed"]
    assert allowed == list(settings.ARCHIVE_TIERS)


def test_app_identity_can_manage_month_tables_and_tiered_blobs(bicep: dict[str, Bicep]) -> None:
    rbac = bicep["modules/rbac.bicep"]
    roles = dict(re.findall(r"^  (\w+): '([0-9a-f-]{36})'$", rbac.text, re.M))
    # Built-in role ids (Learn, "Azure built-in roles for Storage").
    assert roles["storageTableDataContributor"] == "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
    assert roles["storageBlobDataOwner"] == "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
    tables = comment_above(rbac, rbac.text.index("resource tableDataContributor "))
    # Creates a month's table and deletes it whole: the role's table write and delete actions.
    assert "one a month" in tables and "tables/write" in tables and "tables/delete" in tables
    assert "built-in-roles/storage#storage-table-data-contributor" in tables
    blobs = comment_above(rbac, rbac.text.index("resource blobDataOwner "))
    assert "{storePrefix}-records" in blobs and "ACTIVITYLOG_ARCHIVE_TIER" in blobs
    assert "built-in-roles/storage#storage-blob-data-owner" in blobs
    assert "oversize" not in rbac.text and "lookup" not in rbac.text


def test_storage_parameters_are_documented() -> None:
    readme = (INFRA / "README.md").read_text("utf-8")
    for row in (
        "| `archiveAccessTier` | `Cold` |",
        "| `archiveToArchiveTierAfterDays` | `0` |",
        "| `archiveImmutabilityDays` | `0` |",
        "| `rawArchiveExpiryDays` | `0` |",
        f"| `{settings.ARCHIVE_TIER}` |",
    ):
        assert row in readme, row
    for output in (
        "RECORDS_CONTAINER",
        "ARCHIVE_TO_ARCHIVE_TIER_AFTER_DAYS",
        "ARCHIVE_IMMUTABILITY_DAYS",
    ):
        assert f"`{output}`" in readme, output
    assert "## Records archive" in readme


# Each role the app's identity holds, the resource it is on, and the Learn page giving why.
DOCUMENTED_ROLES = {
    "blobDataOwner": ("storage", "functions-reference#connecting-to-host-storage-with-an-identity"),
    "queueDataContributor": ("storage", "poison blobs to a queue"),
    "tableDataContributor": ("storage", "authorize-access-azure-active-directory"),
    "eventHubsDataReceiver": ("hub", "functions-bindings-event-hubs-trigger#identity-based"),
    "dcrMetricsPublisher": ("dataCollectionRule", "tutorial-logs-ingestion-portal"),
    "appInsightsMetricsPublisher": ("applicationInsights", "azure-ad-authentication"),
    "storageAccountContributor": ("storage", "functions-quickstart-python-azd-eventgrid-blob"),
}


def test_the_apps_roles_are_the_documented_ones(bicep: dict[str, Bicep]) -> None:
    rbac = bicep["modules/rbac.bicep"]
    found = {}
    for symbol, _, start, end in resources(rbac, "Microsoft.Authorization/roleAssignments"):
        found[symbol] = entries(rbac, start, end)["scope"]
        comment = comment_above(rbac, rbac.text.index(f"resource {symbol} "))
        assert "Learn" in comment, symbol
        _, cited = DOCUMENTED_ROLES[symbol]
        assert cited in comment, symbol
    assert found == {symbol: scope for symbol, (scope, _) in DOCUMENTED_ROLES.items()}
    # Storage Account Contributor could turn shared keys back on: opt-in only.
    assert re.search(
        r"storageAccountContributor '[^']+' = if \(grantStorageAccountContributor\)", rbac.text
    )
    assert parameter_defaults(bicep["main.bicep"])["grantStorageAccountContributor"] is False
    # Every role assignment elsewhere says why, with its page, too.
    for source, symbol, _, _ in role_assignments(bicep):
        offset = source.text.index(f"resource {symbol} ")
        assert "Learn" in comment_above(source, offset) or "Learn" in source.text[:2000], symbol


# --------------------------------------------------------------------------------------------
# No secrets.
# --------------------------------------------------------------------------------------------

SECRET_PATTERNS = {
    "storage account key": re.compile(r"AccountKey=", re.I),
    "shared access key": re.compile(r"SharedAccessKey(Name)?=", re.I),
    "SAS token": re.compile(r"SharedAccessSignature |[?&]sig=[\w%+/=]{10,}", re.I),
    "connection string": re.compile(
        r"DefaultEndpointsProtocol=|Endpoint=sb://|"
        r"InstrumentationKey=[0-9a-f]{8}",
        re.I,
    ),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "function key": re.compile(r"code=[\w-]{20,}"),
}


def test_no_secret_looking_literal_in_infra() -> None:
    files = [path for path in INFRA.rglob("*") if path.is_file()]
    assert files
    for path in files:
        text = path.read_text(encoding="utf-8")
        for kind, pattern in SECRET_PATTERNS.items():
            match = pattern.search(text)
            assert not match, f"{path}: {kind}: {match.group(0) if match else ''}"


def test_no_template_reads_a_key(bicep: dict[str, Bicep]) -> None:
    # Not even the blob extension's: the hook reads it at run time, never into a deployment.
    for name, source in bicep.items():
        assert not re.findall(r"listKeys\(|list\w*Keys\(", source.code), f"{name} reads keys"
    hook = HOOK.read_text("utf-8")
    assert "systemKeys.blobs_extension" in hook


def test_workbook_charts_the_table_and_the_app_metrics() -> None:
    workbook = json.loads((INFRA / "workbook" / "activitylog.workbook.json").read_text("utf-8"))
    queries = [item["content"]["query"] for item in workbook["items"] if "query" in item["content"]]
    text = "\n".join(queries)
    assert "ActivityLog_CL" in text
    assert "ingestion_time(), TimeGenerated" in text  # lag
    assert "ActivityStatusValue == 'Failed'" in text
    metrics = set(re.findall(r"'(activitylog\.[a-z.]+)'", text))
    assert metrics == {
        "activitylog.records.normalized",
        "activitylog.records.rejected",
        "activitylog.records.deadlettered",
        "activitylog.records.indexed",
        "activitylog.records.forwarded",
        "activitylog.bytes.read",
        "activitylog.lag.seconds",
        "activitylog.blobs.behind",
        "activitylog.retention.deleted",
        "activitylog.retention.kept",
    }
    for item in workbook["items"]:
        for resource in item["content"].get("crossComponentResources", []):
            assert resource in ("__WORKSPACE_ID__", "__APPINSIGHTS_ID__")


# --------------------------------------------------------------------------------------------
# What Log Analytics costs: the custom table's plan, the Activity Log's own table, forwarding.
# --------------------------------------------------------------------------------------------

# Learn, "Select a table plan based on data usage in a Log Analytics workspace": every
# DCR-based custom table supports Analytics and Basic. Auxiliary is left out: Learn, "Set up a
# table with the Auxiliary plan", says Auxiliary tables don't support dynamic columns.
TABLE_PLANS = ["Basic", "Analytics"]
DEFAULT_TABLE_PLAN = "Basic"


def test_custom_table_plan_is_a_parameter(bicep: dict[str, Bicep]) -> None:
    main, monitoring = bicep["main.bicep"], bicep["modules/monitoring.bicep"]
    assert allowed_values(main, "logAnalyticsTablePlan") == TABLE_PLANS
    assert parameter_defaults(main)["logAnalyticsTablePlan"] == DEFAULT_TABLE_PLAN
    assert allowed_values(monitoring, "tablePlan") == TABLE_PLANS
    assert parameter_defaults(monitoring)["tablePlan"] == DEFAULT_TABLE_PLAN
    assert "tablePlan: logAnalyticsTablePlan" in main.text
    # The table reads it; a Basic table's interactive retention is fixed (30 days), so only an
    # Analytics table is given retentionInDays.
    ((_, _, start, end),) = resources(monitoring, "Microsoft.OperationalInsights/workspaces/tables")
    properties = entries(
        monitoring, *monitoring.block_after(monitoring.code.index("properties: {", start, end))
    )
    assert properties["plan"] == "tablePlan"
    assert properties["retentionInDays"] == "isAnalyticsTable ? retentionInDays : null"
    assert "var isAnalyticsTable = tablePlan == 'Analytics'" in monitoring.text
    for source in (main, monitoring):
        assert "learn.microsoft.com/azure/azure-monitor/logs/logs-table-plans" in source.text
        assert "create-custom-table-auxiliary" in source.text
    # Why Auxiliary is not offered: the record has dynamic columns.
    columns = json.loads((INFRA / "modules" / "activitylog-columns.json").read_text("utf-8"))
    assert any(column["type"] == "dynamic" for column in columns)
    # Settable from azd's environment, with the same default.
    parameters = json.loads((INFRA / "main.parameters.json").read_text("utf-8"))["parameters"]
    assert parameters["logAnalyticsTablePlan"]["value"] == (
        f"${{LOG_ANALYTICS_TABLE_PLAN={DEFAULT_TABLE_PLAN}}}"
    )
    readme = (INFRA / "README.md").read_text("utf-8")
    assert f"| `logAnalyticsTablePlan` | `{DEFAULT_TABLE_PLAN}` |" in readme


def test_activity_log_to_the_workspace_is_a_parameter(bicep: dict[str, Bicep]) -> None:
    main, export = bicep["main.bicep"], bicep["modules/activity-log-export.bicep"]
    assert parameter_defaults(main)["sendActivityLogToWorkspace"] is True
    assert parameter_defaults(export)["workspaceId"] == ""
    assert (
        "workspaceId: sendActivityLogToWorkspace ? monitoring.outputs.workspaceId : ''" in main.text
    )
    ((_, _, start, end),) = resources(export, "Microsoft.Insights/diagnosticSettings")
    properties = entries(
        export, *export.block_after(export.code.index("properties: {", start, end))
    )
    # The workspace only when one is given; the hub and the archive always.
    assert properties["workspaceId"] == "empty(workspaceId) ? null : workspaceId"
    assert properties["storageAccountId"] == "storageAccountId"
    assert properties["eventHubAuthorizationRuleId"] == "eventHubAuthorizationRuleId"
    assert properties["eventHubName"] == "eventHubName"
    # Why it is on by default: Learn says Activity Log ingestion is free, retention to 90 days.
    assert "learn.microsoft.com/azure/azure-monitor/platform/activity-log" in export.text
    retention_days = parameter_defaults(main)["logAnalyticsRetentionDays"]
    assert isinstance(retention_days, int)
    assert retention_days <= 90
    readme = (INFRA / "README.md").read_text("utf-8")
    assert "| `sendActivityLogToWorkspace` | `true` |" in readme


def test_forwarding_to_log_analytics_stays_optional(bicep: dict[str, Bicep]) -> None:
    main = bicep["main.bicep"]
    assert parameter_defaults(main)["forwardToLogAnalytics"] is True
    for name in ("logsIngestionEndpoint", "logsIngestionRuleId", "logsIngestionStream"):
        value = re.search(rf"^    {name}: (.+)$", main.text, re.M)
        assert value, name
        assert value.group(1).startswith("forwardToLogAnalytics ? monitoring.outputs."), name
        assert value.group(1).endswith(" : ''"), name
    # Neither new switch depends on forwarding, nor forwarding on them.
    assert (
        "forwardToLogAnalytics"
        not in main.text.split("module activityLogExport")[1].split("module rbac")[0]
    )


def test_log_analytics_choices_parse_as_checkov_reads_them(pycep_parser: Any) -> None:
    main = pycep_parser.parse(text=(INFRA / "main.bicep").read_text("utf-8"))
    plan = main["parameters"]["logAnalyticsTablePlan"]
    assert plan["type"] == "string"
    assert plan["default"] == DEFAULT_TABLE_PLAN
    (allowed,) = [d["argument"] for d in plan["decorators"] if d["type"] == "allowed"]
    assert allowed == TABLE_PLANS
    send = main["parameters"]["sendActivityLogToWorkspace"]
    assert (send["type"], send["default"]) == ("bool", True)
    workspace = main["modules"]["activityLogExport"]["config"]["params"]["workspaceId"]
    conditional = workspace["operator"]
    assert conditional["type"] == "conditional"
    assert conditional["operands"]["condition"] == "sendActivityLogToWorkspace"
    assert conditional["operands"]["false_value"] == ""
    params = main["modules"]["monitoring"]["config"]["params"]
    assert params["tablePlan"] == "logAnalyticsTablePlan"
    forward = main["parameters"]["forwardToLogAnalytics"]
    assert (forward["type"], forward["default"]) == ("bool", True)
    monitoring = pycep_parser.parse(
        text=(INFRA / "modules" / "monitoring.bicep").read_text("utf-8")
    )
    table = monitoring["resources"]["table"]["config"]["properties"]
    assert table["plan"] == "tablePlan"
    export = pycep_parser.parse(
        text=(INFRA / "modules" / "activity-log-export.bicep").read_text("utf-8")
    )
    setting = export["resources"]["activityLogExport"]["config"]["properties"]
    assert setting["workspaceId"]["operator"]["type"] == "conditional"


# What the Tables API accepts for totalRetentionInDays: Learn, "Manage data retention in a Log
# Analytics workspace", Configure table-level retention, REST: "This value can be between 4 and
# 730; or 1095, 1460, 1826, 2191, 2556, 2922, 3288, 3653, 4018, or 4383".
DATA_RETENTION_PAGE = "learn.microsoft.com/azure/azure-monitor/logs/data-retention-configure"
TOTAL_RETENTION_YEARS = (1095, 1460, 1826, 2191, 2556, 2922, 3288, 3653, 4018, 4383)
TABLES_API_TOTAL_RETENTION = frozenset(range(4, 731)) | frozenset(TOTAL_RETENTION_YEARS)
# A table keeps at least its interactive retention: 30 days on Basic, at least 30 on Analytics
# (logAnalyticsRetentionDays), so the template starts at 30.
TOTAL_RETENTION_ACCEPTED = frozenset(d for d in TABLES_API_TOTAL_RETENTION if d >= 30)


def validated(parsed: dict[str, Any], variable: str, **values: Any) -> Any:
    """A template's variable as ARM's validation computes it for these parameter values
    (defaults for the rest), or DeploymentValidationError where ARM refuses them."""
    parameters = {name: p.get("default") for name, p in parsed["parameters"].items()}
    for name, value in values.items():
        for decorator in parsed["parameters"][name]["decorators"]:
            kind, bound_ = decorator["type"], decorator.get("argument")
            if (kind == "min_value" and value < bound_) or (kind == "max_value" and value > bound_):
                raise DeploymentValidationError(f"{name}: {value} is outside its {kind}")
            if kind == "allowed" and value not in bound_:
                raise DeploymentValidationError(f"{name}: {value} is not allowed")
        parameters[name] = value

    def lookup(name: str) -> Any:
        if name in parameters:
            return parameters[name]
        if name in parsed["variables"]:
            return evaluate(parsed["variables"][name]["value"], lookup)
        return None

    return evaluate(parsed["variables"][variable]["value"], lookup)


def test_total_retention_takes_only_what_the_tables_api_accepts(pycep_parser: Any) -> None:
    main = pycep_parser.parse(text=(INFRA / "main.bicep").read_text("utf-8"))
    monitoring = pycep_parser.parse(
        text=(INFRA / "modules" / "monitoring.bicep").read_text("utf-8")
    )
    # main.bicep refuses, before anything is deployed, every value the API would refuse, and
    # passes the checked value on; the module checks its own parameter the same way.
    params = main["modules"]["monitoring"]["config"]["params"]
    assert params["totalRetentionInDays"] == "logAnalyticsTotalRetentionDaysChecked"
    for parsed, parameter, checked in (
        (main, "logAnalyticsTotalRetentionDays", "logAnalyticsTotalRetentionDaysChecked"),
        (monitoring, "totalRetentionInDays", "totalRetentionInDaysChecked"),
    ):
        accepted = set()
        for days in range(0, 4400):
            try:
                value = validated(parsed, checked, **{parameter: days})
            except DeploymentValidationError:
                continue
            assert value == days
            accepted.add(days)
        assert accepted == TOTAL_RETENTION_ACCEPTED, parameter
        default = parsed["parameters"][parameter]["default"]
        assert default == 365 and default in accepted
        # The refusal names what is accepted past two years.
        with pytest.raises(DeploymentValidationError, match=r"1095, 1460, .*, 4383"):
            validated(parsed, checked, **{parameter: 1000})
    # What the table gets: an accepted value, never below its interactive retention (raised to
    # it), for both plans; a Basic table's interactive retention is the fixed 30 (not sent).
    table = monitoring["resources"]["table"]["config"]["properties"]
    assert table["totalRetentionInDays"] == "tableTotalRetentionInDays"
    for plan in TABLE_PLANS:
        for interactive in (30, 90, 400, 730):
            for days in sorted(TOTAL_RETENTION_ACCEPTED):
                total = validated(
                    monitoring,
                    "tableTotalRetentionInDays",
                    tablePlan=plan,
                    retentionInDays=interactive,
                    totalRetentionInDays=days,
                )
                assert total in TABLES_API_TOTAL_RETENTION
                assert total == max(days, interactive if plan == "Analytics" else 30)
    # The table's API version is the one the Learn page's Bicep example uses (the 2022-10-01
    # reference described totalRetentionInDays as "between 4 and 2555").
    source = lex(INFRA / "modules" / "monitoring.bicep")
    ((_, table_type, _, _),) = resources(source, "Microsoft.OperationalInsights/workspaces/tables")
    assert table_type.split("@")[1] >= "2025-07-01"
    # Cited and documented; why not fail(): checkov's parser cannot read it.
    years = ", ".join(map(str, TOTAL_RETENTION_YEARS))
    main_text = (INFRA / "main.bicep").read_text("utf-8")
    for text in (main_text, source.text):
        assert DATA_RETENTION_PAGE in text
        assert years.replace(", 4383", ", or 4383") in text.replace("\n// ", " ")
    assert "bicep/bicep-functions-flow-control" in main_text
    assert "templates/template-functions-logical#if" in main_text
    readme = (INFRA / "README.md").read_text("utf-8")
    assert "| `logAnalyticsTotalRetentionDays` | `365` | " in readme
    row = readme.split("| `logAnalyticsTotalRetentionDays` |")[1].split("\n")[0]
    assert f"30 to 730, or one of {years}" in row and "fails the deployment's validation" in row
    for parsed, parameter in (
        (main, "logAnalyticsTotalRetentionDays"),
        (monitoring, "totalRetentionInDays"),
    ):
        (description,) = [
            d["argument"]
            for d in parsed["parameters"][parameter]["decorators"]
            if d["type"] == "description"
        ]
        assert f"30 to 730, or one of {years}" in description, parameter


def test_checkovs_parser_cannot_read_fail() -> None:
    # Why the templates check total retention with a lookup rather than Bicep's fail(): if
    # this starts to pass, the pinned pycep-parser reads fail() and the check can use it.
    pycep = pytest.importorskip("pycep", reason="pycep-parser is not installed")
    with pytest.raises(Exception, match=r"LPAR|Unexpected"):
        pycep.BicepParser().parse(text="param a int = 1\nvar b = a > 0 ? a : fail('no')\n")


# --------------------------------------------------------------------------------------------
# The alert on invalid app settings (infra/modules/alerts.bicep).
# --------------------------------------------------------------------------------------------


def test_settings_invalid_alert_rule(bicep: dict[str, Bicep]) -> None:
    from shared.adapters.telemetry import SETTINGS_INVALID

    alerts = bicep["modules/alerts.bicep"]
    ((_, rule_type, start, end),) = resources(alerts, "Microsoft.Insights/scheduledQueryRules")
    # The current GA version (Learn, "Microsoft.Insights scheduledQueryRules").
    assert rule_type == "Microsoft.Insights/scheduledQueryRules@2023-12-01"
    rule = entries(alerts, start, end)
    assert rule["kind"] == "'LogAlert'"
    properties = entries(
        alerts, *alerts.block_after(alerts.code.index("properties: {", start, end))
    )
    assert properties["severity"] == "1"
    assert properties["evaluationFrequency"] == "'PT5M'"
    assert properties["windowSize"] == "'PT15M'"
    assert properties["enabled"] == "true"
    # Scoped to the workspace-based component, which keeps the classic customMetrics schema.
    scopes_at = alerts.code.index("scopes: [", start, end)
    scopes = alerts.text[slice(*alerts.block_after(scopes_at, "["))]
    assert scopes.split() == ["applicationInsightsId"]
    # The query names the metric, reads the classic columns, and splits by `function`.
    assert parameter_defaults(alerts)["metricName"] == SETTINGS_INVALID
    query = bicep_var(alerts, "settingsInvalidQuery")
    assert query.startswith('customMetrics | where name == "${metricName}"')
    assert 'tostring(customDimensions["function"])' in query
    assert "sum(valueSum) by FunctionName" in query
    criteria = alerts.text[alerts.code.index("allOf: [", start, end) : end]
    assert "metricMeasureColumn: 'Invalid'" in criteria
    assert "timeAggregation: 'Total'" in criteria
    assert "operator: 'GreaterThan'" in criteria
    assert "threshold: 0\n" in criteria
    assert re.search(r"name: 'FunctionName'\s+operator: 'Include'\s+values: \[\s+'\*'", criteria)
    # Main wires it to the component.
    main = bicep["main.bicep"]
    assert "applicationInsightsId: monitoring.outputs.applicationInsightsId" in main.text
    assert "alertEmail: alertEmail" in main.text
    for page in (
        "learn.microsoft.com/azure/templates/microsoft.insights/scheduledqueryrules",
        "learn.microsoft.com/azure/azure-monitor/alerts/alerts-create-log-alert-rule",
        "learn.microsoft.com/azure/azure-monitor/app/convert-classic-resource",
    ):
        assert page in alerts.text, page


def test_settings_invalid_alert_action_group_follows_alert_email(
    bicep: dict[str, Bicep], pycep_parser: Any
) -> None:
    main, alerts = bicep["main.bicep"], bicep["modules/alerts.bicep"]
    assert parameter_defaults(main)["alertEmail"] == ""
    assert parameter_defaults(alerts)["alertEmail"] == ""
    assert "var notify = !empty(alertEmail)" in alerts.text
    parsed = pycep_parser.parse(text=(INFRA / "modules" / "alerts.bicep").read_text("utf-8"))
    group = parsed["resources"]["actionGroup"]
    assert group["type"] == "Microsoft.Insights/actionGroups"
    assert group["config"]["condition"] == "notify"
    (receiver,) = group["config"]["config"]["properties"]["emailReceivers"]
    assert receiver["emailAddress"] == "alertEmail"
    assert len(group["config"]["config"]["properties"]["groupShortName"]) <= 12
    actions = parsed["resources"]["settingsInvalidAlert"]["config"]["properties"]["actions"]
    conditional = actions["actionGroups"]["operator"]
    assert conditional["type"] == "conditional"
    assert conditional["operands"]["condition"] == "notify"
    assert conditional["operands"]["false_value"] == []
    (attached,) = conditional["operands"]["true_value"]
    assert attached["operator"]["operands"] == {"operand_1": "actionGroup", "operand_2": "id"}
    # Settable from azd's environment; documented.
    parameters = json.loads((INFRA / "main.parameters.json").read_text("utf-8"))["parameters"]
    assert parameters["alertEmail"]["value"] == "${ALERT_EMAIL}"
    assert "| `alertEmail` | `''` |" in (INFRA / "README.md").read_text("utf-8")


# --------------------------------------------------------------------------------------------
# Sign-in (infra/README.md, "Sign-in"): App Service authentication with Entra ID in front of the
# app, but for the key-protected API and the blob webhook; the registration made by azd's hooks.
# --------------------------------------------------------------------------------------------

SITE_AUTH = INFRA / "modules" / "site-auth.bicep"
SEARCH_AUTH_HOOK = INFRA / "hooks" / "search_auth.py"
BLOB_WEBHOOK = "/runtime/webhooks/blobs"


def excluded_paths(main: Bicep) -> list[str]:
    match = re.search(r"^var signInExcludedPaths = \[\n(.*?)\n\]$", main.text, re.M | re.S)
    assert match, "main.bicep: no var signInExcludedPaths"
    return re.findall(r"^\s*'([^']*)'$", match.group(1), re.M)


def http_routes() -> dict[str, str]:
    """Every HTTP route the app registers, as the host serves it (`/api/...`), with its auth
    level, read from the decorators of function_app.py and functions/."""
    host = json.loads((ROOT / "host.json").read_text("utf-8"))
    prefix = host.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    routes: dict[str, str] = {}
    for path in [ROOT / "function_app.py", *sorted((ROOT / "functions").glob("*.py"))]:
        calls = re.findall(r"\.route\(((?:[^()]|\([^()]*\))*)\)", path.read_text("utf-8"))
        for call in calls:
            route = re.search(r"route=\"([^\"]+)\"", call)
            level = re.search(r"auth_level=func\.AuthLevel\.(\w+)", call)
            assert route and level, f"{path}: a route without route= or auth_level=: {call}"
            routes[f"/{prefix}/{route.group(1)}".replace("//", "/")] = level.group(1)
    return routes


def test_sign_in_is_app_service_authentication_with_entra_id(
    bicep: dict[str, Bicep], pycep_parser: Any
) -> None:
    parsed = pycep_parser.parse(text=SITE_AUTH.read_text("utf-8"))
    auth = parsed["resources"]["authSettings"]
    assert auth["type"] == "Microsoft.Web/sites/config"
    assert auth["config"]["name"] == "authsettingsV2"
    properties = auth["config"]["properties"]
    assert properties["platform"]["enabled"] is True
    validation = properties["globalValidation"]
    assert validation["requireAuthentication"] is True
    assert validation["unauthenticatedClientAction"] == "RedirectToLoginPage"
    assert validation["excludedPaths"] == "excludedPaths"
    assert properties["httpSettings"]["requireHttps"] is True
    entra = properties["identityProviders"]["azureActiveDirectory"]
    assert entra["enabled"] is True
    registration = entra["registration"]
    assert registration["clientId"] == "clientId"
    # No secret: the app's managed identity, trusted by a federated identity credential.
    assert registration["clientSecretSettingName"] == "clientSecretSettingName"
    assert parameter_defaults(bicep["modules/site-auth.bicep"])["clientSecretSettingName"] == (
        "OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID"
    )
    assert registration["openIdIssuer"].endswith("${tenantId}/v2.0")
    assert "environment().authentication.loginEndpoint" in registration["openIdIssuer"]
    values = infra_app_setting_values(bicep)
    assert values["OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID"] == "identityClientId"
    # main.bicep always deploys it, with a registration it cannot go without.
    main = bicep["main.bicep"]
    module = re.search(
        r"^module siteAuth 'modules/site-auth\.bicep' = \{\n(.*?)\n\}$", main.text, re.M | re.S
    )
    assert module and "if (" not in module.group(0)
    assert "clientId: searchAuthClientId" in module.group(1)
    assert "excludedPaths: signInExcludedPaths" in module.group(1)
    assert "siteName: functionApp.outputs.name" in module.group(1)
    assert "searchAuthClientId" not in parameter_defaults(main)
    assert bound(main, "searchAuthClientId", "minLength") == 36
    # Cited, as the docs say it: Flex Consumption supports it; the V2 settings; the principal.
    for page in (
        "learn.microsoft.com/azure/azure-functions/flex-consumption-plan",
        "learn.microsoft.com/azure/azure-functions/functions-mcp-tutorial",
        "learn.microsoft.com/azure/templates/microsoft.web/sites/config-authsettingsv2",
        "learn.microsoft.com/azure/app-service/configure-authentication-provider-aad",
    ):
        assert page in SITE_AUTH.read_text("utf-8"), page


def test_only_the_key_protected_api_and_the_blob_webhook_skip_sign_in(
    bicep: dict[str, Bicep],
) -> None:
    excluded = excluded_paths(bicep["main.bicep"])
    assert excluded == ["/api/activity", "/api/activity/histogram", BLOB_WEBHOOK]
    routes = http_routes()
    assert routes["/api/activity"] == "FUNCTION"
    # Every route that takes a function key stays reachable with the key alone...
    keyed = {path for path, level in routes.items() if level != "ANONYMOUS"}
    assert keyed <= set(excluded), keyed - set(excluded)
    # ...and nothing the host serves anonymously (the page) skips sign-in.
    for path in excluded:
        assert routes.get(path, "FUNCTION") != "ANONYMOUS", path
        assert "*" not in path and not path.startswith("/api/search"), path
    # The webhook is the one the postdeploy hook subscribes Event Grid to.
    assert f"$url{BLOB_WEBHOOK}?functionName=" in HOOK.read_text("utf-8")


def test_the_page_settings_flow_from_the_parameters(bicep: dict[str, Bicep]) -> None:
    main, app = bicep["main.bicep"], bicep["modules/function-app.bicep"]
    assert "pageAllowedGroup: searchAllowedGroupId" in main.text
    # `none` (azd gives the default for an empty value): no role, in the hook and here alike.
    assert (
        "pageAllowedRole: toLower(searchAllowedRole) == 'none' ? '' : searchAllowedRole"
        in main.text
    )
    values = infra_app_setting_values(bicep)
    assert values[settings.PAGE_ACCESS] == "signed-in"
    assert values[settings.PAGE_ALLOWED_GROUP] == "pageAllowedGroup"
    assert values[settings.PAGE_ALLOWED_ROLE] == "pageAllowedRole"
    assert parameter_defaults(app)["pageAllowedRole"] == ""
    defaults = parameter_defaults(main)
    assert defaults["searchAllowedGroupId"] == ""
    hook = load_search_auth_hook()
    assert defaults["searchAllowedRole"] == hook.DEFAULT_ROLE
    parameters = json.loads((INFRA / "main.parameters.json").read_text("utf-8"))["parameters"]
    assert parameters["searchAuthClientId"]["value"] == "${SEARCH_AUTH_CLIENT_ID}"
    assert parameters["searchAllowedGroupId"]["value"] == "${SEARCH_ALLOWED_GROUP_ID}"
    assert (
        parameters["searchAllowedRole"]["value"] == f"${{SEARCH_ALLOWED_ROLE={hook.DEFAULT_ROLE}}}"
    )
    # As deployed, the app reads them back: signed in, restricted to the role (and a group).
    group = "0f2c6a8e-3b1d-4c5e-9a7f-112233445566"
    env = {
        settings.PAGE_ACCESS: values[settings.PAGE_ACCESS],
        settings.PAGE_ALLOWED_GROUP: group,
        settings.PAGE_ALLOWED_ROLE: hook.DEFAULT_ROLE,
        "WEBSITE_SITE_NAME": "func-activitylog-x",
        "WEBSITE_AUTH_ENABLED": "True",
    }
    access = load_settings(env).page_access
    assert (access.mode, access.allowed_group, access.allowed_role) == (
        "signed-in",
        group,
        hook.DEFAULT_ROLE,
    )
    # The hook refuses what the app would refuse.
    from shared.core import access as page_access

    assert hook.NO_ROLE == "none"
    assert hook.wanted({"SEARCH_ALLOWED_ROLE": "None"}, "e").role == ""
    assert hook.wanted({"SEARCH_ALLOWED_ROLE": ""}, "e").role == hook.DEFAULT_ROLE
    assert hook.GROUP_ID.pattern == page_access._GROUP_ID.pattern
    assert hook.ROLE_VALUE.pattern == page_access._ROLE_VALUE.pattern
    outputs = {name for name in re.findall(r"^output (\w+) ", main.text, re.M)}
    assert set(hook.OUTPUTS) <= outputs


def test_azure_yaml_runs_the_sign_in_hooks() -> None:
    text = (ROOT / "azure.yaml").read_text("utf-8")
    for step in ("preprovision", "postprovision"):
        assert re.search(
            rf"  {step}:\n    posix:\n      shell: sh\n"
            rf"      run: python3 infra/hooks/search_auth\.py {step}\n"
            r"      interactive: false\n      continueOnError: false\n"
            r"    windows:\n      shell: pwsh\n"
            rf"      run: python infra/hooks/search_auth\.py {step}\n",
            text,
        ), step


# The stand-in `az`: a Python script keeping Entra ID's state in a JSON file, logging each call.
FAKE_AZ = r"""
import json, os, sys, uuid
argv = sys.argv[1:]
state_path = os.environ["FAKE_STATE"]
state = json.load(open(state_path))
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(argv) + "\n")
def opt(name, default=None):
    return argv[argv.index(name) + 1] if name in argv else default
def opts(name):
    i = argv.index(name) + 1
    out = []
    while i < len(argv) and not argv[i].startswith("--"):
        out.append(argv[i]); i += 1
    return out
def done(value=None, tsv=False):
    json.dump(state, open(state_path, "w"))
    if value is not None:
        print(value if tsv else json.dumps(value))
    sys.exit(0)
def fail(message, code=1):
    sys.stderr.write("ERROR: " + message + "\n"); sys.exit(code)
words = " ".join(a for a in argv[:4] if not a.startswith("-"))
fails = os.environ.get("FAKE_FAIL", "")
if words.startswith("account show"):
    if opt("--query") == "id":
        done(state["cli_subscription"], tsv=True)
    sub = opt("--subscription")
    done(state["tenants"].get(sub, state["cli_tenant"]) if sub else state["cli_tenant"], tsv=True)
if words.startswith("deployment sub show"):
    done({k: {"type": "String", "value": v} for k, v in state["outputs"].items()})
apps = state["apps"]
def app(key):
    for a in apps:
        if key in (a["appId"], a["id"]):
            return a
    fail("Resource '%s' does not exist or one of its queried reference-property objects"
         " are not present." % key, 3)
def shown(a):
    return {"appId": a["appId"], "id": a["id"], "appRoles": a["appRoles"]}
if words.startswith("ad app show"):
    a = app(opt("--id"))
    done(a["redirects"] if opt("--query") == "web.redirectUris" else shown(a))
if words.startswith("ad app list"):
    done([shown(a) for a in apps if a["displayName"] == opt("--display-name")])
if words.startswith("ad app create"):
    if fails == "create":
        fail("Insufficient privileges to complete the operation.")
    a = {"appId": str(uuid.uuid4()), "id": str(uuid.uuid4()), "displayName": opt("--display-name"),
         "appRoles": [], "redirects": [], "claims": None, "fics": [],
         "audience": opt("--sign-in-audience"), "idTokens": opt("--enable-id-token-issuance")}
    apps.append(a); done(shown(a))
if words.startswith("ad app update"):
    a = app(opt("--id"))
    if "--app-roles" in argv: a["appRoles"] = json.loads(opt("--app-roles"))
    if "--web-redirect-uris" in argv: a["redirects"] = opts("--web-redirect-uris")
    if "--set" in argv: a["claims"] = opt("--set").split("=", 1)[1]
    done()
if words.startswith("ad app federated-credential"):
    a = app(opt("--id"))
    if "list" in argv: done(a["fics"])
    fic = json.loads(opt("--parameters"))
    a["fics"] = [f for f in a["fics"] if f["name"] != fic["name"]] + [fic]; done(fic)
sps = state["sps"]
if words.startswith("ad sp list"):
    app_id = opt("--filter").split("'")[1]
    done("\n".join(s["id"] for s in sps if s["appId"] == app_id), tsv=True)
if words.startswith("ad sp create"):
    s = {"id": str(uuid.uuid4()), "appId": opt("--id"), "required": None, "assigned": []}
    sps.append(s); done(s["id"], tsv=True)
if words.startswith("ad sp update"):
    s = [s for s in sps if s["id"] == opt("--id")][0]
    s["required"] = opt("--set").split("=", 1)[1]; done()
if words.startswith("ad signed-in-user show"):
    if fails == "user": fail("/me request is only valid with delegated authentication flow.")
    done(state["user"], tsv=True)
if words.startswith("rest"):
    sp_id = opt("--url").split("/servicePrincipals/")[1].split("/")[0]
    s = [s for s in sps if s["id"] == sp_id][0]
    if opt("--method") == "get":
        done(str(len(s["assigned"])), tsv=True)
    if fails == "assign-always":
        fail("Insufficient privileges to complete the operation.")
    if fails == "assign" and not state.setdefault("assign_failed", False):
        state["assign_failed"] = True; json.dump(state, open(state_path, "w"))
        fail("Permission being assigned was not found on application")
    s["assigned"].append(json.loads(opt("--body"))); done({})
fail("unexpected az call: " + " ".join(argv), 2)
"""
FAKE_AZD = """
import json, os, sys
with open(os.environ["FAKE_AZD_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
"""
TENANT = "00000000-0000-0000-0000-0000000000e1"
OTHER_TENANT = "00000000-0000-0000-0000-0000000000e2"
DEPLOYER = "00000000-0000-0000-0000-0000000000a1"


def load_search_auth_hook() -> Any:
    spec = importlib.util.spec_from_file_location("search_auth", SEARCH_AUTH_HOOK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@dataclass
class FakeEntra:
    """The stand-in az (and azd) on PATH, with the state they keep and the calls they got."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch

    def __post_init__(self) -> None:
        bin_dir = self.tmp / "bin"
        bin_dir.mkdir()
        for name, body in (
            ("az", FAKE_AZ),
            (
                "azd",
                FAKE_AZD,
            ),
        ):
            path = bin_dir / name
            path.write_text(f"#!{sys.executable}\n{body}", "utf-8")
            path.chmod(path.stat().st_mode | stat.S_IXUSR)
        self.state_path, self.log, self.azd_log = (
            self.tmp / "state.json",
            self.tmp / "az.log",
            self.tmp / "azd.log",
        )
        self.save(
            {
                "cli_subscription": CLI_SUBSCRIPTION,
                "cli_tenant": TENANT,
                "tenants": {AZD_SUBSCRIPTION: TENANT, CLI_SUBSCRIPTION: TENANT},
                "apps": [],
                "sps": [],
                "user": DEPLOYER,
                "outputs": {},
            }
        )
        for name in list(os.environ):
            if name.startswith(("AZURE_", "SEARCH_")):
                self.monkeypatch.delenv(name)
        for name, value in {
            "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
            "FAKE_STATE": str(self.state_path),
            "FAKE_LOG": str(self.log),
            "FAKE_AZD_LOG": str(self.azd_log),
            "SEARCH_AUTH_RETRY_SECONDS": "0",
        }.items():
            self.monkeypatch.setenv(name, value)

    def save(self, state: dict[str, Any]) -> None:
        self.state_path.write_text(json.dumps(state), "utf-8")

    def state(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.state_path.read_text("utf-8"))
        return loaded

    def calls(self) -> list[list[str]]:
        lines = self.log.read_text("utf-8").splitlines() if self.log.exists() else []
        return [json.loads(line) for line in lines]

    def run(self, *argv: str, **env: str) -> tuple[int, str, str]:
        for name, value in env.items():
            self.monkeypatch.setenv(name, value)
        hook = load_search_auth_hook()
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = hook.main(list(argv))
        return status, out.getvalue(), err.getvalue()


@pytest.fixture
def entra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeEntra:
    return FakeEntra(tmp_path, monkeypatch)


def azd_env(**extra: str) -> dict[str, str]:
    return {"AZURE_ENV_NAME": "prod", "AZURE_SUBSCRIPTION_ID": AZD_SUBSCRIPTION, **extra}


def test_preprovision_creates_the_registration_in_azds_subscription(entra: FakeEntra) -> None:
    status, out, err = entra.run("preprovision", **azd_env())
    assert status == 0, err
    (app,) = entra.state()["apps"]
    assert app["displayName"] == "activitylog-search-prod"
    assert (app["audience"], app["idTokens"]) == ("AzureADMyOrg", "true")
    (role,) = app["appRoles"]
    assert (role["value"], role["allowedMemberTypes"], role["isEnabled"]) == (
        "ActivityLog.Reader",
        ["User"],
        True,
    )
    (sp,) = entra.state()["sps"]
    assert sp["required"] == "true"  # only users given the role can sign in at all
    assert sp["assigned"] == [
        {"principalId": DEPLOYER, "resourceId": sp["id"], "appRoleId": role["id"]}
    ]
    assert app["claims"] is None  # no group named: no group claims
    # The id goes to azd's environment (searchAuthClientId), and to stdout for anyone else.
    (azd_call,) = [json.loads(line) for line in entra.azd_log.read_text("utf-8").splitlines()]
    assert azd_call == [
        "env",
        "set",
        "SEARCH_AUTH_CLIENT_ID",
        app["appId"],
        "--environment",
        "prod",
    ]
    assert out.strip() == f"SEARCH_AUTH_CLIENT_ID={app['appId']}"
    # The one Resource Manager call names azd's subscription (its tenant); the other asks az
    # which tenant it is signed in to, where `az ad` and Graph calls (tenant-level) then run.
    calls = entra.calls()
    tenant = ["account", "show", "--query", "tenantId", "--output", "tsv"]
    assert [c for c in calls if c[0] not in ("ad", "rest")] == [
        [*tenant, "--subscription", AZD_SUBSCRIPTION],
        tenant,
    ]
    assert not any("--subscription" in c for c in calls if c[0] in ("ad", "rest"))
    # Run again: the same registration, nothing added twice.
    status, _, err = entra.run("preprovision", **azd_env())
    assert status == 0, err
    assert len(entra.state()["apps"]) == 1
    assert len(entra.state()["apps"][0]["appRoles"]) == 1
    assert len(entra.state()["sps"][0]["assigned"]) == 1


def test_preprovision_with_a_group_and_an_existing_registration(entra: FakeEntra) -> None:
    status, _, err = entra.run("preprovision", **azd_env())
    app_id = entra.state()["apps"][0]["appId"]
    group = "0F2C6A8E-3B1D-4C5E-9A7F-112233445566"
    status, _, err = entra.run(
        "preprovision",
        **azd_env(
            SEARCH_AUTH_CLIENT_ID=app_id, SEARCH_ALLOWED_GROUP_ID=group, SEARCH_ALLOWED_ROLE="none"
        ),
    )
    assert status == 0, err
    assert f"using app registration {app_id} (SEARCH_AUTH_CLIENT_ID)" in err
    assert entra.state()["apps"][0]["claims"] == "SecurityGroup"
    assert entra.state()["sps"][0]["required"] == "false"  # a group alone: anyone may sign in


def test_preprovision_stops_in_another_tenant(entra: FakeEntra) -> None:
    state = entra.state()
    state["tenants"][AZD_SUBSCRIPTION] = OTHER_TENANT
    entra.save(state)
    status, _, err = entra.run("preprovision", **azd_env())
    assert status == 1
    assert f"az account set --subscription {AZD_SUBSCRIPTION}" in err
    assert not any(c[0] == "ad" for c in entra.calls())


def test_preprovision_shows_why_az_failed(entra: FakeEntra) -> None:
    status, _, err = entra.run("preprovision", **azd_env(FAKE_FAIL="create"))
    assert status == 1
    assert "ERROR: Insufficient privileges to complete the operation." in err
    assert "az ad app create failed (az's error above)" in err
    assert "Application Developer" in err
    status, _, err = entra.run("preprovision", **azd_env(SEARCH_ALLOWED_ROLE="Activity Log Reader"))
    assert status == 1 and "SEARCH_ALLOWED_ROLE" in err


def test_preprovision_retries_the_role_assignment_and_skips_it_for_a_service_principal(
    entra: FakeEntra,
) -> None:
    status, _, err = entra.run("preprovision", **azd_env(FAKE_FAIL="assign"))
    assert status == 0, err
    assert "Permission being assigned was not found on application" in err
    assert len(entra.state()["sps"][0]["assigned"]) == 1
    other = azd_env(AZURE_ENV_NAME="ci", FAKE_FAIL="user")
    status, _, err = entra.run("preprovision", **other)
    assert status == 0, err
    assert "/me request is only valid with delegated authentication flow." in err
    assert "assign the app role yourself" in err
    # Never assignable (not an owner of the service principal): said, and the deployment goes on.
    status, out, err = entra.run(
        "preprovision",
        **azd_env(AZURE_ENV_NAME="qa", FAKE_FAIL="assign-always", SEARCH_AUTH_ATTEMPTS="2"),
    )
    assert status == 0, err
    assert err.count("ERROR: Insufficient privileges to complete the operation.") == 2
    assert "you are not assigned the app role (errors above)" in err
    assert out.startswith("SEARCH_AUTH_CLIENT_ID=")


def test_postprovision_sets_the_redirect_and_the_federated_credential(entra: FakeEntra) -> None:
    entra.run("preprovision", **azd_env())
    app_id = entra.state()["apps"][0]["appId"]
    outputs = {
        "SEARCH_AUTH_CLIENT_ID": app_id,
        "SEARCH_AUTH_REDIRECT_URI": "https://func-x.azurewebsites.net/.auth/login/aad/callback",
        "SEARCH_AUTH_ISSUER": f"https://login.microsoftonline.com/{TENANT}/v2.0",
        "APP_IDENTITY_PRINCIPAL_ID": "00000000-0000-0000-0000-0000000000b7",
        "SEARCH_PAGE_URL": "https://func-x.azurewebsites.net/api/search",
    }
    status, _, err = entra.run("postprovision", **azd_env(**outputs))
    assert status == 0, err
    (app,) = entra.state()["apps"]
    assert app["redirects"] == [outputs["SEARCH_AUTH_REDIRECT_URI"]]
    (fic,) = app["fics"]
    assert fic["name"] == "app-service-authentication"
    assert (fic["issuer"], fic["subject"]) == (
        outputs["SEARCH_AUTH_ISSUER"],
        outputs["APP_IDENTITY_PRINCIPAL_ID"],
    )
    assert fic["audiences"] == ["api://AzureADTokenExchange"]
    assert outputs["SEARCH_PAGE_URL"] in err
    # Without azd: the outputs of the named deployment, read in the named subscription.
    state = entra.state()
    state["outputs"] = {
        **outputs,
        "APP_IDENTITY_PRINCIPAL_ID": "00000000-0000-0000-0000-0000000000b8",
    }
    entra.save(state)
    for name in outputs:
        entra.monkeypatch.delenv(name)
    status, _, err = entra.run(
        "postprovision", "--deployment", "activitylog-prod", AZURE_SUBSCRIPTION_ID=AZD_SUBSCRIPTION
    )
    assert status == 0, err
    show = [c for c in entra.calls() if c[:3] == ["deployment", "sub", "show"]]
    assert show and all(c[-2:] == ["--subscription", AZD_SUBSCRIPTION] for c in show)
    (fic,) = entra.state()["apps"][0]["fics"]
    assert fic["subject"] == "00000000-0000-0000-0000-0000000000b8"  # updated, not added


def test_postprovision_needs_the_outputs(entra: FakeEntra) -> None:
    status, _, err = entra.run("postprovision", **azd_env())
    assert status == 1
    assert "SEARCH_AUTH_CLIENT_ID" in err and "provision first" in err
