"""The SDK clients' HTTP sessions read proxy and CA settings from the environment once, not on
every request, unless the environment holds some (then the SDK's documented behaviour)."""

from __future__ import annotations

import socket
import time
from dataclasses import replace
from typing import Any

import pytest
from azure.core.exceptions import AzureError

from shared.adapters.storage import connect, transport_options
from shared.settings import Settings
from shared.tools.azurite import DEV_ACCOUNT as ACCOUNT
from shared.tools.azurite import DEV_KEY as KEY


@pytest.mark.parametrize(
    "name", ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "NO_PROXY", "all_proxy"]
)
def test_a_proxy_in_the_environment_keeps_the_sdk_looking(name: str) -> None:
    assert transport_options({"PATH": "/bin", name: "http://proxy.example:3128"}) == {}


def test_without_them_the_transport_does_not_look_on_every_request() -> None:
    assert transport_options({"PATH": "/bin", "HOME": "/root"}) == {"use_env_settings": False}


def test_a_ca_bundle_in_the_environment_is_read_once_and_still_verifies_with() -> None:
    environ = {"CURL_CA_BUNDLE": "/b/curl.pem", "REQUESTS_CA_BUNDLE": "/b/requests.pem"}
    assert transport_options(environ) == {
        "use_env_settings": False,
        "connection_verify": "/b/requests.pem",  # requests' precedence
    }
    assert transport_options({"CURL_CA_BUNDLE": "/b/curl.pem"})["connection_verify"] == (
        "/b/curl.pem"
    )


def _sessions_trust_env(settings: Settings) -> tuple[bool, bool]:
    stores = connect(settings)
    stores.ensure()  # requests through both services' transports
    table_transport: Any = stores.table_service._client._client._pipeline._transport
    blob_transport: Any = stores.blob_service._pipeline._transport
    return bool(table_transport.session.trust_env), bool(blob_transport.session.trust_env)


def test_the_real_clients_send_without_looking(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert _sessions_trust_env(settings) == (False, False)


def test_the_real_clients_honour_a_proxy_setting(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert _sessions_trust_env(settings) == (True, True)


# --- a storage endpoint that accepts and never answers ----------------------------------------


@pytest.mark.parametrize("proxy", [False, True])
def test_a_storage_call_that_never_gets_an_answer_fails_after_the_read_timeout(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, proxy: bool
) -> None:
    """Without transport timeouts a hung connection waits 300 s an attempt (azure-core's
    default), and a search page hangs for minutes; with them it fails, and says so."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    if proxy:  # the timeouts hold whichever transport options the environment gives
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr("shared.adapters.storage.STORAGE_READ_TIMEOUT", 1)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        endpoints = (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
        )
        stores = connect(replace(settings, storage_connection=endpoints), retry_total=0)
        for call in (
            lambda: stores.cursors.get_entity("p", "r"),
            lambda: stores.records.download_blob("x").readall(),
        ):
            started = time.monotonic()
            with pytest.raises(AzureError):
                call()
            assert time.monotonic() - started < 10
