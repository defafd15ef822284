"""The PT1H.json path grammar, in one place: parse a blob name, build one, list an hour.

Azure's archive names each hour's blob
`resourceId=/SUBSCRIPTIONS/{SUBSCRIPTION}/y=YYYY/m=MM/d=DD/h=HH/m=00/PT1H.json`. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SUBSCRIPTIONS_PREFIX = "resourceId=/SUBSCRIPTIONS/"
_PT1H = re.compile(
    re.escape(SUBSCRIPTIONS_PREFIX) + r"(?P<subscription>[^/]+)/y=(?P<y>\d{4})/m=(?P<m>\d{2})/"
    r"d=(?P<d>\d{2})/h=(?P<h>\d{2})/m=00/PT1H\.json$",
    # ASCII: `\d` and case folding as Azure writes names (else "\u0662\u0660\u0662\u0664" reads
    # as 2024, and U+017F as "s").
    re.IGNORECASE | re.ASCII,
)


# What the catch-up timer lists (shared.services.catchup), exactly: a name it would not list is
# read when announced, but growth after that would wait for a backfill.
_LISTED = re.compile(
    re.escape(SUBSCRIPTIONS_PREFIX) + r"[^/]+/y=[0-9]{4}/m=[0-9]{2}/d=[0-9]{2}/h=[0-9]{2}/m=00/"
    r"PT1H\.json"
)


@dataclass(frozen=True, slots=True)
class BlobPath:
    subscription: str
    hour: datetime | None
    listed: bool = False  # in the layout as Azure writes it: what the catch-up timer lists

    @classmethod
    def parse(cls, name: str) -> BlobPath:
        """The subscription and hour a PT1H.json name gives; hour None outside the layout.
        (Read loosely, in any case and under any folder, so that a copy is placed by its
        hour; `listed` says whether the name is exactly Azure's.)

        A name shaped like the layout but naming no real hour (`m=02/d=30`, `h=24`) is outside
        it too: that blob is indexed from its content and reported, never an error for others.
        """
        match = _PT1H.search(name)
        if match is None:
            return cls("", None)
        try:
            hour = datetime(
                int(match["y"]), int(match["m"]), int(match["d"]), int(match["h"]), tzinfo=UTC
            )
        except ValueError:
            return cls(match["subscription"].lower(), None)
        return cls(match["subscription"].lower(), hour, _LISTED.fullmatch(name) is not None)


def hour_key(hour: datetime | None) -> str:
    # Fixed width for every year 0001-9999 (strftime does not pad years before 1000), so
    # cursor partitions compare as text in time order.
    return f"{hour.year:04d}{hour.month:02d}{hour.day:02d}{hour.hour:02d}" if hour else "unknown"


def hours_back(now: datetime, count: int) -> list[datetime]:
    """The current hour and the `count` before it, newest first."""
    top = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [top - timedelta(hours=back) for back in range(count + 1)]


def hour_prefix(subscription_prefix: str, hour: datetime) -> str:
    """The folder of one hour under a subscription's folder (`resourceId=/SUBSCRIPTIONS/X/`)."""
    return f"{subscription_prefix}y={hour.year:04d}/m={hour:%m}/d={hour:%d}/h={hour:%H}/"


def blob_name(subscription: str, hour: datetime) -> str:
    """The PT1H.json name Azure gives one subscription's hour (the subscription upper case)."""
    return hour_prefix(f"{SUBSCRIPTIONS_PREFIX}{subscription.upper()}/", hour) + "m=00/PT1H.json"
