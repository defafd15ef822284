"""What ships is the app alone: the files `func azure functionapp publish` would upload.

The upload is every file of the project (what git tracks, and what it does not ignore) that
`.funcignore` leaves in; its patterns have gitignore's meaning (`pathspec.GitIgnoreSpec`, the
matcher mypy itself uses). The shipped Python is then read as source (AST), never imported: what
it imports, how big its modules and functions are, whether its imports form a cycle, and whether
shared/core stays pure.
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pathspec
import pytest

from shared.tools.azurite import DEV_ACCOUNT, DEV_KEY

ROOT = Path(__file__).resolve().parents[1]
RUFF = Path(sysconfig.get_path("scripts")) / "ruff"  # the pinned ruff of this environment
FIRST_PARTY = ("shared", "functions", "function_app")
# Local tooling only: a shipped module importing one of these drags the CLI into the app.
TOOLING_ONLY = frozenset({"argparse", "subprocess", "tqdm"})
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
CORE = "shared.core"
# What shared/core may not import: the Azure SDK, and the rooms that wrap it or use it.
NOT_FOR_CORE = ("azure", "shared.adapters", "shared.services", "shared.bootstrap", "shared.tools")


@dataclass(frozen=True)
class Module:
    path: str  # relative to the project, with forward slashes
    name: str  # dotted
    tree: ast.Module
    lines: int

    @property
    def is_package(self) -> bool:
        return self.path.endswith("__init__.py")


def _listed() -> list[str]:
    """What git tracks, and what it does not ignore, that exists now."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    # A tracked file another change has just deleted is not uploaded.
    return sorted(p for p in set(listed.split("\0")) if p and (ROOT / p).is_file())


@functools.cache
def shipped_files() -> tuple[str, ...]:
    """The project's files that .funcignore leaves in the upload."""
    ignored = pathspec.GitIgnoreSpec.from_lines(
        (ROOT / ".funcignore").read_text("utf-8").splitlines()
    )
    return tuple(path for path in _listed() if not ignored.match_file(path))


def _module_name(path: str) -> str:
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


@functools.cache
def project_modules() -> frozenset[str]:
    """Every Python module of the project, shipped or not, by dotted name."""
    return frozenset(_module_name(path) for path in _listed() if path.endswith(".py"))


@functools.cache
def shipped_modules() -> dict[str, Module]:
    """Every shipped Python module, by dotted name."""
    modules = {}
    for path in shipped_files():
        if path.endswith(".py"):
            text = (ROOT / path).read_text("utf-8")
            tree = ast.parse(text, filename=path)
            modules[_module_name(path)] = Module(
                path, _module_name(path), tree, len(text.splitlines())
            )
    return modules


@dataclass(frozen=True)
class Import:
    module: str  # what the statement imports: a module (`from m import n`: m.n when a module)
    line: int


