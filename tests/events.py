"""Small, readable Activity Log events for tests (Event Hub form), with every field varied."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

SUBSCRIPTION = "6f3c2a51-1d2e-4b8a-9c7d-0e1f2a3b4c5d"
CLAIMS = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims"
CLAIMS = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims"
BASE_TIME = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def activity_event(number: int, **overrides: Any) -> dict[str, Any]:
    """An Administrative write event; `number` makes it distinct and orders it in time."""
    moment = BASE_TIME + timedelta(seconds=number)
    event: dict[str, Any] = {
        "time": moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z",
        "resourceId": f"/SUBSCRIPTIONS/{SUBSCRIPTION.upper()}/RESOURCEGROUPS/RG-{number % 3}"
        f"/PROVIDERS/MICROSOFT.COMPUTE/VIRTUALMACHINES/VM-{number}",
        "operationName": "MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE",
        "category": "Administrative",
        "resultType": "Success",
        "resultSignature": "Succeeded.OK",
        "durationMs": str(100 + number),
        "callerIpAddress": "203.0.113.7",
        "correlationId": f"c0ffee00-0000-4000-8000-{number:012d}",
        "identity": {
            "authorization": {"scope": "/subscriptions/x", "action": "Microsoft.Compute/write"},
            "claims": {f"{CLAIMS}/upn": f"user{number % 4}@contoso.com"},
        },
        "level": "Information",
        "location": "westeurope",
        "properties": {"statusCode": "Created", "responseBody": '{"id": "vm"}'},
    }
    event.update(overrides)
    return event


def envelope(events: list[Any]) -> bytes:
    return orjson.dumps({"records": events})


def jsonl(events: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(event) + b"\n" for event in events)
