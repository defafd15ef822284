"""Every rule of the normalized-record spec, on small inline events, with exact values."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from shared.core.decode import decode_line
from shared.core.eventkey import event_key
from shared.core.normalize import (
    Batch,
    iter_normalized,
    normalize,
    normalize_input,
    normalize_line,
    split,
)
from shared.core.records import COLUMNS, NormalizedRecord, Rejection
from shared.core.timeparse import parse_time

T = "2024-05-01T10:00:00.1234567Z"
UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
EMAIL = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"
NAME = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
SPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/spn"
TENANT = "http://schemas.microsoft.com/identity/claims/tenantid"


def record_of(event: dict[str, Any], fallback_subscription: str = "") -> NormalizedRecord:
    result = normalize(
        event, source="test.json", raw="{}", fallback_subscription=fallback_subscription
    )
    assert not isinstance(result, Rejection), result
    assert list(result) == list(COLUMNS)
    return result


def rec(**fields: Any) -> NormalizedRecord:
    """The record of an event with a time and the given fields."""
    return record_of({"time": T, **fields})


def rejection_of(event: Any) -> Rejection:
    result = normalize(event, source="test.json:3", raw="raw text")
    assert isinstance(result, Rejection), result
    assert (result.source, result.raw) == ("test.json:3", "raw text")
    return result


# -- whole records ---------------------------------------------------------------------------

EH_EVENT: dict[str, Any] = {
    "time": "2019-01-21T22:14:26.9792776Z",
    "resourceId": "/SUBSCRIPTIONS/AB12-CD/RESOURCEGROUPS/RG-ONE/PROVIDERS/MICROSOFT.WEB/SITES/APP",
    "operationName": "MICROSOFT.WEB/SITES/WRITE",
    "category": "Write",
    "resultType": "Success",
    "resultSignature": "Succeeded.Created",
    "durationMs": "20",
    "callerIpAddress": "10.0.0.1",
    "correlationId": "c0ffee00-0000-0000-0000-000000000001",
    "identity": {
        "authorization": {"scope": "/subscriptions/ab12-cd", "action": "Microsoft.Web/sites/write"},
        "claims": {UPN: "ana@contoso.example", TENANT: "TEN-ANT ", "appid": "app-1"},
    },
    "level": "Information",
    "location": "westeurope",
    "properties": {
        "statusCode": "Created",
        "responseBody": '{"id": "x", "tags": {}}',
        "hierarchy": "root/mg/ab12-cd",
    },
    "Stamp": "FDWeb",
}


def test_event_hub_form_whole_record() -> None:
    record = record_of(EH_EVENT)
    expected = {
        "TimeGenerated": "2019-01-21T22:14:26.9792776Z",
        "CategoryValue": "Administrative",
        "OperationNameValue": "microsoft.web/sites/write",
        "OperationName": "MICROSOFT.WEB/SITES/WRITE",
        "ResourceProviderValue": "microsoft.web",
        "ActivityStatusValue": "Succeeded",
        "ActivitySubstatusValue": "Succeeded.Created",
        "Level": "Informational",
        "ResourceId": "/subscriptions/ab12-cd/resourcegroups/rg-one/providers/microsoft.web"
        "/sites/app",
        "SubscriptionId": "ab12-cd",
        "ResourceGroup": "rg-one",
        "Caller": "ana@contoso.example",
        "CallerIpAddress": "10.0.0.1",
        "CorrelationId": "c0ffee00-0000-0000-0000-000000000001",
        "OperationId": "",
        "EventDataId": "",
        "Location": "westeurope",
        "Description": "",
        "DurationMs": 20,
        "Hierarchy": "root/mg/ab12-cd",
        "AadTenantId": "ten-ant",
        "Authorization_d": {
            "scope": "/subscriptions/ab12-cd",
            "action": "Microsoft.Web/sites/write",
        },
        "Claims_d": {UPN: "ana@contoso.example", TENANT: "TEN-ANT ", "appid": "app-1"},
        "Properties_d": {
            "statusCode": "Created",
            "responseBody": {"id": "x", "tags": {}},
            "hierarchy": "root/mg/ab12-cd",
        },
        "HttpRequest": None,
        "AdditionalFields": {"Stamp": "FDWeb"},
        "NormalizationWarnings": [],
    }
    assert {key: value for key, value in record.items() if key != "EventKey"} == expected
    assert record["EventKey"] == event_key(record)


REST_EVENT: dict[str, Any] = {
    "authorization": {"action": "Microsoft.Network/nsg/write", "scope": "/subscriptions/s1/x"},
    "caller": " rob@contoso.example ",
    "channels": "Operation",
    "claims": {UPN: "rob@contoso.example", "appid": "app-2"},
    "correlationId": "corr-1",
    "description": "did a thing",
    "eventDataId": "event-data-1",
    "eventName": {"value": "EndRequest", "localizedValue": "End request"},
    "category": {"value": "Administrative", "localizedValue": "Administrative"},
    "eventTimestamp": "2018-01-29T20:42:31.3810679Z",
    "id": "/subscriptions/s1/resourceGroups/RG/providers/Microsoft.Network/nsg/n1/events/e/ticks/1",
    "level": "Informational",
    "operationId": "op-1",
    "operationName": {
        "value": "Microsoft.Network/networkSecurityGroups/write",
        "localizedValue": "Create or Update Network Security Group",
    },
    "resourceGroupName": "RG",
    "resourceProviderName": {"value": "Microsoft.Network", "localizedValue": "Microsoft.Network"},
    "resourceType": {"value": "Microsoft.Network/nsg", "localizedValue": "Microsoft.Network/nsg"},
    "resourceId": "/subscriptions/S1/resourceGroups/RG/providers/Microsoft.Network/nsg/n1",
    "status": {"value": "Succeeded", "localizedValue": "Succeeded"},
    "subStatus": {"value": "Created", "localizedValue": "Created (HTTP Status Code: 201)"},
    "submissionTimestamp": "2018-01-29T20:42:50.0724829Z",
    "subscriptionId": "S1",
    "properties": {"statusCode": "Created", "requestbody": "[1, 2]"},
    "relatedEvents": [],
}


def test_rest_form_whole_record() -> None:
    record = record_of(REST_EVENT)
    expected: dict[str, Any] = {
        "TimeGenerated": "2018-01-29T20:42:31.3810679Z",
        "CategoryValue": "Administrative",
        "OperationNameValue": "microsoft.network/networksecuritygroups/write",
        "OperationName": "Create or Update Network Security Group",
        "ResourceProviderValue": "microsoft.network",
        "ActivityStatusValue": "Succeeded",
        "ActivitySubstatusValue": "Created",
        "Level": "Informational",
        "ResourceId": "/subscriptions/s1/resourcegroups/rg/providers/microsoft.network/nsg/n1",
        "SubscriptionId": "s1",
        "ResourceGroup": "rg",
        "Caller": "rob@contoso.example",
        "CallerIpAddress": "",
        "CorrelationId": "corr-1",
        "OperationId": "op-1",
        "EventDataId": "event-data-1",
        "Location": "",
        "Description": "did a thing",
        "DurationMs": None,
        "Hierarchy": "",
        "AadTenantId": "",
        "Authorization_d": {
            "action": "Microsoft.Network/nsg/write",
            "scope": "/subscriptions/s1/x",
        },
        "Claims_d": {UPN: "rob@contoso.example", "appid": "app-2"},
        "Properties_d": {"statusCode": "Created", "requestbody": [1, 2]},
        "HttpRequest": None,
        "AdditionalFields": {
            "channels": "Operation",
            "eventName": {"value": "EndRequest", "localizedValue": "End request"},
            "id": REST_EVENT["id"],
            "resourceType": REST_EVENT["resourceType"],
            "submissionTimestamp": "2018-01-29T20:42:50.0724829Z",
            "relatedEvents": [],
            # its localizedValue is in no column, so the object is kept whole
            "subStatus": REST_EVENT["subStatus"],
        },
        "NormalizationWarnings": [],
    }
    assert {key: value for key, value in record.items() if key != "EventKey"} == expected


def test_every_column_present_when_the_event_has_only_a_time() -> None:
    record = rec()
    assert record == {
        "TimeGenerated": T,
        "CategoryValue": "",
        "OperationNameValue": "",
        "OperationName": "",
        "ResourceProviderValue": "",
        "ActivityStatusValue": "",
        "ActivitySubstatusValue": "",
        "Level": "",
        "ResourceId": "",
        "SubscriptionId": "",
        "ResourceGroup": "",
        "Caller": "",
        "CallerIpAddress": "",
        "CorrelationId": "",
        "OperationId": "",
        "EventDataId": "",
        "Location": "",
        "Description": "",
        "DurationMs": None,
        "Hierarchy": "",
        "AadTenantId": "",
        "Authorization_d": None,
        "Claims_d": None,
        "Properties_d": None,
        "HttpRequest": None,
        "AdditionalFields": {},
        "NormalizationWarnings": ["no category"],
        "EventKey": record["EventKey"],
    }


def test_normalize_does_not_change_the_event() -> None:
    for event in (EH_EVENT, REST_EVENT):
        before = copy.deepcopy(event)
        record_of(event)
        assert event == before


# -- TimeGenerated ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00.1234567Z", "2024-05-01T10:00:00.1234567Z"),
        ("2024-05-01T10:00:00.123456789Z", "2024-05-01T10:00:00.1234567Z"),  # truncated
        ("2024-05-01T10:00:00.999999999Z", "2024-05-01T10:00:00.9999999Z"),  # never rounded up
        ("2024-05-01T10:00:00Z", "2024-05-01T10:00:00.0000000Z"),
        ("2024-05-01T10:00:00.5Z", "2024-05-01T10:00:00.5000000Z"),
        ("2024-05-01T10:00:00.991Z", "2024-05-01T10:00:00.9910000Z"),
        ("2024-05-01T10:00:00.522192Z", "2024-05-01T10:00:00.5221920Z"),
        ("2024-05-01T10:00:00.65z", "2024-05-01T10:00:00.6500000Z"),
        ("2024-05-01T10:00:00.1234567", "2024-05-01T10:00:00.1234567Z"),  # no zone: UTC
        ("2024-05-01 10:00:00", "2024-05-01T10:00:00.0000000Z"),
        ("2024-05-01T10:00", "2024-05-01T10:00:00.0000000Z"),
        ("2024-05-01T10:00:00,25Z", "2024-05-01T10:00:00.2500000Z"),
        (" 2024-05-01T10:00:00Z ", "2024-05-01T10:00:00.0000000Z"),
        ("2024-05-01T10:00:00+00:00", "2024-05-01T10:00:00.0000000Z"),
        ("2024-05-01T10:00:00.1234567+05:30", "2024-05-01T04:30:00.1234567Z"),
        ("2024-05-01T10:00:00-08:00", "2024-05-01T18:00:00.0000000Z"),
        ("2024-05-01T10:00:00-0800", "2024-05-01T18:00:00.0000000Z"),
        ("2024-05-01T10:00:00+02", "2024-05-01T08:00:00.0000000Z"),
        ("2024-01-01T01:00:00.5+02:00", "2023-12-31T23:00:00.5000000Z"),  # across a year
        ("2024-02-28T20:00:00-05:00", "2024-02-29T01:00:00.0000000Z"),  # into a leap day
        ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00.0000000Z"),
        ("5/1/2024 10:00:00 AM", "2024-05-01T10:00:00.0000000Z"),
        ("5/1/2024 1:05:09 PM", "2024-05-01T13:05:09.0000000Z"),
        ("5/1/2024 12:00:00 AM", "2024-05-01T00:00:00.0000000Z"),
        ("5/1/2024 12:30:00 PM", "2024-05-01T12:30:00.0000000Z"),
        ("12/31/2023 11:59:59 pm", "2023-12-31T23:59:59.0000000Z"),
        ("5/1/2024 13:00:00", "2024-05-01T13:00:00.0000000Z"),  # 24-hour, no AM/PM
        ("05/01/2024 1:00:00 PM +02:00", "2024-05-01T11:00:00.0000000Z"),
        ("5/1/2024 1:00:00 AM -05:00", "2024-05-01T06:00:00.0000000Z"),
        ("5/1/2024 10:00:00.12345678 AM", "2024-05-01T10:00:00.1234567Z"),
        # ISO 8601's end of a day, and a leap second (kept in the minute it ends, at its
        # last tick: its order among that minute's events stays)
        ("2024-05-01T24:00:00Z", "2024-05-02T00:00:00.0000000Z"),
        ("2024-12-31T24:00:00.000+01:00", "2024-12-31T23:00:00.0000000Z"),
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59.9999999Z"),
        ("2016-12-31T23:59:60.5Z", "2016-12-31T23:59:59.9999999Z"),
        ("2017-01-01T00:59:60+01:00", "2016-12-31T23:59:59.9999999Z"),
    ],
)
def test_parse_time_accepts(text: str, expected: str) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    "value",
    [
        "2024-02-30T10:00:00Z",  # no such day
        "2023-02-29T10:00:00Z",  # not a leap year
        "2024-04-31T10:00:00Z",
        "2024-13-01T10:00:00Z",
        "2024-00-10T10:00:00Z",
        "2024-05-01T25:00:00Z",
        "2024-05-01T24:00:01Z",
        "2024-05-01T24:30:00Z",
        "2024-05-01T24:00:00.1Z",
        "9999-12-31T24:00:00Z",  # no day after it
        "2024-05-01T10:60:00Z",
        "2024-05-01T10:00:60Z",
        "0000-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "2024-05-01T10:00:00+25:00",
        "5/1/2024 13:00:00 PM",
        "5/1/2024 0:30:00 AM",
        "13/1/2024 10:00:00",
        "2/30/2024 10:00:00 AM",
        "2024-05-01",
        "Fri, 21 Jul 2017 01:00:51 GMT",
        "yesterday",
        "",
        "2024-05-01T10:00:00Zjunk",
        "\uff12\uff10\uff12\uff14-05-01T10:00:00Z",  # full-width digits
        None,
        1714557600,
        {"value": "2024-05-01T10:00:00Z"},
    ],
)
def test_parse_time_rejects(value: object) -> None:
    assert parse_time(value) is None


def test_time_from_rest_event_timestamp() -> None:
    record = record_of({"eventTimestamp": "2018-01-29T20:42:31.38Z"})
    assert record["TimeGenerated"] == "2018-01-29T20:42:31.3800000Z"
    assert record["AdditionalFields"] == {}


def test_time_wins_and_a_different_event_timestamp_is_kept() -> None:
    same = rec(eventTimestamp="2024-05-01T12:00:00.1234567+02:00")
    assert same["AdditionalFields"] == {}
    other = rec(eventTimestamp="2024-05-01T09:00:00Z")
    assert other["TimeGenerated"] == T
    assert other["AdditionalFields"] == {"eventTimestamp": "2024-05-01T09:00:00Z"}


def test_unparseable_time_falls_back_to_event_timestamp() -> None:
    record = record_of({"time": "soon", "eventTimestamp": "2024-05-01T10:00:00Z"})
    assert record["TimeGenerated"] == "2024-05-01T10:00:00.0000000Z"
    assert record["AdditionalFields"] == {"time": "soon"}
    assert record["NormalizationWarnings"][:1] == [
        "time 'soon' does not parse; eventTimestamp used"
    ]


# -- rejections ------------------------------------------------------------------------------


def test_rejects_an_event_without_time() -> None:
    assert rejection_of({"category": "Administrative"}).reason == (
        "no time: the event has neither 'time' nor 'eventTimestamp'"
    )
    assert rejection_of({"time": None}).reason.startswith("no time")


def test_get_az_activity_log_output_is_refused_with_what_to_export_instead() -> None:
    # Found from outside: `Get-AzActivityLog | ConvertTo-Json` (PascalCase, not one of the
    # spec's forms) was refused as having no time, though it holds `EventTimestamp`.
    reason = rejection_of({"EventTimestamp": "2024-05-01T10:00:00Z", "Caller": "a@b"}).reason
    assert reason.startswith("no time") and "Get-AzActivityLog" in reason
    assert "az monitor activity-log list" in reason


def test_rejects_an_unparseable_time() -> None:
    assert rejection_of({"time": "2024-02-30T10:00:00Z"}).reason == (
        "no parseable time: time='2024-02-30T10:00:00Z'"
    )
    assert rejection_of({"time": 5, "eventTimestamp": "x"}).reason == (
        "no parseable time: time=5, eventTimestamp='x'"
    )


def test_rejects_a_non_object() -> None:
    assert rejection_of([1, 2]).reason == "not an object: got array"


def test_normalize_input_rejections_not_json_and_not_object() -> None:
    records, rejections = normalize_input(b"not json", "in.txt")
    assert records == []
    assert [(item.source, item.raw) for item in rejections] == [("in.txt", "not json")]
    assert rejections[0].reason.startswith("not JSON: ")
    records, rejections = normalize_input(b'{"records": [1, {"time": "bad"}]}', "hub")
    assert records == []
    assert [(item.source, item.reason) for item in rejections] == [
        ("hub#records[0]", "not an object: got number"),
        ("hub#records[1]", "no parseable time: time='bad'"),
    ]
    assert rejections[1].raw == '{"time": "bad"}'  # as the body holds it, byte for byte


# -- CategoryValue ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Administrative", "Administrative"),
        ("servicehealth", "ServiceHealth"),
        ("RESOURCEHEALTH", "ResourceHealth"),
        ("Alert", "Alert"),
        ("autoscale", "Autoscale"),
        ("Recommendation", "Recommendation"),
        ("security", "Security"),
        ("Policy", "Policy"),
        (" Policy ", "Policy"),
        ("Write", "Administrative"),
        ("delete", "Administrative"),
        ("Action", "Administrative"),
    ],
)
def test_category_names(given: str, expected: str) -> None:
    record = rec(category=given)
    assert record["CategoryValue"] == expected
    assert record["NormalizationWarnings"] == []
    assert record["AdditionalFields"] == {}


def test_event_category_wins_over_category() -> None:
    record = rec(category="Administrative", properties={"eventCategory": "policy"})
    assert record["CategoryValue"] == "Policy"
    assert record["AdditionalFields"] == {"category": "Administrative"}  # it said another thing
    legacy = rec(category="Write", properties={"eventCategory": "Administrative"})
    assert legacy["CategoryValue"] == "Administrative"
    assert legacy["AdditionalFields"] == {}


def test_event_category_that_names_none_is_passed_over() -> None:
    record = rec(category="Alert", properties={"eventCategory": "Whatever"})
    assert record["CategoryValue"] == "Alert"
    assert record["NormalizationWarnings"] == []


def test_unknown_category_kept_as_received_with_a_warning() -> None:
    record = rec(category="AuditEvent")
    assert record["CategoryValue"] == "AuditEvent"
    assert record["NormalizationWarnings"] == ["unknown category 'AuditEvent'"]


def test_rest_category_object() -> None:
    record = rec(category={"value": "ServiceHealth", "localizedValue": "Service Health"})
    assert record["CategoryValue"] == "ServiceHealth"
    # "Service Health" is in no column: the object is kept.
    assert record["AdditionalFields"] == {
        "category": {"value": "ServiceHealth", "localizedValue": "Service Health"}
    }
    plain = rec(category={"value": "Policy", "localizedValue": "Policy"})
    assert plain["CategoryValue"] == "Policy"
    assert plain["AdditionalFields"] == {}


# -- OperationNameValue, OperationName, ResourceProviderValue --------------------------------


def test_operation_name_trimmed_and_lowered_but_kept_as_received() -> None:
    record = rec(operationName="  Microsoft.Compute/virtualMachines/START/action ")
    assert record["OperationNameValue"] == "microsoft.compute/virtualmachines/start/action"
    assert record["OperationName"] == "  Microsoft.Compute/virtualMachines/START/action "
    assert record["ResourceProviderValue"] == "microsoft.compute"


def test_rest_operation_name_without_localized_value() -> None:
    record = rec(operationName={"value": "Microsoft.Web/sites/write"})
    assert record["OperationName"] == "Microsoft.Web/sites/write"
    assert record["OperationNameValue"] == "microsoft.web/sites/write"
    assert record["AdditionalFields"] == {}


def test_provider_from_the_resource_id_when_the_operation_has_no_slash() -> None:
    record = rec(
        operationName="Add member to role (PIM activation)",
        resourceId="/SUBSCRIPTIONS/S/RESOURCEGROUPS/G/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/V"
        "/providers/Microsoft.Insights/diagnosticSettings/d",
    )
    assert record["ResourceProviderValue"] == "microsoft.insights"  # the last one


def test_provider_from_rest_resource_provider_name_last() -> None:
    record = rec(
        operationName="Something happened",
        resourceId="/subscriptions/s",
        resourceProviderName={"value": "Microsoft.Sql", "localizedValue": "Microsoft.Sql"},
    )
    assert record["ResourceProviderValue"] == "microsoft.sql"
    assert record["AdditionalFields"] == {}


def test_rest_resource_provider_that_differs_is_kept() -> None:
    record = rec(
        operationName="Microsoft.Authorization/policies/audit/action",
        resourceProviderName={"value": "Microsoft.Sql", "localizedValue": "Microsoft SQL"},
    )
    assert record["ResourceProviderValue"] == "microsoft.authorization"
    assert record["AdditionalFields"] == {
        "resourceProviderName": {"value": "Microsoft.Sql", "localizedValue": "Microsoft SQL"}
    }


# -- ActivityStatusValue, ActivitySubstatusValue ---------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Success", "Succeeded"),
        ("succeeded", "Succeeded"),
        ("Succeeded.", "Succeeded"),
        ("Start", "Started"),
        ("Started.", "Started"),
        ("Accept", "Accepted"),
        ("ACCEPTED", "Accepted"),
        ("Failure", "Failed"),
        ("failed.", "Failed"),
        (" Success ", "Succeeded"),
        ("Active", "Active"),
        (" Resolved ", "Resolved"),
        ("Updated.", "Updated."),
        ("", ""),
    ],
)
def test_status_mapping(given: str, expected: str) -> None:
    assert rec(resultType=given)["ActivityStatusValue"] == expected
    assert rec(status={"value": given, "localizedValue": given})["ActivityStatusValue"] == expected


def test_substatus() -> None:
    assert rec(resultSignature=" Succeeded.Created ")["ActivitySubstatusValue"] == (
        "Succeeded.Created"
    )
    assert rec(subStatus={"value": "OK", "localizedValue": "OK"})["ActivitySubstatusValue"] == "OK"
    null = rec(subStatus={"value": None})
    assert null["ActivitySubstatusValue"] == ""
    assert null["AdditionalFields"] == {}


# -- Level -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"level": "Critical"}, "Critical"),
        ({"level": "error"}, "Error"),
        ({"level": "Warning"}, "Warning"),
        ({"level": "Information"}, "Informational"),
        ({"level": "Informational"}, "Informational"),
        ({"level": "VERBOSE"}, "Verbose"),
        ({"level": 1}, "Critical"),
        ({"level": 3}, "Warning"),
        ({"Level": 2}, "Error"),
        ({"Level": 4}, "Informational"),
        ({"Level": 5}, "Verbose"),
        ({"Level": "Warning"}, "Warning"),
        ({"level": "Warning", "Level": 3}, "Warning"),
        ({}, ""),
    ],
)
def test_level(fields: dict[str, Any], expected: str) -> None:
    record = rec(**fields)
    assert record["Level"] == expected
    assert record["NormalizationWarnings"] == ["no category"]
    assert record["AdditionalFields"] == {}


def test_level_string_wins_over_a_disagreeing_number() -> None:
    record = rec(Level=5, level="Informational")
    assert record["Level"] == "Informational"
    assert record["AdditionalFields"] == {"Level": 5}
    assert record["NormalizationWarnings"] == [
        "no category",
        "levels disagree: level='Informational' is Informational, Level=5 is Verbose; "
        "Informational kept",
    ]


def test_unknown_level() -> None:
    record = rec(level="Loud")
    assert record["Level"] == ""
    assert record["AdditionalFields"] == {"level": "Loud"}
    assert record["NormalizationWarnings"] == ["no category", "unknown level level='Loud'"]
    numbered = rec(level="Loud", Level=2)
    assert numbered["Level"] == "Error"
    assert numbered["AdditionalFields"] == {"level": "Loud"}


# -- ResourceId, SubscriptionId, ResourceGroup -----------------------------------------------


def test_resource_id_trimmed_and_lowered() -> None:
    record = rec(resourceId=" /SUBSCRIPTIONS/AbC/RESOURCEGROUPS/My-RG/PROVIDERS/X.Y/Z/N ")
    assert record["ResourceId"] == "/subscriptions/abc/resourcegroups/my-rg/providers/x.y/z/n"
    assert record["SubscriptionId"] == "abc"
    assert record["ResourceGroup"] == "my-rg"


def test_malformed_singular_subscription_segment() -> None:
    assert rec(resourceId="/subscription/ABC/resourceGroups/rg")["SubscriptionId"] == "abc"


def test_subscription_precedence() -> None:
    from_properties = rec(resourceId="/RESOURCE_ID", properties={"subscriptionId": "P-SUB"})
    assert from_properties["SubscriptionId"] == "p-sub"
    any_case = rec(properties={"SubscriptionID": None, "subscriptionid": "Q"})
    assert any_case["SubscriptionId"] == "q"
    rest = rec(subscriptionId="REST-SUB")
    assert rest["SubscriptionId"] == "rest-sub"
    assert rest["AdditionalFields"] == {}
    both = rec(resourceId="/subscriptions/ID-SUB", subscriptionId="id-sub")
    assert both["SubscriptionId"] == "id-sub"
    assert both["AdditionalFields"] == {}
    differing = rec(resourceId="/subscriptions/ID-SUB", subscriptionId="other")
    assert differing["SubscriptionId"] == "id-sub"
    assert differing["AdditionalFields"] == {"subscriptionId": "other"}


def test_subscription_from_the_blob_path_last() -> None:
    event = {"time": T, "resourceId": "/RESOURCE_ID"}
    record = record_of(event, fallback_subscription="PATH-SUB")
    assert record["SubscriptionId"] == "path-sub"
    assert record["NormalizationWarnings"][-1] == "SubscriptionId taken from the blob path"
    # The key is the event's own: the same whichever path brought it.
    assert record["EventKey"] == record_of(event)["EventKey"]
    own = record_of({"time": T, "resourceId": "/subscriptions/mine"}, "PATH-SUB")
    assert own["SubscriptionId"] == "mine"


def test_resource_group_from_rest_when_the_id_has_none() -> None:
    record = rec(resourceId="/subscriptions/s", resourceGroupName="My-RG")
    assert record["ResourceGroup"] == "my-rg"
    assert record["AdditionalFields"] == {}


# -- Caller, CallerIpAddress, CorrelationId, OperationId, EventDataId -------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"caller": " someone@x ", "claims": {UPN: "upn@x"}}, "someone@x"),
        ({"identity": {"claims": {UPN: "upn@x", EMAIL: "mail@x", NAME: "name@x"}}}, "upn@x"),
        ({"identity": {"claims": {EMAIL: "mail@x", NAME: "name@x", SPN: "spn"}}}, "mail@x"),
        ({"identity": {"claims": {NAME: " name@x", SPN: "spn", "appid": "a"}}}, "name@x"),
        (
            {"identity": {"claims": {SPN: "Microsoft.Insights/alertRules", "appid": "a"}}},
            "Microsoft.Insights/alertRules",
        ),
        ({"identity": {"claims": {"appid": "app-guid", "name": "Not Used"}}}, "app-guid"),
        ({"identity": {"claims": {UPN: "  ", "appid": "app-guid"}}}, "app-guid"),
        ({"caller": "", "claims": {EMAIL: "Microsoft.Advisor"}}, "Microsoft.Advisor"),
        ({"identity": {"claims": {"name": "John"}}}, ""),
    ],
)
def test_caller(fields: dict[str, Any], expected: str) -> None:
    assert rec(**fields)["Caller"] == expected


@pytest.mark.parametrize(
    "address", ["10.1.2.3", "2001:db8::1", "[2001:db8::1]:443", "10.1.2.3:51234", "10.0.0.0/24"]
)
def test_caller_ip_address_kept(address: str) -> None:
    assert rec(callerIpAddress=f" {address} ")["CallerIpAddress"] == address


def test_ids_trimmed() -> None:
    record = rec(correlationId=" c-1 ", operationId=" o-1 ", eventDataId=" e-1 ")
    assert (record["CorrelationId"], record["OperationId"], record["EventDataId"]) == (
        "c-1",
        "o-1",
        "e-1",
    )
    assert rec(properties={"eventDataId": " e-2"})["EventDataId"] == "e-2"
    assert rec(eventDataId="top", properties={"eventDataId": "inner"})["EventDataId"] == "top"


# -- Location, Description, DurationMs, Hierarchy --------------------------------------------


def test_location_as_received() -> None:
    assert rec(location=" West Europe")["Location"] == " West Europe"


def test_description() -> None:
    assert rec(resultDescription="result", description="desc")["Description"] == "result"
    assert rec(resultDescription="result", description="desc")["AdditionalFields"] == {
        "description": "desc"
    }
    assert rec(description="desc\r\nmore")["Description"] == "desc\r\nmore"
    empty = rec(resultDescription="", description="desc")
    assert empty["Description"] == "desc"
    assert empty["AdditionalFields"] == {}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (2826, 2826),
        ("20", 20),
        ("0", 0),
        (0, 0),
        (" 78 ", 78),
        (12.0, 12),
        (None, None),
        ("", None),
        # Numeric strings as numbers would be read (found from outside: "20.0" was refused
        # while 20.0 was taken).
        ("20.0", 20),
        ("1e3", 1000),
        ("+20", 20),
        ("-0.0", 0),
        ("2.5E1", 25),
    ],
)
def test_duration(given: object, expected: int | None) -> None:
    record = rec(durationMs=given)
    assert record["DurationMs"] == expected
    assert record["AdditionalFields"] == {}


@pytest.mark.parametrize(
    "given",
    ["abc", "1.5", 1.5, True, "1_000", "99999999999999999999", [1], "1e999999999", "NaN", "1e"],
)
def test_duration_not_a_whole_number(given: object) -> None:
    record = rec(durationMs=given)
    assert record["DurationMs"] is None
    assert record["AdditionalFields"] == {"durationMs": given}
    assert record["NormalizationWarnings"][-1].startswith("durationMs ")


def test_hierarchy() -> None:
    assert rec(hierarchy="t/mg")["Hierarchy"] == "t/mg"
    assert rec(properties={"hierarchy": "t/mg/sub"})["Hierarchy"] == "t/mg/sub"


# -- AadTenantId -----------------------------------------------------------------------------


def test_tenant_precedence() -> None:
    claims = {TENANT: "CLAIM-T ", "tid": "tid-t"}
    assert rec(tenantId="TOP", properties={"tenantId": "p"}, claims=claims)["AadTenantId"] == (
        "top"
    )
    assert rec(properties={"TenantID": "PROP"}, claims=claims)["AadTenantId"] == "prop"
    assert rec(claims=claims)["AadTenantId"] == "claim-t"
    assert rec(identity={"claims": {"tid": "TID-T"}})["AadTenantId"] == "tid-t"


# -- Authorization_d, Claims_d ---------------------------------------------------------------


def test_identity_claims_and_authorization() -> None:
    record = rec(identity={"authorization": {"scope": "s"}, "claims": {"appid": "a"}})
    assert record["Authorization_d"] == {"scope": "s"}
    assert record["Claims_d"] == {"appid": "a"}
    assert record["AdditionalFields"] == {}


def test_identity_claim_singular() -> None:
    record = rec(identity={"claim": {"oid": "607964b6"}})
    assert record["Claims_d"] == {"oid": "607964b6"}
    assert record["AdditionalFields"] == {}


def test_flat_identity_is_the_claims() -> None:
    record = rec(identity={"authorization": {"scope": "s"}, UPN: "u@x", "appid": "a"})
    assert record["Claims_d"] == {UPN: "u@x", "appid": "a"}
    assert record["Authorization_d"] == {"scope": "s"}
    assert record["Caller"] == "u@x"


def test_identity_string_holding_json() -> None:
    flat = rec(identity=orjson.dumps({UPN: "u@x"}).decode())
    assert flat["Claims_d"] == {UPN: "u@x"}
    assert flat["Caller"] == "u@x"
    wrapped = rec(identity=orjson.dumps({"claims": {"appid": "a"}, "authorization": {}}).decode())
    assert wrapped["Claims_d"] == {"appid": "a"}
    assert wrapped["Authorization_d"] == {}


def test_identity_string_not_json_goes_to_additional_fields() -> None:
    record = rec(identity="John Doe")
    assert record["Claims_d"] is None
    assert record["AdditionalFields"] == {"identity": "John Doe"}


def test_identity_of_another_type_is_kept_with_a_warning() -> None:
    record = rec(category="Alert", identity=[1])
    assert record["AdditionalFields"] == {"identity": [1]}
    assert record["NormalizationWarnings"] == ["identity is a JSON array, not an object"]


def test_identity_fields_beside_the_claims_are_kept() -> None:
    record = rec(category="Alert", identity={"claims": {"appid": "a"}, "extra": 1})
    assert record["Claims_d"] == {"appid": "a"}
    assert record["AdditionalFields"] == {"identity": {"extra": 1}}


def test_rest_claims_and_authorization() -> None:
    record = rec(claims={"appid": "a"}, authorization={"scope": "s"})
    assert record["Claims_d"] == {"appid": "a"}
    assert record["Authorization_d"] == {"scope": "s"}
    assert record["AdditionalFields"] == {}


def test_identity_claims_win_over_differing_rest_claims() -> None:
    record = rec(identity={"claims": {"appid": "a"}}, claims={"appid": "b"})
    assert record["Claims_d"] == {"appid": "a"}
    assert record["AdditionalFields"] == {"claims": {"appid": "b"}}


# -- Properties_d, HttpRequest ---------------------------------------------------------------


def test_properties_json_strings_parsed() -> None:
    properties = {
        "responseBody": '{"id": "/x", "n": 1}',
        "requestbody": ' [{"a": 1}]',
        "statusMessage": "some plain text status message",
        "count": "3",
        "flag": "true",
        "empty": "",
        "number": 0.0,
        "nested": {"inner": '{"not": "parsed"}'},
        "CallerInfo": '[{"CallerIdentityType":"UPN","CallerIdentityValue":""}]',
    }
    record = rec(category="Alert", properties=properties)
    assert record["Properties_d"] == {
        "responseBody": {"id": "/x", "n": 1},
        "requestbody": [{"a": 1}],
        "statusMessage": "some plain text status message",
        "count": "3",
        "flag": "true",
        "empty": "",
        "number": 0.0,
        "nested": {"inner": '{"not": "parsed"}'},
        "CallerInfo": [{"CallerIdentityType": "UPN", "CallerIdentityValue": ""}],
    }
    assert record["NormalizationWarnings"] == []
    assert properties["responseBody"] == '{"id": "/x", "n": 1}'  # the event is untouched


def test_properties_string_that_looks_like_json_but_is_not() -> None:
    record = rec(
        category="Alert", properties={"policies": '[{"a": "line\nbreak"}]', "x": "[Count]"}
    )
    assert record["Properties_d"] == {"policies": '[{"a": "line\nbreak"}]', "x": "[Count]"}
    warnings = record["NormalizationWarnings"]
    assert len(warnings) == 2
    assert warnings[0].startswith("properties.policies looks like JSON but does not parse: ")
    assert warnings[1].startswith("properties.x looks like JSON but does not parse: ")


def test_properties_given_as_a_json_string_or_a_non_object() -> None:
    assert rec(properties='{"a": "{}"}')["Properties_d"] == {"a": {}}
    record = rec(category="Alert", properties="plain")
    assert record["Properties_d"] is None
    assert record["AdditionalFields"] == {"properties": "plain"}
    assert record["NormalizationWarnings"] == ["properties is a JSON string, not an object"]


def test_http_request() -> None:
    request = {"clientRequestId": "r", "clientIpAddress": "1.2.3.4", "method": "PUT"}
    assert rec(httpRequest=request)["HttpRequest"] == request
    assert rec(httpRequest=orjson.dumps(request).decode())["HttpRequest"] == request


# -- AdditionalFields and wrong types --------------------------------------------------------


def test_unknown_fields_go_to_additional_fields_unchanged() -> None:
    extra = {"RoleLocation": "France South", "Stamp": "FDWeb", "future": {"a": [1, None]}}
    assert rec(**extra)["AdditionalFields"] == extra


def test_values_of_the_wrong_type_are_kept_not_dropped() -> None:
    record = rec(category="Alert", correlationId={"id": 1}, location=["x"], operationId=7)
    assert record["CorrelationId"] == ""
    assert record["Location"] == ""
    assert record["OperationId"] == "7"  # a number is text enough
    assert record["AdditionalFields"] == {"correlationId": {"id": 1}, "location": ["x"]}
    assert record["NormalizationWarnings"] == [
        "correlationId is a JSON object, not a string; kept in AdditionalFields",
        "location is a JSON array, not a string; kept in AdditionalFields",
    ]


def test_nothing_raises_on_hostile_field_types() -> None:
    hostile: list[Any] = [None, True, 0, -1.5, "", "{", "[", {}, [], {"value": {}}, [{}]]
    for value in hostile:
        event = {field: value for field in _ALL_RULE_FIELDS}
        event["time"] = T
        result = normalize(event, source="s", raw="r")
        assert not isinstance(result, Rejection), (value, result)
        assert list(result) == list(COLUMNS)
        orjson.dumps(result)


_ALL_RULE_FIELDS = [
    "eventTimestamp", "category", "operationName", "resourceProviderName", "resultType",
    "status", "resultSignature", "subStatus", "level", "Level", "resourceId", "subscriptionId",
    "resourceGroupName", "caller", "callerIpAddress", "correlationId", "operationId",
    "eventDataId", "location", "resultDescription", "description", "durationMs", "hierarchy",
    "tenantId", "identity", "authorization", "claims", "properties", "httpRequest",
]  # fmt: skip


# -- EventKey --------------------------------------------------------------------------------


def test_event_key_is_32_hex_and_matches_event_key() -> None:
    record = record_of(EH_EVENT)
    assert len(record["EventKey"]) == 32
    assert int(record["EventKey"], 16) >= 0
    assert event_key(record) == record["EventKey"]


def test_event_key_ignores_warnings_and_the_key_itself() -> None:
    record = record_of(EH_EVENT)
    changed = dict(record, NormalizationWarnings=["something"], EventKey="0" * 32)
    assert event_key(changed) == record["EventKey"]


def test_event_key_differs_when_a_column_differs() -> None:
    record = record_of(EH_EVENT)
    for column in ("CorrelationId", "Properties_d", "AdditionalFields", "DurationMs"):
        changed = dict(record, **{column: "different"})
        assert event_key(changed) != record["EventKey"], column


def test_same_event_same_key_across_forms() -> None:
    line = orjson.dumps(EH_EVENT)
    pretty = orjson.dumps({"records": [EH_EVENT]}, option=orjson.OPT_INDENT_2)
    reordered = orjson.dumps(dict(reversed(list(EH_EVENT.items()))))
    keys: set[str] = set()
    for data in (line, pretty, reordered, b"\n" + line + b"\n\n" + line):
        records, rejections = normalize_input(data, "x")
        assert rejections == []
        keys.update(record["EventKey"] for record in records)
    assert len(keys) == 1


# ---------------------------------------------------------------------------------------------
# The one batch loop: normalize_input, iter_normalized and normalize_line agree


def decode_and_normalize(line: bytes, source: str, subscription: str = "") -> list[Any]:
    """What the blob indexer did per line before normalize_line: decode_line, then normalize."""
    return [
        item
        if isinstance(item, Rejection)
        else normalize(item.event, source=item.source, raw=item, fallback_subscription=subscription)
        for item in decode_line(line, source)
    ]


@pytest.mark.parametrize(
    "line",
    [
        orjson.dumps(EH_EVENT),
        b" " + orjson.dumps(EH_EVENT) + b"\r\n",
        b"\xef\xbb\xbf" + orjson.dumps(EH_EVENT),
        orjson.dumps({"records": [EH_EVENT, {"time": "never"}, 7]}),
        orjson.dumps({k: v for k, v in EH_EVENT.items() if k != "resourceId"}),
        orjson.dumps([EH_EVENT]),
        b'{"time": "2024-05-01T10:00:00Z", "caf\xe9": 1}',
        b"{not json",
        b"  ",
        b"",
    ],
)
def test_normalize_line_is_decode_line_then_normalize(line: bytes) -> None:
    for subscription in ("", "SUB-FROM-PATH"):
        expected = decode_and_normalize(line, "blob.json:3", subscription)
        assert list(normalize_line(line, "blob.json:3", subscription)) == expected


def test_split_keeps_input_order_within_records_and_rejections() -> None:
    lines = [
        orjson.dumps(dict(EH_EVENT, correlationId="a")),
        b"{bad",
        orjson.dumps(dict(EH_EVENT, correlationId="b")),
        b'{"time": "no"}',
        orjson.dumps(dict(EH_EVENT, correlationId="c")),
    ]
    data = b"\n".join(lines)
    batch = split(iter_normalized(data, "f.json"))
    assert isinstance(batch, Batch)
    assert [record["CorrelationId"] for record in batch.records] == ["a", "b", "c"]
    assert [rejection.source for rejection in batch.rejections] == ["f.json:2", "f.json:4"]
    records, rejections = normalize_input(data, "f.json")  # a Batch reads as the old tuple
    assert normalize_input(data, "f.json") == (records, rejections) == batch
    assert list(iter_normalized(data, "f.json")) == [
        batch.records[0],
        batch.rejections[0],
        batch.records[1],
        batch.rejections[1],
        batch.records[2],
    ]
