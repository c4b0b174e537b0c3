"""The CRM sandbox's sObject rules: the fields each sObject has, Salesforce ids and datetimes,
and the validation of an Account or Opportunity write (engine.sandbox.crm serves them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.sandbox.common import JSON, bad_request, is_number, money, parse_date, utcnow

CLOSED_WON = "Closed Won"
OPPORTUNITY_TYPES = ("New Business", "Renewal", "Amendment")

ACCOUNT_FIELDS = (
    "Name",
    "Type",
    "Industry",
    "Website",
    "Phone",
    "BillingStreet",
    "BillingCity",
    "BillingState",
    "BillingPostalCode",
    "BillingCountry",
    "ShippingStreet",
    "ShippingCity",
    "ShippingPostalCode",
    "ShippingCountry",
    "ParentId",
    "CurrencyIsoCode",
    "Status__c",
    "Renewal_Status__c",
)
OPPORTUNITY_FIELDS = (
    "AccountId",
    "Name",
    "Type",
    "StageName",
    "CloseDate",
    "CurrencyIsoCode",
    "Amount",
    "Probability",
    "Description",
    "Term__c",
    "Region__c",
    "OpportunityLineItems",
)
LINE_ITEM_FIELDS = ("ProductCode", "Name", "Quantity", "UnitPrice", "TotalPrice", "Description")
READ_ONLY = ("Id", "CreatedDate", "LastModifiedDate", "IsClosed", "IsWon", "attributes")

_ID_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def salesforce_id(prefix: str, number: int) -> str:
    """An 18-character Salesforce id: 15 characters plus the case-checksum suffix."""
    base = f"{prefix}Dn000{number:07d}"
    suffix = ""
    for chunk in range(3):
        bits = sum(1 << i for i, ch in enumerate(base[chunk * 5 : chunk * 5 + 5]) if ch.isupper())
        suffix += _ID_SUFFIX[bits]
    return base + suffix


def sf_datetime() -> str:
    """Salesforce's datetime format, e.g. ``2024-05-01T12:00:00.000+0000``."""
    return utcnow().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"



def check_fields(sobject: str, body: JSON) -> None:
    allowed = ACCOUNT_FIELDS if sobject == "Account" else OPPORTUNITY_FIELDS
    for name in body:
        if name in READ_ONLY:
            raise bad_request(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {name}.",
                fields=[name],
            )
        if name not in allowed and not name.endswith("__c"):
            raise bad_request(
                "INVALID_FIELD",
                f"No such column '{name}' on sobject of type {sobject}",
                fields=[name],
            )


def validate_account(changes: JSON, current: JSON | None, accounts: JSON) -> None:
    merged = {**(current or {}), **changes}
    if not isinstance(merged.get("Name"), str) or not merged["Name"].strip():
        raise bad_request(
            "REQUIRED_FIELD_MISSING", "Required fields are missing: [Name]", fields=["Name"]
        )
    parent = changes.get("ParentId")
    if parent is not None and parent not in accounts:
        raise bad_request(
            "INVALID_CROSS_REFERENCE_KEY",
            f"invalid cross reference id: ParentId {parent}",
            fields=["ParentId"],
        )
    if current is not None and parent is not None and parent == current["Id"]:
        raise bad_request("CIRCULAR_DEPENDENCY", "an account cannot be its own parent")


def validate_opportunity(changes: JSON, current: JSON | None, accounts: JSON) -> None:
    merged = {**(current or {}), **changes}
    missing = [
        name
        for name in ("Name", "StageName", "CloseDate")
        if not isinstance(merged.get(name), str) or not merged[name].strip()
    ]
    if missing:
        raise bad_request(
            "REQUIRED_FIELD_MISSING",
            f"Required fields are missing: [{', '.join(missing)}]",
            fields=missing,
        )
    if "CloseDate" in changes:
        parse_date(changes["CloseDate"], "CloseDate", "INVALID_TYPE_ON_FIELD_IN_RECORD")
    account = changes.get("AccountId")
    if account is not None and account not in accounts:
        raise bad_request(
            "INVALID_CROSS_REFERENCE_KEY",
            f"invalid cross reference id: AccountId {account}",
            fields=["AccountId"],
        )
    kind = changes.get("Type")
    if kind is not None and kind not in OPPORTUNITY_TYPES:
        raise bad_request(
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"Type: bad value for restricted picklist field: {kind}",
            fields=["Type"],
        )
    currency = changes.get("CurrencyIsoCode")
    if currency is not None and not (
        isinstance(currency, str) and len(currency) == 3 and currency.isupper()
    ):
        raise bad_request(
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"Opportunity Currency: bad value for restricted picklist field: {currency}",
            fields=["CurrencyIsoCode"],
        )
    for name in ("Amount", "Term__c", "Probability"):
        value = changes.get(name)
        if value is not None and not is_number(value):
            raise bad_request(
                "INVALID_TYPE_ON_FIELD_IN_RECORD",
                f"{name}: value not of required type: {value!r}",
                fields=[name],
            )


def line_items(raw: Any, next_id: Callable[[], int]) -> list[JSON]:
    if not isinstance(raw, list):
        raise bad_request(
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            "OpportunityLineItems must be a list",
            fields=["OpportunityLineItems"],
        )
    items = []
    for index, item in enumerate(raw):
        where = f"OpportunityLineItems[{index}]"
        if not isinstance(item, dict):
            raise bad_request("INVALID_TYPE_ON_FIELD_IN_RECORD", f"{where} must be an object")
        unknown = sorted(set(item) - set(LINE_ITEM_FIELDS) - {"Id", "attributes"})
        if unknown:
            raise bad_request(
                "INVALID_FIELD", f"No such column {unknown} on OpportunityLineItem"
            )
        code = item.get("ProductCode")
        if not isinstance(code, str) or not code:
            raise bad_request(
                "REQUIRED_FIELD_MISSING", f"{where}: Required fields are missing: [ProductCode]"
            )
        quantity, price = item.get("Quantity"), item.get("UnitPrice")
        if not is_number(quantity) or quantity <= 0:
            raise bad_request(
                "FIELD_INTEGRITY_EXCEPTION", f"{where}: Quantity must be a positive number"
            )
        if not is_number(price) or price < 0:
            raise bad_request(
                "FIELD_INTEGRITY_EXCEPTION", f"{where}: UnitPrice must be a non-negative number"
            )
        items.append(
            {
                "Id": salesforce_id("00k", next_id()),
                "ProductCode": code,
                "Name": item.get("Name") or code,
                "Quantity": quantity,
                "UnitPrice": price,
                "TotalPrice": money(quantity * price),
                "Description": item.get("Description"),
            }
        )
    return items
