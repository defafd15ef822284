"""An event's identity (EventKey) comes from its own content, exactly: whichever path brought
it, whatever the delivery context says, and with every number as it was sent."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from shared import settings as names
from shared.adapters.blobs import ArchiveBlob
from shared.bootstrap import Runtime, runtime
from shared.core.normalize import normalize_input
from shared.settings import Settings
from shared.tools.local_host import Invocation, app_settings, event_hub_batch, registered
from tests.archive_view import archived_keys
from tests.events import activity_event, envelope, jsonl
from tests.test_blobindex import append_blob, pt1h_name

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
PATH_SUBSCRIPTION = "11111111-2222-4333-8444-555555555555"
OTHER_PATH_SUBSCRIPTION = "99999999-2222-4333-8444-555555555555"


def tenant_level_events() -> list[dict[str, Any]]:
    """Records with no subscription in them, as real Activity Log exports carry."""
    sign_in = activity_event(1, resourceId=f"/tenants/{TENANT}/providers/Microsoft.aadiam")
    sign_in.update(category="SignInLogs", operationName="Sign-in activity", tenantId=TENANT)
    audit = activity_event(2, resourceId=f"/tenants/{TENANT}/providers/Microsoft.aadiam")
    audit.update(category="AuditLogs", operationName="Add member to group")
    management_group = activity_event(
        3,
        resourceId="/providers/Microsoft.Management/managementGroups/mg-root",
        operationName="Microsoft.Management/managementGroups/write",
    )
    no_resource = activity_event(4)
    del no_resource["resourceId"]
    return [sign_in, audit, management_group, no_resource]


def assert_archived_once(app: Runtime, data: bytes) -> None:
    """Each event of `data` is in the archive exactly once."""
    expected = sorted(record["EventKey"] for record in normalize_input(data, "x")[0])
    assert archived_keys(app) == expected


def through_event_hub(settings: Settings, bodies: list[bytes]) -> Runtime:
    with app_settings(
        {
            names.STORAGE_CONNECTION: settings.storage_connection,
            names.STORE_PREFIX: settings.store_prefix,
        }
    ):
        registered("activity_events")(event_hub_batch(bodies), Invocation("activity_events"))
        return runtime()


def through_blob(app: Runtime, subscription: str, data: bytes) -> None:
    name = pt1h_name(subscription=subscription)
    append_blob(app, name).append_block(data)
    app.blob_indexer.index(ArchiveBlob(app.stores.archive, name))


@pytest.mark.parametrize("blob_first", [False, True])
def test_an_event_without_a_subscription_is_indexed_once_by_both_paths(
    settings: Settings, archive_app: Runtime, blob_first: bool
) -> None:
    app = archive_app
    events = tenant_level_events()
    if blob_first:
        through_blob(app, PATH_SUBSCRIPTION, jsonl(events))
    through_event_hub(settings, [envelope(events)])
    if not blob_first:
        through_blob(app, PATH_SUBSCRIPTION, jsonl(events))
    # The same tenant-level event also lands in another subscription's blobs.
    through_blob(app, OTHER_PATH_SUBSCRIPTION, jsonl(events))
    assert_archived_once(app, envelope(events))


def test_the_subscription_a_blob_path_names_fills_the_column_but_not_the_key() -> None:
    events = tenant_level_events()
    alone = normalize_input(envelope(events), "eventhub")[0]
    from_path = normalize_input(jsonl(events), "blob", PATH_SUBSCRIPTION)[0]
    from_other = normalize_input(jsonl(events), "blob", OTHER_PATH_SUBSCRIPTION)[0]
    assert [r["EventKey"] for r in alone] == [r["EventKey"] for r in from_path]
    assert [r["EventKey"] for r in from_path] == [r["EventKey"] for r in from_other]
    assert {r["SubscriptionId"] for r in alone} == {""}
    assert {r["SubscriptionId"] for r in from_path} == {PATH_SUBSCRIPTION}


BIG = 123456789012345678901234567890
# Two numbers that one float cannot tell apart, each next to the other.
NEAR_PAIRS = [
    (BIG, BIG + 1),
    (2**64, 2**64 + 1),
    (-(2**63) - 1, -(2**63) - 2),
]


def with_number(number_text: str, where: str) -> bytes:
    event = orjson.dumps(activity_event(1)).decode()
    if where == "top":
        return f'{event[:-1]},"sequence":{number_text}}}'.encode()
    if where == "properties":
        return event.replace('"statusCode"', f'"bigValue":{number_text},"statusCode"').encode()
    # Inside a JSON string in properties, which the normalizer parses.
    return event.replace('{\\"id\\": \\"vm\\"}', f'{{\\"id\\": {number_text}}}').encode()


@pytest.mark.parametrize("where", ["top", "properties", "nested"])
@pytest.mark.parametrize(("first", "second"), NEAR_PAIRS)
def test_numbers_beyond_64_bits_keep_events_apart(first: int, second: int, where: str) -> None:
    one = with_number(str(first), where)
    other = with_number(str(second), where)
    (record_one,), rejected = normalize_input(one, "x")
    (record_other,), _ = normalize_input(other, "x")
    assert rejected == []
    assert record_one["EventKey"] != record_other["EventKey"]
    # Kept exactly, as decimal text.
    assert str(first) in orjson.dumps(record_one).decode()


def test_decimals_no_float_holds_keep_events_apart() -> None:
    one = with_number("0.1000000000000000000001", "top")
    other = with_number("0.1", "top")
    keys = {normalize_input(data, "x")[0][0]["EventKey"] for data in (one, other)}
    assert len(keys) == 2


def test_a_number_as_text_and_the_same_number_are_different_events() -> None:
    number = with_number(str(BIG), "top")
    text = with_number(f'"{BIG}"', "top")
    keys = {normalize_input(data, "x")[0][0]["EventKey"] for data in (number, text)}
    assert len(keys) == 2


def test_ordinary_numbers_keep_their_keys_and_types() -> None:
    data = with_number("12345", "top")
    (record,), _ = normalize_input(data, "x")
    assert record["AdditionalFields"]["sequence"] == 12345
    (again,), _ = normalize_input(with_number("12345.5", "top"), "x")
    assert again["AdditionalFields"]["sequence"] == 12345.5


def test_a_huge_number_is_kept_not_a_crash() -> None:
    digits = "9" * 6000  # past Python's int-from-text limit
    records, rejected = normalize_input(with_number(digits, "top"), "x")
    assert len(records) + len(rejected) == 1


def test_big_numbers_by_both_paths_are_two_events_indexed_once_each(
    settings: Settings, archive_app: Runtime
) -> None:
    app = archive_app
    bodies = [with_number(str(first), "properties") for first, _ in NEAR_PAIRS]
    bodies += [with_number(str(second), "properties") for _, second in NEAR_PAIRS]
    through_event_hub(settings, [b"\n".join(bodies)])
    through_blob(app, PATH_SUBSCRIPTION, b"\n".join(bodies) + b"\n")
    assert_archived_once(app, b"\n".join(bodies))
    assert len(archived_keys(app)) == len(bodies)
