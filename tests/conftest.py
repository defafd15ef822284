"""Shared fixtures: one Azurite for the session, a fresh store (own tables/containers) per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

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
