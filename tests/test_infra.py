"""The Bicep in infra/ against the code: it is well formed, sets exactly the app settings the
code reads, names role assignments deterministically, and holds no secret.

No Bicep compiler runs here (it is a .NET tool), so a small lexer below checks what can be
checked honestly without one: strings, comments and brackets are well formed, every top-level
line starts a Bicep statement, every parameter and output is described. When pycep-parser
(checkov's Bicep parser) is installed, every file must also parse with it. infra/check.sh runs
checkov itself, in its own virtualenv.
"""

from __future__ import annotations

import json
import re
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

# Upper-case constants of shared/settings.py that are values, not setting names.
NOT_SETTING_NAMES = {"DEVELOPMENT_STORAGE", "DEFAULT_ARCHIVE_CONTAINER", "CATEGORIES"}

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

# Settings only Azure has, each with why.
AZURE_ONLY = {
    # Read by the Functions host, not by the Python code: Entra ID auth of its telemetry.
    # Locally there is no Application Insights to authenticate to.
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    # Read by the Python worker: nest the app's spans under the host's, no duplicate logs.
    "PYTHON_ENABLE_OPENTELEMETRY",
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
    # The schedules have no code default: the example's values are the documented ones.
    assert defaults["catchupSchedule"] == example["Values"][settings.CATCHUP_SCHEDULE]
    assert defaults["retentionSchedule"] == example["Values"][settings.RETENTION_SCHEDULE]
    assert defaults["deployEventGridSubscription"] is False
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


def test_role_assignments_are_named_from_scope_principal_and_role(
    bicep: dict[str, Bicep],
) -> None:
    found = 0
    for source in bicep.values():
        for symbol, _, start, end in resources(source, "Microsoft.Authorization/roleAssignments"):
            found += 1
            body = entries(source, start, end)
            name = re.fullmatch(r"guid\((\w+)\.id, (\w+), (roles\.\w+)\)", body.get("name", ""))
            assert name, f"{source.path}: {symbol}: name is not guid(scope.id, principal, role)"
            scope, principal, role = name.groups()
            assert body["scope"] == scope, symbol
            assert role in source.text[start:end].split("roleDefinitionId:")[1], symbol
            assert principal == "principalId", symbol
    assert found >= 6


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


def test_event_grid_subscription_waits_for_the_published_app(bicep: dict[str, Bicep]) -> None:
    source = bicep["modules/event-grid.bicep"]
    (subscription,) = resources(source, "Microsoft.EventGrid/systemTopics/eventSubscriptions")
    assert f"resource {subscription[0]} " in source.text
    assert re.search(r"eventSubscriptions@[\d-]+' = if \(deploySubscription\)", source.text)
    blob_function = (ROOT / "functions" / "archive_blob_trigger.py").read_text("utf-8")
    (name,) = re.findall(r'@bp\.function_name\("(\w+)"\)', blob_function)
    assert f"param functionName string = '{name}'" in source.text
    assert "Host.Functions.${functionName}" in source.text


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


def test_only_the_blob_extension_key_is_read(bicep: dict[str, Bicep]) -> None:
    for name, source in bicep.items():
        calls = re.findall(r"(\w+)\.listKeys\(|listKeys\(", source.code)
        if name == "modules/event-grid.bicep":
            assert calls == ["functionHost"]
            assert "listKeys().systemKeys.blobs_extension" in source.text
        else:
            assert not calls, f"{name} reads keys"


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
