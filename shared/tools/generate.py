"""Deterministic, realistic Activity Log events for benchmarks and the local end-to-end demo.

The events look like what Azure exports: all eight categories, mostly the Event Hub / PT1H line
form with some REST form mixed in, and the quirks real exports carry (upper- and mixed-case
resource ids, numbers sent as strings, JSON inside strings, both `level` and `Level`, the
legacy `Write` category, a trailing dot on `resultType`, 3, 6 or 7 fractional digits).
Everything comes from one seeded `random.Random`: the same arguments give the same events.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

Event = dict[str, Any]

# Fixed, so that a seed alone decides the events; the demo passes its own start.
DEFAULT_START = datetime(2025, 1, 6, tzinfo=UTC)
DEFAULT_SUBSCRIPTIONS = (
    "3f2b8c1e-5d4a-4e7b-9c61-0a8d2e4f6b13",
    "9a7c5e3b-1f2d-4c8e-b6a4-7d9e0f1a2b3c",
    "c4d5e6f7-8a9b-4c0d-9e1f-2a3b4c5d6e7f",
)

# (share of events, category): roughly what a busy subscription's log holds.
_CATEGORY_WEIGHTS = (
    (60, "Administrative"),
    (12, "Policy"),
    (3, "ServiceHealth"),
    (6, "ResourceHealth"),
    (5, "Alert"),
    (4, "Autoscale"),
    (5, "Recommendation"),
    (5, "Security"),
)
_REST_SHARE = 0.15  # events given in the REST / portal form
_TICKS_PER_SECOND = 10_000_000

_REGIONS = ("eastus", "eastus2", "westeurope", "northeurope", "francecentral", "uksouth")
_RESOURCE_GROUPS = ("rg-web-prod", "RG-Data-Prod", "rg-shared", "NetworkWatcherRG", "rg-dev-01")
# (provider, resource type, operations on it)
_RESOURCE_TYPES = (
    (
        "Microsoft.Compute",
        "virtualMachines",
        ("write", "delete", "start/action", "deallocate/action", "restart/action"),
    ),
    (
        "Microsoft.Storage",
        "storageAccounts",
        ("write", "listKeys/action", "delete", "listAccountSas/action"),
    ),
    ("Microsoft.Network", "networkSecurityGroups", ("write", "delete")),
    ("Microsoft.Network", "virtualNetworks", ("write", "subnets/join/action")),
    ("Microsoft.KeyVault", "vaults", ("write", "delete")),
    ("Microsoft.Web", "sites", ("write", "config/write", "restart/action", "publishxml/action")),
    ("Microsoft.Sql", "servers", ("write", "databases/write", "firewallRules/write")),
    ("Microsoft.Resources", "deployments", ("write", "validate/action")),
    (
        "Microsoft.ContainerService",
        "managedClusters",
        ("write", "listClusterUserCredential/action"),
    ),
)
_USERS = (
    ("Ana", "Silva"),
    ("Jan", "Kowalski"),
    ("Mei", "Chen"),
    ("Olu", "Adeyemi"),
    ("Sara", "Lind"),
    ("Ravi", "Iyer"),
)
_ROLES = ("Owner", "Contributor", "Storage Account Contributor", "Website Contributor")
_CLAIMS = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/"
_MS_CLAIMS = "http://schemas.microsoft.com/identity/claims/"
_LEVEL_NUMBERS = {"Critical": 1, "Error": 2, "Warning": 3, "Informational": 4, "Verbose": 5}


def generate_events(
    count: int,
    *,
    seed: int = 0,
    start: datetime | None = None,
    span: timedelta = timedelta(days=1),
    subscriptions: Sequence[str] | None = None,
) -> list[Event]:
    """`count` events with times in [start, start + span), in time order."""
    maker = _Maker(
        random.Random(seed),  # noqa: S311 - reproducible test data, not secrets
        start or DEFAULT_START,
        span,
        tuple(subscriptions) if subscriptions else DEFAULT_SUBSCRIPTIONS,
    )
    timed: list[tuple[int, int, Event]] = []
    while len(timed) < count:
        for ticks, event in maker.next_events():
            timed.append((ticks, len(timed), event))
    timed.sort(key=lambda item: (item[0], item[1]))
    return [event for _, _, event in timed[:count]]


class _Maker:
    def __init__(
        self, rng: random.Random, start: datetime, span: timedelta, subscriptions: tuple[str, ...]
    ) -> None:
        self.rng = rng
        self.start_ticks = _ticks_of(start)
        self.span_ticks = max(1, int(span.total_seconds() * _TICKS_PER_SECOND))
        self.subscriptions = subscriptions
        self.tenant = self.uuid()
        self.hierarchy_root = f"{self.tenant}/mg-platform/mg-landingzones"
        categories = [name for _, name in _CATEGORY_WEIGHTS]
        weights = [weight for weight, _ in _CATEGORY_WEIGHTS]
        self.pick_category: Callable[[], str] = lambda: rng.choices(categories, weights)[0]
        self.builders: dict[str, Callable[[int], list[tuple[int, Event]]]] = {
            "Administrative": self.administrative,
            "Policy": self.policy,
            "ServiceHealth": self.service_health,
            "ResourceHealth": self.resource_health,
            "Alert": self.alert,
            "Autoscale": self.autoscale,
            "Recommendation": self.recommendation,
            "Security": self.security,
        }

    # -- building blocks ---------------------------------------------------------------------

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def hex32(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def next_events(self) -> list[tuple[int, Event]]:
        ticks = self.start_ticks + self.rng.randrange(self.span_ticks)
        events = self.builders[self.pick_category()](ticks)
        if self.rng.random() < _REST_SHARE:
            events = [(at, self.rest_form(event)) for at, event in events]
        return events

    def time_text(self, ticks: int) -> str:
        """The event time as exports write it: mostly 7 fractional digits, some 3 or 6."""
        moment = _moment_of(ticks)
        fraction = f"{ticks % _TICKS_PER_SECOND:07d}"
        digits = self.rng.choices((7, 6, 3), (80, 10, 10))[0]
        return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction[:digits]}Z"

    def resource(self) -> tuple[str, str, str, str, str]:
        """(subscription, resource group, provider, type, resource id in mixed case)."""
        subscription = self.rng.choice(self.subscriptions)
        group = self.rng.choice(_RESOURCE_GROUPS)
        provider, kind, _ = self.rng.choice(_RESOURCE_TYPES)
        name = f"{kind[:4].lower()}-{self.rng.choice(('app', 'db', 'core', 'edge'))}-" + (
            f"{self.rng.randrange(1, 40):02d}"
        )
        resource_id = (
            f"/subscriptions/{subscription}/resourceGroups/{group}/providers/"
            f"{provider}/{kind}/{name}"
        )
        return subscription, group, provider, kind, resource_id

    def exported_id(self, resource_id: str) -> str:
        """Resource ids as the export writes them: usually all upper case."""
        return resource_id.upper() if self.rng.random() < 0.8 else resource_id

    def level(self, event: Event, name: str) -> None:
        style = self.rng.random()
        if style < 0.15:  # newer exports carry both; the number does not always agree
            event["Level"] = 5 if self.rng.random() < 0.5 else _LEVEL_NUMBERS[name]
        event["level"] = "Information" if name == "Informational" and style > 0.6 else name

    def ip_address(self) -> str:
        kind = self.rng.random()
        if kind < 0.75:
            return ".".join(str(self.rng.randrange(1, 255)) for _ in range(4))
        if kind < 0.9:
            return f"2001:db8:{self.rng.randrange(65536):x}::{self.rng.randrange(65536):x}"
        port = self.rng.randrange(1024, 65535)
        return f"20.{self.rng.randrange(256)}.{self.rng.randrange(256)}.7:{port}"

    def user_claims(self, tenant: str) -> dict[str, str]:
        given, surname = self.rng.choice(_USERS)
        upn = f"{given.lower()}.{surname.lower()}@contoso.example"
        now = str(1_736_000_000 + self.rng.randrange(10_000_000))
        return {
            "aud": "https://management.core.windows.net/",
            "iss": f"https://sts.windows.net/{tenant}/",
            "iat": now,
            "nbf": now,
            "exp": str(int(now) + 3600),
            "http://schemas.microsoft.com/claims/authnclassreference": "1",
            "aio": self.hex32() + "==",
            "http://schemas.microsoft.com/claims/authnmethodsreferences": "pwd,mfa",
            "appid": "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
            "appidacr": "0",
            _CLAIMS + "surname": surname,
            _CLAIMS + "givenname": given,
            "ipaddr": self.ip_address(),
            "name": f"{given} {surname}",
            _MS_CLAIMS + "objectidentifier": self.uuid(),
            "puid": f"{self.rng.getrandbits(64):016X}",
            _MS_CLAIMS + "scope": "user_impersonation",
            _CLAIMS + "nameidentifier": self.hex32(),
            _MS_CLAIMS + "tenantid": tenant,
            _CLAIMS + "name": upn,
            _CLAIMS + "upn": upn,
            "uti": self.hex32()[:22],
            "ver": "1.0",
        }

    def app_claims(self, tenant: str) -> dict[str, str]:
        app = self.uuid()
        return {
            "aud": "https://management.azure.com/",
            "iss": f"https://sts.windows.net/{tenant}/",
            "appid": app,
            "appidacr": "2",
            "idtyp": "app",
            _MS_CLAIMS + "identityprovider": f"https://sts.windows.net/{tenant}/",
            _MS_CLAIMS + "objectidentifier": self.uuid(),
            _CLAIMS + "nameidentifier": self.uuid(),
            _MS_CLAIMS + "tenantid": tenant,
            "ver": "1.0",
        }

    def identity(self, scope: str, action: str, subscription: str) -> Event:
        claims = (
            self.user_claims(self.tenant)
            if self.rng.random() < 0.7
            else self.app_claims(self.tenant)
        )
        return {
            "authorization": {
                "scope": scope,
                "action": action,
                "evidence": {
                    "role": self.rng.choice(_ROLES),
                    "roleAssignmentScope": f"/subscriptions/{subscription}",
                    "roleAssignmentId": self.hex32(),
                    "roleDefinitionId": self.hex32(),
                    "principalId": self.hex32(),
                    "principalType": "User" if _CLAIMS + "upn" in claims else "ServicePrincipal",
                },
            },
            "claims": claims,
        }

    def duration(self, milliseconds: int) -> int | str:
        return str(milliseconds) if self.rng.random() < 0.4 else milliseconds

    def base(self, ticks: int, category: str, resource_id: str, operation: str) -> Event:
        event: Event = {}
        if self.rng.random() < 0.3:  # fields that exports began to carry in 2025
            event["RoleLocation"] = self.rng.choice(("France South", "East US", "West Europe"))
            event["Stamp"] = self.rng.choice(("FDWeb", "USEast2", "EUWest"))
            event["ReleaseVersion"] = f"6.2025.{self.rng.randrange(1, 50)}.4+0123456.release"
        event.update(
            time=self.time_text(ticks),
            resourceId=resource_id,
            operationName=operation,
            category=category,
        )
        return event

    # -- the eight categories ----------------------------------------------------------------

    def administrative(self, ticks: int) -> list[tuple[int, Event]]:
        subscription, group, provider, kind, resource_id = self.resource()
        _, _, operations = next(item for item in _RESOURCE_TYPES if item[:2] == (provider, kind))
        verb = self.rng.choice(operations)
        operation = f"{provider}/{kind}/{verb}"
        exported_id = self.exported_id(resource_id)
        exported_operation = operation.upper() if exported_id.isupper() else operation
        correlation = self.uuid()
        identity = self.identity(resource_id, operation, subscription)
        caller_ip = self.ip_address()
        legacy = self.rng.random() < 0.05
        category = ("Write" if "write" in verb else "Action") if legacy else "Administrative"
        failed = self.rng.random() < 0.1
        # Milliseconds the operation took; it ends inside the window too.
        left = (self.start_ticks + self.span_ticks - 1 - ticks) // 10_000
        took = min(self.rng.randrange(5, 90_000), left)
        events: list[tuple[int, Event]] = []
        phases = [("Start", "Started.", "Accepted", 0)]
        phases.append(
            ("Failure", "Failed.Conflict", "Conflict", took)
            if failed
            else (
                "Success",
                "Succeeded.OK" if "action" in verb else "Succeeded.Created",
                "OK",
                took,
            )
        )
        for result_name, signature, status_code, offset_ms in phases:
            at = ticks + offset_ms * 10_000
            event = self.base(at, category, exported_id, exported_operation)
            result_type = result_name + "." if self.rng.random() < 0.1 else result_name
            event.update(
                resultType=result_type,
                resultSignature=signature,
                durationMs=self.duration(offset_ms),
                callerIpAddress=caller_ip,
                correlationId=correlation,
                identity=identity,
            )
            self.level(event, "Error" if result_type.startswith("Fail") else "Informational")
            event["location"] = self.rng.choice(_REGIONS)
            properties: Event = {
                "statusCode": status_code,
                "serviceRequestId": self.uuid() if offset_ms else None,
                "eventCategory": "Administrative",
                "entity": resource_id,
                "message": operation,
                "hierarchy": f"{self.hierarchy_root}/{subscription}",
            }
            if result_type.startswith("Start") and "write" in verb:
                body = {"location": event["location"], "tags": {"env": "prod", "owner": group}}
                properties["requestbody"] = orjson.dumps(body).decode()
            if result_type.startswith("Success") and "write" in verb:
                properties["responseBody"] = orjson.dumps(
                    {
                        "id": resource_id,
                        "name": resource_id.rsplit("/", 1)[1],
                        "properties": {"provisioningState": "Succeeded"},
                    }
                ).decode()
            if failed and offset_ms:
                properties["statusMessage"] = orjson.dumps(
                    {
                        "error": {
                            "code": "Conflict",
                            "message": f"Operation on '{resource_id}' conflicts with another.",
                        }
                    }
                ).decode()
            event["properties"] = properties
            if self.rng.random() < 0.3:
                event["tenantId"] = self.tenant
            events.append((at, event))
        return events

    def policy(self, ticks: int) -> list[tuple[int, Event]]:
        subscription, _, provider, kind, resource_id = self.resource()
        effect = self.rng.choice(("audit", "deny", "auditIfNotExists", "modify"))
        operation = f"Microsoft.Authorization/policies/{effect}/action"
        exported_id = self.exported_id(resource_id)
        event = self.base(ticks, "Policy", exported_id, operation.upper())
        assignment = self.hex32()[:24]
        policies = [
            {
                "policyDefinitionId": "/providers/Microsoft.Authorization/policyDefinitions/"
                f"{self.uuid()}/",
                "policyDefinitionName": self.uuid(),
                "policyDefinitionEffect": effect[0].upper() + effect[1:],
                "policyAssignmentId": f"/subscriptions/{subscription}/providers/"
                f"Microsoft.Authorization/policyAssignments/{assignment}/",
                "policyAssignmentName": assignment,
                "policyAssignmentScope": f"/subscriptions/{subscription}",
                "policyAssignmentParameters": {},
                "policyExemptionIds": [],
            }
        ]
        event.update(
            resultType="Success",
            resultSignature="Succeeded.",
            durationMs=self.duration(0),
            callerIpAddress=self.ip_address(),
            correlationId=self.uuid(),
            identity=self.identity(resource_id, f"{provider}/{kind}/write", subscription),
        )
        self.level(event, "Warning")
        event["properties"] = {
            "isComplianceCheck": self.rng.choice(("False", "True")),
            "resourceLocation": self.rng.choice(_REGIONS),
            "ancestors": self.tenant,
            "policies": orjson.dumps(policies).decode(),
            "eventCategory": "Policy",
            "entity": resource_id,
            "message": operation,
            "hierarchy": "",
        }
        return [(ticks, event)]

    def service_health(self, ticks: int) -> list[tuple[int, Event]]:
        subscription = self.rng.choice(self.subscriptions)
        region = self.rng.choice(_REGIONS)
        service = self.rng.choice(("App Service", "Virtual Machines", "Azure SQL Database"))
        incident = self.rng.random() < 0.5
        kind = "incident" if incident else "maintenance"
        stage = self.rng.choice(("Active", "Resolved", "Complete"))
        event = self.base(
            ticks,
            "ServiceHealth",
            f"/subscriptions/{subscription}",
            f"Microsoft.ServiceHealth/{kind}/action",
        )
        title = f"{'Network issue' if incident else 'Planned maintenance'} - {service} - {region}"
        event["resultType"] = stage
        event["correlationId"] = self.uuid()
        event["resultDescription"] = f"{stage}: {title}"
        self.level(event, "Warning" if incident else "Informational")
        impacted = [{"ImpactedRegions": [{"RegionName": region}], "ServiceName": service}]
        event["properties"] = {
            "title": title,
            "service": service,
            "region": region,
            "communication": f"<p>Starting at {self.time_text(ticks)}, customers using "
            f"<strong>{service}</strong> in {region} may see errors.</p>\r\n",
            "incidentType": "Incident" if incident else "Maintenance",
            "trackingId": f"{self.hex32()[:4].upper()}-{self.hex32()[:3].upper()}",
            "impactStartTime": self.time_text(ticks - 3_600 * _TICKS_PER_SECOND),
            "impactedServices": orjson.dumps(impacted).decode(),
            "stage": stage,
            "communicationId": str(self.rng.getrandbits(40)),
            "isHIR": False,
            "IsSynthetic": "False",
            "version": "0.1.1",
            "oldRate": 0.0,
        }
        event["identity"] = {"claims": {_CLAIMS + "emailaddress": "AcmClient@microsoft.com"}}
        return [(ticks, event)]

    def resource_health(self, ticks: int) -> list[tuple[int, Event]]:
        _, _, _, _, resource_id = self.resource()
        phase = self.rng.choice(("Activated", "Updated", "Resolved"))
        event = self.base(
            ticks,
            "ResourceHealth",
            resource_id.upper(),
            f"Microsoft.Resourcehealth/healthevent/{phase}/action",
        )
        event["correlationId"] = self.uuid()
        event["resultType"] = phase if phase != "Activated" else "Active"
        self.level(event, "Critical" if phase == "Activated" else "Informational")
        details = {
            "title": self.rng.choice(("Unavailable", "Degraded", "Available")),
            "details": "The resource is starting as requested by an authorized user.",
            "currentHealthStatus": self.rng.choice(("Available", "Unavailable", "Unknown")),
            "previousHealthStatus": "Available",
            "type": "Downtime",
            "cause": self.rng.choice(("PlatformInitiated", "UserInitiated")),
        }
        nested = self.rng.random() < 0.6
        event["properties"] = (
            {"eventCategory": "ResourceHealth", "eventProperties": details} if nested else details
        )
        event["location"] = "global"
        return [(ticks, event)]

    def alert(self, ticks: int) -> list[tuple[int, Event]]:
        subscription, group, _, _, resource_id = self.resource()
        rule = f"alert-{self.rng.choice(('cpu', 'disk', 'admin-ops', 'deletes'))}"
        event = self.base(
            ticks,
            "Alert",
            self.exported_id(resource_id),
            "Microsoft.Insights/ActivityLogAlerts/Activated/action",
        )
        event["correlationId"] = self.uuid()
        event["resultType"] = "Succeeded."
        event["resultDescription"] = f"Alert: {rule} called on action groups : ops-team"
        self.level(event, "Informational")
        event["properties"] = {
            "eventCategory": "Alert",
            "eventProperties": {
                "subscriptionId": subscription,
                "eventDataId": self.uuid(),
                "resourceGroup": group,
                "resourceId": resource_id,
                "eventTimestamp": self.time_text(ticks - 60 * _TICKS_PER_SECOND),
                "operationName": "Microsoft.Compute/virtualMachines/delete",
                "status": "Succeeded",
            },
            "WindowSizeInMinutes": "5",
            "Threshold": str(self.rng.randrange(50, 100)),
        }
        event["identity"] = {"claims": {_CLAIMS + "spn": "Microsoft.Insights/alertRules"}}
        return [(ticks, event)]

    def autoscale(self, ticks: int) -> list[tuple[int, Event]]:
        subscription = self.rng.choice(self.subscriptions)
        group = self.rng.choice(_RESOURCE_GROUPS)
        setting = f"/subscriptions/{subscription}/resourceGroups/{group}/providers/" + (
            f"microsoft.insights/autoscalesettings/scale-{self.rng.randrange(1, 9)}"
        )
        direction = self.rng.choice(("Scaleup", "Scaledown"))
        old = self.rng.randrange(2, 10)
        new = old + 1 if direction == "Scaleup" else old - 1
        event = self.base(
            ticks,
            "Autoscale",
            setting.upper(),
            f"MICROSOFT.INSIGHTS/AUTOSCALESETTINGS/{direction.upper()}/ACTION",
        )
        event["correlationId"] = self.uuid()
        event["resultType"] = self.rng.choice(("Succeeded", "Success"))
        self.level(event, "Informational")
        event["properties"] = {
            "Description": f"The autoscale engine scaled from {old} to {new} instances.",
            "ResourceName": setting,
            "OldInstancesCount": str(old),
            "NewInstancesCount": str(new),
            "LastScaleActionTime": f"{_moment_of(ticks):%a, %d %b %Y %H:%M:%S} GMT",
        }
        event["identity"] = {"claims": {_CLAIMS + "spn": "Microsoft.Insights/autoscaleSettings"}}
        return [(ticks, event)]

    def recommendation(self, ticks: int) -> list[tuple[int, Event]]:
        _, _, _, _, resource_id = self.resource()
        event = self.base(
            ticks,
            "Recommendation",
            resource_id.upper(),
            "Microsoft.Advisor/recommendations/available/action",
        )
        event.update(
            correlationId=self.uuid(),
            eventDataId=self.uuid(),
            resultType="Active",
            resultSignature="Succeeded",
            resultDescription="A new recommendation is available.",
            durationMs=self.rng.randrange(1, 50),
            callerIpAddress="0.0.0.0",  # noqa: S104 - the value Advisor events carry
            operationVersion="2017-03-31",
        )
        self.level(event, "Informational")
        event["properties"] = {
            "recommendationSchemaVersion": "1.0",
            "recommendationCategory": self.rng.choice(("HighAvailability", "Cost", "Security")),
            "recommendationImpact": self.rng.choice(("High", "Medium", "Low")),
            "recommendationName": "Consider having at least two instances",
            "recommendationType": self.uuid(),
        }
        event["identity"] = {"claims": {_CLAIMS + "emailaddress": "Microsoft.Advisor"}}
        return [(ticks, event)]

    def security(self, ticks: int) -> list[tuple[int, Event]]:
        subscription = self.rng.choice(self.subscriptions)
        region = self.rng.choice(_REGIONS)
        alert_id = f"{self.rng.getrandbits(62)}_{self.uuid()}"
        resource_id = (
            f"/subscriptions/{subscription}/providers/Microsoft.Security/locations/{region}"
            f"/alerts/{alert_id}"
        )
        event = self.base(
            ticks,
            "Security",
            resource_id.upper(),
            "MICROSOFT.SECURITY/LOCATIONS/ALERTS/ACTIVATE/ACTION",
        )
        event["correlationId"] = self.uuid()
        event["resultType"] = "Active"
        self.level(event, "Informational")
        event["location"] = region
        event["properties"] = {
            "accountLogonId": f"0x{self.rng.getrandbits(16):x}",
            "commandLine": "c:\\temp\\invoice.pdf.exe",
            "parentProcess id": str(self.rng.randrange(4, 9999)),
            "processId": str(self.rng.randrange(4, 9999)),
            "UserSID": f"S-1-5-21-{self.rng.getrandbits(30)}",
            "ActionTaken": "Detected",
            "Severity": self.rng.choice(("High", "Medium", "Low")),
            "eventCategory": "Security",
        }
        if self.rng.random() < 0.5:
            event["tenantId"] = self.tenant
        return [(ticks, event)]

    # -- the REST / portal form --------------------------------------------------------------

    def rest_form(self, event: Event) -> Event:
        """The same event as the REST API and `az monitor activity-log list` give it."""
        resource_id: str = event["resourceId"]
        lowered = resource_id.lower()
        parts = resource_id.split("/")
        subscription = parts[2] if len(parts) > 2 else ""
        group = parts[4] if "/resourcegroups/" in lowered and len(parts) > 4 else ""
        provider = parts[6] if "/providers/" in lowered and len(parts) > 6 else ""
        event_data_id = event.get("eventDataId") or self.uuid()
        timestamp = event["time"]
        category = event["category"]
        if category in ("Write", "Delete", "Action"):
            category = "Administrative"
        rest: Event = {
            "channels": "Operation",
            "correlationId": event.get("correlationId", ""),
            "description": event.get("resultDescription", ""),
            "eventDataId": event_data_id,
            "eventName": {"value": "EndRequest", "localizedValue": "End request"},
            "category": {"value": category, "localizedValue": category},
            "eventTimestamp": timestamp,
            "id": f"{resource_id}/events/{event_data_id}/ticks/{self.rng.getrandbits(59)}",
            "level": _LEVEL_NAMES_REST.get(str(event.get("level")), str(event.get("level"))),
            "operationId": self.uuid(),
            "operationName": {
                "value": event["operationName"],
                "localizedValue": event["operationName"],
            },
            "resourceGroupName": group,
            "resourceProviderName": {"value": provider, "localizedValue": provider},
            "resourceId": resource_id,
            "status": {
                "value": str(event.get("resultType", "")).rstrip("."),
                "localizedValue": str(event.get("resultType", "")).rstrip("."),
            },
            "subStatus": {"value": event.get("resultSignature", ""), "localizedValue": ""},
            "submissionTimestamp": timestamp,
            "subscriptionId": subscription,
            "properties": event.get("properties", {}),
            "relatedEvents": [],
        }
        identity = event.get("identity") or {}
        claims = identity.get("claims") or {}
        if "authorization" in identity:
            rest["authorization"] = {
                "action": identity["authorization"]["action"],
                "scope": identity["authorization"]["scope"],
            }
        if claims:
            rest["claims"] = claims
            caller = (
                claims.get(_CLAIMS + "upn")
                or claims.get(_CLAIMS + "spn")
                or claims.get(_CLAIMS + "emailaddress")
                or claims.get("appid")
            )
            if caller:
                rest["caller"] = caller
        if "callerIpAddress" in event:
            rest["httpRequest"] = {
                "clientRequestId": self.uuid(),
                "clientIpAddress": event["callerIpAddress"],
                "method": "PUT",
            }
        return rest


_LEVEL_NAMES_REST = {"Information": "Informational"}


def _ticks_of(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * _TICKS_PER_SECOND + delta.microseconds * 10


def _moment_of(ticks: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ticks // 10)
