"""Shared fixtures (one Azurite for the session, a fresh store per test) and the test tiers.

Every test gets exactly one tier marker, cheapest first (`pytest -m unit`, `-m integration`,
`-m e2e`, or `-m "not e2e"`):

- `e2e`: the test drives the app from outside, as it runs: it calls a function that
  function_app registered (`shared.tools.local_host.registered`), runs the CLI in process
  (`shared.tools.cli`) or the local pipeline (`shared.tools.pipeline`), or starts a Python
  child process (`subprocess` with `sys.executable`: `python -m shared ...`, the app's cold
  start, a worker killed mid-run).
- `integration`: otherwise, the test needs storage: it uses the `azurite` fixture, directly or
  through `settings`, `app` or `archive_app` (any fixture that requests it), or starts an
  emulator of its own (`shared.tools.azurite.Azurite`, `local_storage`).
- `unit`: everything else. No Azurite, no child Python, no function invocation: seconds for
  all of them. (Reading the registered functions' bindings, `indexed_functions`, is unit.)

The tier is read from the code, per test: the test function, the fixtures it requests that
are defined under tests/, and every function or class of tests/ they name, followed
transitively (module-level globals, imports inside functions, `module.attribute` loads). A
test marked with a tier by hand keeps that tier.
"""

from __future__ import annotations

import dis
import itertools
import os
import types
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.bootstrap import Runtime, build_runtime
from shared.settings import STORAGE_CONNECTION, STORE_PREFIX, Settings, load_settings
from shared.tools.azurite import Azurite

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"

# Tests drive the real handlers: a developer's shell must not make them send telemetry.
os.environ.pop("APPLICATIONINSIGHTS_CONNECTION_STRING", None)
_store_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """Azurite on free loopback ports, started for the tests that need storage, then stopped."""
    emulator = Azurite().start()
    try:
        yield emulator
    finally:
        emulator.close()


@pytest.fixture
def settings(azurite: Azurite) -> Settings:
    """Settings pointing at Azurite with a store prefix of this test's own."""
    prefix = f"t{os.getpid()}n{next(_store_numbers)}"
    return load_settings({STORAGE_CONNECTION: azurite.connection_string, STORE_PREFIX: prefix})


@pytest.fixture
def app(settings: Settings) -> Runtime:
    """The app's runtime (stores, index writer and reader, dead letters) on Azurite."""
    return build_runtime(settings)


@pytest.fixture
def archive_app(settings: Settings, app: Runtime) -> Runtime:
    """The runtime with an archive container of this test's own, created empty."""
    container = app.stores.blob_service.get_container_client(f"{settings.store_prefix}-archive")
    container.create_container()
    object.__setattr__(app.stores, "archive", container)
    return app


# --- tiers ------------------------------------------------------------------------------------

TIERS = ("unit", "integration", "e2e")  # cheapest first
# What the code reaches that makes a test e2e, or integration: qualified names (a module covers
# everything in it).
E2E_REACHES = (
    "shared.tools.local_host.registered",
    "shared.tools.cli",
    "shared.tools.pipeline",
)
PYTHON_CHILD = ("subprocess", "sys.executable")  # both: a child Python process
INTEGRATION_REACHES = ("shared.tools.azurite.Azurite", "shared.tools.azurite.local_storage")
INTEGRATION_FIXTURES = {"azurite"}  # settings, app and archive_app request it
_STORES = {"STORE_FAST", "STORE_NAME", "STORE_GLOBAL", "STORE_DEREF"}
_LOCALS = {"LOAD_FAST", "LOAD_DEREF", "LOAD_FAST_CHECK", "LOAD_FAST_AND_CLEAR"}
_GLOBALS = {"LOAD_GLOBAL", "LOAD_NAME"}
_ATTRIBUTES = {"LOAD_ATTR", "LOAD_METHOD"}


def _qualified(value: object) -> str | None:
    if isinstance(value, types.ModuleType):
        return value.__name__
    module, name = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    return f"{module}.{name}" if isinstance(module, str) and isinstance(name, str) else None


def _of_tests(value: object) -> bool:
    module = getattr(value, "__module__", None)
    return isinstance(module, str) and (module == "conftest" or module.startswith("tests"))


def _code_of(value: object) -> Iterator[tuple[types.CodeType, dict[str, Any]]]:
    """The code objects of a function or of a class's methods, with their module's globals."""
    inner = getattr(getattr(value, "hypothesis", None), "inner_test", None)  # under @given
    value = getattr(inner or value, "__func__", inner or value)
    if isinstance(value, types.FunctionType):
        yield value.__code__, value.__globals__
    elif isinstance(value, type):
        for member in vars(value).values():
            yield from _code_of(member)


def _names_in(
    code: types.CodeType, scope: dict[str, Any], follow: Callable[[object], None]
) -> Iterator[str]:
    """Qualified names one code object reaches (nested code too); tests' own objects followed."""
    imported: dict[str, str] = {}  # local name -> what an import inside the function bound to it
    module = stored = previous = None  # the last import; what a store binds; the last load
    for instruction in dis.get_instructions(code):
        op, arg = instruction.opname, str(instruction.argval)
        loaded = None
        if op == "IMPORT_NAME":
            module = stored = loaded = arg
        elif op == "IMPORT_FROM":
            stored = loaded = f"{module}.{arg}"
        elif op in _STORES and stored is not None:
            imported[arg], stored = stored, None
        elif op in _GLOBALS:
            value = scope.get(arg)
            if _of_tests(value):
                follow(value)
            loaded = imported.get(arg) or _qualified(value)
        elif op in _LOCALS:
            loaded = imported.get(arg)
        elif op in _ATTRIBUTES and previous is not None:
            loaded = f"{previous}.{arg}"  # sys.executable, cli.main
        if loaded is not None:
            yield loaded
        previous = loaded
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _names_in(constant, scope, follow)


def _reached(roots: Iterable[object]) -> set[str]:
    """Everything the roots' code reaches, following the functions and classes of tests/."""
    queue, seen, names = list(roots), set[int](), set[str]()
    while queue:
        value = queue.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, type):  # a subclass reaches its bases (class DiskAzurite(Azurite))
            names.update(filter(None, map(_qualified, value.__mro__)))
        for code, scope in _code_of(value):
            names.update(_names_in(code, scope, queue.append))
    return names


def _reaches(names: set[str], wanted: Iterable[str]) -> bool:
    return any(n == w or n.startswith(f"{w}.") for n in names for w in wanted)


def tier_of(item: pytest.Function) -> str:
    """The tier the docstring's rule gives this test."""
    definitions = getattr(item, "_fixtureinfo", None)
    fixtures = [
        definition.func
        for defined in (definitions.name2fixturedefs.values() if definitions else ())
        for definition in defined
        if _of_tests(definition.func)
    ]
    names = _reached([item.function, *fixtures])
    if _reaches(names, E2E_REACHES) or all(_reaches(names, [n]) for n in PYTHON_CHILD):
        return "e2e"
    if INTEGRATION_FIXTURES & set(item.fixturenames) or _reaches(names, INTEGRATION_REACHES):
        return "integration"
    return "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and not any(
            item.get_closest_marker(tier) for tier in TIERS
        ):
            item.add_marker(tier_of(item))