def imports_of(module: Module) -> Iterator[Import]:
    """Every import in the module, wherever it is (in functions, under TYPE_CHECKING too)."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield Import(submodule if submodule in project_modules() else base, node.lineno)


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.name.split(".")
    package = package if module.is_package else package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _under(name: str, prefixes: tuple[str, ...] | frozenset[str]) -> bool:
    return any(name == prefix or name.startswith(f"{prefix}.") for prefix in prefixes)


def _listing(findings: list[str]) -> str:
    return "\n  " + "\n  ".join(findings)


# --- (a) the upload ---------------------------------------------------------------------------


def test_the_upload_is_the_app_and_nothing_of_the_tooling() -> None:
    files = shipped_files()
    assert {"host.json", "function_app.py", "requirements.txt"} <= set(files)
    trigger_modules = {p for p in _listed() if p.startswith("functions/") and p.endswith(".py")}
    assert trigger_modules and trigger_modules <= set(files)
    assert "shared/core/__init__.py" in files
    assert any(p.startswith("shared/core/") and not p.endswith("__init__.py") for p in files)
    never = ("shared/tools/", "tests/", "bench/", "infra/", "scripts/", ".venv")
    leaked = [p for p in files if p.startswith(never)]
    leaked += [
        p
        for p in files
        if p in ("shared/__main__.py", "requirements-dev.txt", "local.settings.json")
    ]
    assert not leaked, f"shipped but tooling:{_listing(leaked)}"


def test_the_shipped_app_imports_only_what_ships() -> None:
    # A first-party module the upload leaves out (shared.tools, shared.__main__) would be an
    # ImportError in Azure only.
    modules = shipped_modules()
    missing = [
        f"{module.path}:{found.line} imports {found.module}"
        for module in modules.values()
        for found in imports_of(module)
        if _under(found.module, FIRST_PARTY) and found.module not in modules
    ]
    assert not missing, f"imports of modules that do not ship:{_listing(sorted(set(missing)))}"


def test_what_only_the_tooling_needs_is_not_a_runtime_requirement() -> None:
    def pins(name: str) -> set[str]:
        lines = (ROOT / name).read_text("utf-8").splitlines()
        return {
            line.split("==")[0].strip().lower()
            for line in lines
            if line.strip() and not line.startswith(("#", "-r"))
        }

    assert not pins("requirements.txt") & pins("requirements-dev.txt")
    assert "tqdm" in pins("requirements-dev.txt") and "tqdm" not in pins("requirements.txt")


# --- (b) no tooling imports -------------------------------------------------------------------


def test_no_shipped_module_imports_the_tooling_libraries() -> None:
    found = [
        f"{module.path}:{imported.line} imports {imported.module}"
        for module in shipped_modules().values()
        for imported in imports_of(module)
        if imported.module.split(".")[0] in TOOLING_ONLY
    ]
    assert not found, f"tooling libraries imported by shipped code:{_listing(sorted(set(found)))}"


# --- (c) no emulator credentials --------------------------------------------------------------


@pytest.mark.parametrize("secret", [DEV_KEY, DEV_ACCOUNT], ids=["account key", "account name"])
def test_no_shipped_file_holds_azurites_account(secret: str) -> None:
    holding = [path for path in shipped_files() if secret.encode() in (ROOT / path).read_bytes()]
    assert not holding, f"Azurite's {secret[:12]}... shipped in:{_listing(holding)}"


# --- (d) sizes --------------------------------------------------------------------------------


def _functions(
    tree: ast.AST, prefix: str = ""
) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                yield name, node
            yield from _functions(node, f"{name}.")
        else:
            yield from _functions(node, prefix)


def test_no_shipped_module_or_function_is_too_long() -> None:
    modules = sorted(shipped_modules().values(), key=lambda m: m.path)
    long_modules = [f"{m.path}: {m.lines} lines" for m in modules if m.lines > MAX_MODULE_LINES]
    long_functions = [
        f"{m.path}:{node.lineno} {name}: {length} lines"
        for m in modules
        for name, node in _functions(m.tree)
        if (length := (node.end_lineno or node.lineno) - node.lineno + 1) > MAX_FUNCTION_LINES
    ]
    assert not long_modules and not long_functions, (
        f"modules over {MAX_MODULE_LINES} lines:{_listing(long_modules or ['none'])}\n"
        f"functions over {MAX_FUNCTION_LINES} lines:{_listing(long_functions or ['none'])}"
    )


# --- (e) no import cycles ---------------------------------------------------------------------


def import_graph() -> dict[str, set[str]]:
    """Shipped first-party module -> the shipped first-party modules it imports (anywhere)."""
    modules = shipped_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for module in modules.values():
        for imported in imports_of(module):
            if imported.module in modules and imported.module != module.name:
                graph[module.name].add(imported.module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected component that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_one_cycle(graph, component) for component in sorted(components)]


def _one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle from the component's first member back to it (breadth first)."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & members):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    return component  # unreachable: a component has a cycle through every member


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_shipped_modules_import_no_cycle() -> None:
    found = [" -> ".join(cycle) for cycle in cycles(import_graph())]
    assert not found, f"import cycles among shipped modules:{_listing(found)}"


# --- (f) shared/core is pure ------------------------------------------------------------------


def test_shared_core_imports_no_azure_sdk_and_no_outer_room() -> None:
    core = [m for name, m in shipped_modules().items() if _under(name, (CORE,))]
    assert core
    found = [
        f"{module.path}:{imported.line} imports {imported.module}"
        for module in core
        for imported in imports_of(module)
        if _under(imported.module, NOT_FOR_CORE)
    ]
    assert not found, f"shared/core is not pure:{_listing(sorted(set(found)))}"


@pytest.mark.parametrize(
    ("path", "banned"), [("shared/core/probe.py", True), ("shared/adapters/probe.py", False)]
)
def test_ruff_bans_the_azure_sdk_in_shared_core_only(path: str, banned: bool) -> None:
    checked = subprocess.run(
        [RUFF, "check", "--select", "TID251", "--stdin-filename", path, "-"],
        cwd=ROOT,
        input="from azure.storage.blob import BlobClient\n\nCLIENT = BlobClient\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert ("TID251" in checked.stdout) is banned, checked.stdout + checked.stderr
    assert checked.returncode == (1 if banned else 0)


def test_every_relative_link_in_the_docs_leads_to_a_file_of_the_repository() -> None:
    # Found from outside: the README linked the record contract beside the checkout, which
    # a clone does not have.
    root = Path(__file__).resolve().parents[1]
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    broken = []
    for doc in [root / "README.md", *root.glob("infra/**/*.md"), *root.glob("docs/**/*.md")]:
        for target in link.findall(doc.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            resolved = (doc.parent / target).resolve()
            if not resolved.is_relative_to(root) or not resolved.exists():
                broken.append(f"{doc.relative_to(root)}: {target}")
    assert broken == []


HANDBOOK_SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "normalized-record.md"


@pytest.mark.skipif(not HANDBOOK_SPEC.exists(), reason=f"no team handbook at {HANDBOOK_SPEC}")
def test_the_repositorys_copy_of_the_record_contract_is_the_handbooks() -> None:
    copy = Path(__file__).resolve().parents[1] / "docs" / "spec" / "normalized-record.md"
    assert copy.read_bytes() == HANDBOOK_SPEC.read_bytes()
