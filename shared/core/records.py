"""The normalized record's shape and the rejection type: the contract in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Output columns, in the order of the spec (docs/spec/normalized-record.md, the team
# handbook's contract). Every normalized record has every one of them.
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

# The Activity Log categories of the spec's CategoryValue (a retention limit may name each).
CATEGORIES = (
    "Administrative",
    "ServiceHealth",
    "ResourceHealth",
    "Alert",
    "Autoscale",
    "Recommendation",
    "Security",
    "Policy",
)

# A normalized record is a plain dict keyed by COLUMNS: it is written straight to JSON.
NormalizedRecord = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejection:
    """An input that cannot become a record: why, where it came from, and its raw text, whole.

    `raw` is text for people (bytes that are not UTF-8 shown as \\x escapes); `data` holds the
    exact bytes when the text cannot (a dead letter keeps and replays those, byte for byte).
    """

    reason: str
    source: str
    raw: str
    data: bytes = b""

    @property
    def raw_bytes(self) -> bytes:
        """The input exactly as received."""
        return self.data or self.raw.encode("utf-8", "surrogatepass")

    def as_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "source": self.source, "raw": self.raw}
