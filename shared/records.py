"""The normalized record's shape and the rejection type: the contract in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Output columns, in the order of the spec (../shared/spec/normalized-record.md in the
# team handbook). Every normalized record has every one of them.
COLUMNS: tuple[str, ...] = (
    "TimeGenerated",
    "CategoryValue",
    "OperationNameValue",
    "OperationName",
    "ResourceProviderValue",
    "ActivityStatusValue",
    "ActivitySubstatusValue",
    "Level",
    "ResourceId",
    "SubscriptionId",
    "ResourceGroup",
    "Caller",
    "CallerIpAddress",
    "CorrelationId",
    "OperationId",
    "EventDataId",
    "Location",
    "Description",
    "DurationMs",
    "Hierarchy",
    "AadTenantId",
    "Authorization_d",
    "Claims_d",
    "Properties_d",
    "HttpRequest",
    "AdditionalFields",
    "NormalizationWarnings",
    "EventKey",
)

# A normalized record is a plain dict keyed by COLUMNS: it is written straight to JSON.
NormalizedRecord = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejection:
    """An input that cannot become a record: why, where it came from, and its raw text, whole."""

    reason: str
    source: str
    raw: str

    def as_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "source": self.source, "raw": self.raw}
