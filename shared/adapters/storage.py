"""Builds the storage clients from settings: a connection string locally, an identity in Azure."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError
from azure.core.pipeline import Pipeline
from azure.data.tables import TableClient, TableServiceClient, UpdateMode
from azure.data.tables._base_client import TransportWrapper
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared.settings import Settings


@dataclass(frozen=True, slots=True)
class Stores:
    """Every table and container the app reads or writes, built once and passed in."""

    blob_service: BlobServiceClient
    table_service: TableServiceClient
    cursors: TableClient
    runs: TableClient
    archive: ContainerClient  # Azure's own export (PT1H.json), read only
    deadletter: ContainerClient
    records: ContainerClient  # the app's archive: every record once (shared.adapters.archive_store)
    index_prefix: str  # the month tables' name prefix (shared.adapters.index_tables)
    archive_tier: str

    def ensure(self) -> None:
        """Create what does not exist yet (idempotent; cheap enough for cold start and CLI).
        Month tables are created by the writer when a month first has a record."""
        for table in (self.cursors, self.runs):
            self.table_service.create_table_if_not_exists(table.table_name)
        for container in (self.deadletter, self.records):
            if not container.exists():
                try:
                    container.create_container()
                except Exception as error:  # another instance created it between the calls
                    if getattr(error, "error_code", "") != "ContainerAlreadyExists":
                        raise


# What requests reads from the environment on every request when its session trusts it
# (requests.Session.trust_env): proxies, and the CA bundle to verify with. Looking costs ~0.5 ms
# of CPU a request, a sixth of a blob read's here, on each of the thousands a search sends.
PROXY_SETTINGS = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"})
CA_BUNDLE_SETTINGS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")  # requests' own order


def transport_options(environ: Mapping[str, str]) -> dict[str, Any]:
    """The SDK transport's options: the environment read once here, not on every request
    (azure-core RequestsTransport `use_env_settings`; a CA bundle set there is passed as
    `connection_verify`). With a proxy set, the transport looks as the SDK documents."""
    if any(name.upper() in PROXY_SETTINGS for name in environ):
        return {}
    options: dict[str, Any] = {"use_env_settings": False}
    bundle = next((environ[name] for name in CA_BUNDLE_SETTINGS if environ.get(name)), None)
    if bundle is not None:
        options["connection_verify"] = bundle
    return options


def credential_for(settings: Settings) -> TokenCredential:
    # Imported here: azure.identity is only needed in Azure, not on the local path.
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if settings.managed_identity_client_id:
        return ManagedIdentityCredential(client_id=settings.managed_identity_client_id)
    return DefaultAzureCredential()


def _table_clients_safe_across_threads(service: TableServiceClient) -> TableServiceClient:
    """The service, its `get_table_client` safe while other threads send through its clients.

    The SDK's own builds each table client a pipeline from the service's policy objects, and
    so re-links the shared ones to new links it has not linked on yet: a request on another
    thread meanwhile meets a link with no next one (AttributeError:
    '_SansIOHTTPPolicyRunner' object has no attribute 'next'). This builds it as the blob SDK
    builds its child clients: on the service pipeline's own links, which stay as they are.
    """
    shared = service._client._client._pipeline  # private, as in the SDK's own method

    def get_table_client(table_name: str, **kwargs: Any) -> TableClient:
        pipeline = Pipeline(
            # A child never closes the service's transport (the SDK's wrapper, untyped).
            transport=TransportWrapper(shared._transport),  # type: ignore[no-untyped-call]
            policies=shared._impl_policies,  # linked already: only the last one is re-linked
        )
        return TableClient(
            service.url,
            table_name=table_name,
            credential=service.credential,
            api_version=service.api_version,
            pipeline=pipeline,
            location_mode=service._location_mode,
            _hosts=service._hosts,
            **kwargs,
        )

    service.get_table_client = get_table_client  # type: ignore[method-assign]
    return service


# Transport timeouts (seconds), per attempt. azure-core's default is 300 s for each (Learn,
# "Azure Core shared client library for Python", Configurations: connection_timeout,
# read_timeout; https://learn.microsoft.com/python/api/overview/azure/core-readme): a storage
# call that is never answered held a search page for minutes. A read timeout is per socket
# read, not per request, so large blobs still stream; the SDKs' own retries still apply.
STORAGE_CONNECTION_TIMEOUT = 10
STORAGE_READ_TIMEOUT = 60


def connect(settings: Settings, **client_options: Any) -> Stores:
    """The stores; `client_options` go to the SDK clients (a benchmark counts requests)."""
    client_options = {
        "connection_timeout": STORAGE_CONNECTION_TIMEOUT,
        "read_timeout": STORAGE_READ_TIMEOUT,
        **transport_options(os.environ),
        **client_options,
    }
    if settings.storage_connection:
        blob_service = BlobServiceClient.from_connection_string(
            settings.storage_connection, **client_options
        )
        table_service = TableServiceClient.from_connection_string(
            settings.storage_connection, **client_options
        )
    else:
        credential = credential_for(settings)
        blob_service = BlobServiceClient(
            settings.storage_blob_uri, credential=credential, **client_options
        )
        table_service = TableServiceClient(
            endpoint=settings.storage_table_uri, credential=credential, **client_options
        )
    table_service = _table_clients_safe_across_threads(table_service)
    return Stores(
        blob_service=blob_service,
        table_service=table_service,
        cursors=table_service.get_table_client(settings.cursor_table),
        runs=table_service.get_table_client(settings.runs_table),
        archive=blob_service.get_container_client(settings.archive_container),
        deadletter=blob_service.get_container_client(settings.deadletter_container),
        records=blob_service.get_container_client(settings.records_container),
        index_prefix=settings.index_table_prefix,
        archive_tier=settings.archive_tier,
    )


def write_unless_changed(
    table: TableClient, entity: dict[str, Any], etag: str | None
) -> dict[str, Any] | None:
    """Create the row (etag None) or replace it if nobody changed it since `etag`: the write's
    metadata (its new `etag`), None when another writer won the race."""
    try:
        if etag is None:
            metadata = table.create_entity(entity)
        else:
            metadata = table.update_entity(
                entity,
                mode=UpdateMode.REPLACE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
    except (ResourceExistsError, ResourceModifiedError):
        return None
    except HttpResponseError as error:
        if error.status_code in (409, 412):  # Conflict, Precondition Failed
            return None
        raise
    return dict(metadata)
