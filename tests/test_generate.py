"""The event generator: realistic, complete over categories, and reproducible."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson

from shared.core.normalize import normalize_input
from shared.core.records import NormalizedRecord
from shared.tools.generate import generate_events

EIGHT = {
    "Administrative",
    "ServiceHealth",
    "ResourceHealth",
    "Alert",
    "Autoscale",
    "Recommendation",
    "Security",
    "Policy",
}


def as_lines(events: list[dict[str, object]]) -> bytes:
    return b"".join(orjson.dumps(event) + b"\n" for event in events)


def normalized(count: int, **options: object) -> list[NormalizedRecord]:
    events = generate_events(count, **options)  # type: ignore[arg-type]
    assert len(events) == count
    records, rejections = normalize_input(as_lines(events), "generated")
    assert rejections == []
    return records


def test_generated_events_all_normalize_and_cover_every_category() -> None:
    records = normalized(3000, seed=7)
    categories = Counter(record["CategoryValue"] for record in records)
    assert set(categories) == EIGHT
    assert len({record["EventKey"] for record in records}) == len(records)


def test_generated_events_carry_the_real_quirks() -> None:
    events = generate_events(3000, seed=3)
    texts = [orjson.dumps(event).decode() for event in events]
    assert any("eventTimestamp" in event for event in events)  # REST form
    assert any(isinstance(event.get("category"), dict) for event in events)
    assert any(event.get("category") == "Write" for event in events)
    assert any("Level" in event and "level" in event for event in events)
    assert any(str(event.get("resultType", "")).endswith(".") for event in events)
    assert any(isinstance(event.get("durationMs"), str) for event in events)
    assert any(str(event.get("resourceId", "")).isupper() for event in events)
    assert any('"responseBody":"{' in text for text in texts)
    assert any('"requestbody":"{' in text for text in texts)
    assert any('"statusMessage":"{' in text for text in texts)
    fractions = {
        len(str(event.get("time") or event.get("eventTimestamp")).split(".")[1]) - 1
        for event in events
    }
    assert {3, 6, 7} <= fractions


def test_generation_is_deterministic_for_a_seed() -> None:
    assert generate_events(500, seed=11) == generate_events(500, seed=11)
    assert generate_events(500, seed=11) != generate_events(500, seed=12)


def test_times_subscriptions_and_order_follow_the_arguments() -> None:
    start = datetime(2024, 3, 1, 12, tzinfo=UTC)
    subscriptions = ["11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"]
    records = normalized(
        800, seed=5, start=start, span=timedelta(hours=1), subscriptions=subscriptions
    )
    times = [record["TimeGenerated"] for record in records]
    assert times == sorted(times)
    assert times[0] >= "2024-03-01T12:00:00"
    assert times[-1] < "2024-03-01T13:00:00"
    assert {record["SubscriptionId"] for record in records} == set(subscriptions)
