"""ArchiveStore.read: one GET through the container client's pipeline, answering as the
downloader did (bytes, a range, None for a missing blob or container, the service's error)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import (
    ContainerClient,
    ContainerSasPermissions,
    LinearRetry,
    generate_container_sas,
)

from shared.adapters.archive_store import ArchiveStore
from shared.core.archive_format import encode_blob
from shared.tools.azurite import DEV_ACCOUNT, DEV_KEY, Azurite
from tests.events import activity_event
from tests.fault_proxy import RESET_MID_RESPONSE, Fault, FaultProxy, Rule

NAME = "class=administrative/y=2025/m=01/d=02/abcdefghijklm.jsonl.gz"


class Requests:
    def __init__(self) -> None:
        self.urls: list[str] = []

    def __call__(self, request: Any) -> None:
        self.urls.append(str(request.http_request.url))


def _container(azurite: Azurite, name: str, hook: Requests) -> ContainerClient:
    return ContainerClient.from_connection_string(
        azurite.connection_string, name, raw_request_hook=hook
    )


def test_a_read_is_one_get_of_the_bytes_or_a_range_and_none_when_missing(
    azurite: Azurite,
) -> None:
    hook = Requests()
    store = ArchiveStore(_container(azurite, "reads-one", hook))
    assert store.read(NAME) is None  # no container yet
    store.ensure()
    assert store.read(NAME) is None  # no blob
    blob = encode_blob([{"EventKey": "k", "n": n, "x": "y" * n} for n in range(300)])
    store.put(NAME, blob)
    hook.urls.clear()
    assert store.read(NAME) == blob.data
    assert store.read(NAME, 10, 25) == blob.data[10:35]
    assert store.read(NAME, 5, 0) == b""
    assert len(hook.urls) == 2  # one request a read; an empty range asks nothing
    assert all("%3D" in url for url in hook.urls)  # the name's `=` escaped as the SDK does
    with pytest.raises(HttpResponseError) as past_the_end:
        store.read(NAME, len(blob.data) + 10, 5)
    assert past_the_end.value.status_code == 416


def test_a_container_reached_by_a_sas_url_keeps_its_query_on_each_read(azurite: Azurite) -> None:
    owner = ArchiveStore(_container(azurite, "reads-sas", Requests()))
    owner.ensure()
    blob = encode_blob([activity_event(1)])
    owner.put(NAME, blob)
    sas = generate_container_sas(
        DEV_ACCOUNT,
        "reads-sas",
        account_key=DEV_KEY,
        permission=ContainerSasPermissions(read=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    url = _container(azurite, "reads-sas", Requests()).url
    reader = ArchiveStore(ContainerClient.from_container_url(f"{url}?{sas}"))
    assert reader.read(NAME) == blob.data
    assert reader.read(NAME, 3, 4) == blob.data[3:7]
    assert reader.read(NAME.replace("abc", "abd")) is None


@pytest.mark.parametrize(
    "fault",
    [
        RESET_MID_RESPONSE,  # headers and part of the body, then the connection gone
        Fault("reset"),  # gone before any answer: the pipeline's own retry
        Fault("error", status=503),
    ],
    ids=["cut-mid-body", "reset", "503"],
)
def test_a_read_cut_off_or_refused_once_is_read_again_whole(azurite: Azurite, fault: Fault) -> None:
    with FaultProxy(azurite, lifetime=60, max_stall=5) as proxy:
        container = ContainerClient.from_connection_string(
            proxy.connection_string,
            "reads-faults",
            # Typed int, used as a float: a twentieth of a second, not the default 15 s.
            retry_policy=LinearRetry(backoff=cast(int, 0.05), random_jitter_range=0),
        )
        store = ArchiveStore(container)
        store.ensure()
        blob = encode_blob([activity_event(n) for n in range(400)])
        store.put(NAME, blob)
        proxy.add_rule(Rule(fault, service="blob", method="GET", times=1))
        assert store.read(NAME) == blob.data
        assert [event.action for event in proxy.injected()] == [fault.describe()]
