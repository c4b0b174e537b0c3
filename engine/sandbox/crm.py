"""CRM sandbox (Salesforce-like): Accounts and Opportunities over the sObject REST API.

``/services/data/v60.0/sobjects/Account`` and ``.../Opportunity``: POST creates (201
``{"id", "success": true, "errors": []}``), GET ``.../{Id}`` reads (with ``attributes``), PATCH
``.../{Id}`` updates (204, no body). Records are 18-character Salesforce ids (``001...`` accounts,
``006...`` opportunities, ``00k...`` line items). Standard fields not listed in `ACCOUNT_FIELDS` /
`OPPORTUNITY_FIELDS` are rejected (``INVALID_FIELD``); any custom field (``..__c``) is accepted, so
the integration can write back e.g. ``ERP_Customer_Id__c``. When opportunity line items are given,
``Amount`` is their total (as Salesforce rolls it up). ``GET .../query?q=SELECT ...`` runs a small
SOQL subset (``SELECT fields FROM Account|Opportunity [WHERE f = 'v' AND ...] [LIMIT n]``).

When an opportunity's ``StageName`` becomes ``Closed Won`` (PATCH, or
``POST /sandbox/opportunities/{Id}/close``) the CRM sends a Standard Webhooks signed webhook
``{"event": "opportunity.closed_won", "data": <opportunity, with "Account": <account>>}``.

Run standalone: ``python -m engine.sandbox.crm --port 9101``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette

from engine.sandbox.common import (
    JSON,
    ApiError,
    Call,
    Handler,
    Reply,
    bad_request,
    is_number,
    money,
    parse_date,
    utcnow,
)
from engine.sandbox.serving import run_standalone
from engine.sandbox.system import SandboxConfig, SandboxSystem
from engine.sandbox.webhooks import STANDARD_WEBHOOKS

DEFAULT_WEBHOOK_SECRET = "whsec_c3luY2xpbmUtc2FuZGJveC1jcm0td2ViaG9va3MhIQ=="
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


@dataclass
class CrmConfig(SandboxConfig):
    api_version: str = "v60.0"


SOBJECTS = {"Account": "accounts", "Opportunity": "opportunities"}


class CrmSandbox(SandboxSystem):
    name = "crm"
    config_class = CrmConfig
    config: CrmConfig
    webhook_scheme = STANDARD_WEBHOOKS
    default_webhook_secret = DEFAULT_WEBHOOK_SECRET
    collections = ("accounts", "opportunities")

    def routes(self) -> list[tuple[str, str, Handler]]:
        base = "/services/data/{version}"
        return [
            ("POST", f"{base}/sobjects/{{sobject}}", self.create_record),
            ("GET", f"{base}/sobjects/{{sobject}}/{{id}}", self.get_record),
            ("PATCH", f"{base}/sobjects/{{sobject}}/{{id}}", self.update_record),
            ("GET", f"{base}/query", self.query),
        ]

    def sandbox_routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/sandbox/accounts", self.list_helper("accounts", ("Name", "Status__c"))),
            (
                "GET",
                "/sandbox/opportunities",
                self.list_helper("opportunities", ("AccountId", "StageName", "Type")),
            ),
            ("POST", "/sandbox/opportunities/{id}/close", self.close_opportunity),
        ]

    # -- rendering

    def _url(self, sobject: str, ident: str) -> str:
        return f"/services/data/{self.config.api_version}/sobjects/{sobject}/{ident}"

    def render(self, sobject: str, record: JSON) -> JSON:
        out: JSON = {"attributes": {"type": sobject, "url": self._url(sobject, record["Id"])}}
        out.update(record)
        if sobject == "Opportunity":
            out["OpportunityLineItems"] = [
                {
                    "attributes": {
                        "type": "OpportunityLineItem",
                        "url": self._url("OpportunityLineItem", item["Id"]),
                    },
                    **item,
                }
                for item in record["OpportunityLineItems"]
            ]
        return out

    def opportunity_with_account(self, opportunity: JSON) -> JSON:
        """The webhook's ``data``: the opportunity with its account embedded as ``Account``."""
        out = self.render("Opportunity", opportunity)
        account = self.data["accounts"].get(opportunity.get("AccountId") or "")
        out["Account"] = self.render("Account", account) if account else None
        return out

    # -- validation

    def _sobject(self, call: Call) -> str:
        sobject = call.params["sobject"]
        if sobject not in SOBJECTS:
            raise ApiError(404, "NOT_FOUND", f"sObject type '{sobject}' is not supported")
        return sobject

    def _record(self, sobject: str, ident: str) -> JSON:
        record = self.data[SOBJECTS[sobject]].get(ident)
        if record is None:
            raise ApiError(
                404,
                "NOT_FOUND",
                "The requested resource does not exist",
                sobject=sobject,
                id=ident,
            )
        return record

    def _check_fields(self, sobject: str, body: JSON) -> None:
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

    def _validate_account(self, changes: JSON, current: JSON | None) -> None:
        merged = {**(current or {}), **changes}
        if not isinstance(merged.get("Name"), str) or not merged["Name"].strip():
            raise bad_request(
                "REQUIRED_FIELD_MISSING", "Required fields are missing: [Name]", fields=["Name"]
            )
        parent = changes.get("ParentId")
        if parent is not None and parent not in self.data["accounts"]:
            raise bad_request(
                "INVALID_CROSS_REFERENCE_KEY",
                f"invalid cross reference id: ParentId {parent}",
                fields=["ParentId"],
            )
        if current is not None and parent is not None and parent == current["Id"]:
            raise bad_request("CIRCULAR_DEPENDENCY", "an account cannot be its own parent")

    def _validate_opportunity(self, changes: JSON, current: JSON | None) -> None:
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
        if account is not None and account not in self.data["accounts"]:
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

    def _line_items(self, raw: Any) -> list[JSON]:
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
                    "Id": salesforce_id("00k", self.ids.next("line_item")),
                    "ProductCode": code,
                    "Name": item.get("Name") or code,
                    "Quantity": quantity,
                    "UnitPrice": price,
                    "TotalPrice": money(quantity * price),
                    "Description": item.get("Description"),
                }
            )
        return items

    # -- API

    def create_record(self, call: Call) -> Reply:
        sobject = self._sobject(call)
        body = call.json_object()
        self._check_fields(sobject, body)
        now = sf_datetime()
        if sobject == "Account":
            self._validate_account(body, None)
            ident = salesforce_id("001", self.ids.next("account"))
            record = {"Id": ident, **dict.fromkeys(ACCOUNT_FIELDS), **body}
            record.setdefault("CurrencyIsoCode", None)
        else:
            self._validate_opportunity(body, None)
            items = self._line_items(body.get("OpportunityLineItems", []))
            ident = salesforce_id("006", self.ids.next("opportunity"))
            record = {"Id": ident, **dict.fromkeys(OPPORTUNITY_FIELDS), **body}
            record["OpportunityLineItems"] = items
            record["CurrencyIsoCode"] = record["CurrencyIsoCode"] or "USD"
            record["Type"] = record["Type"] or "New Business"
            self._rollup(record)
        record.update(CreatedDate=now, LastModifiedDate=now)
        self.data[SOBJECTS[sobject]][ident] = record
        if sobject == "Opportunity" and record["StageName"] == CLOSED_WON:
            self._closed_won(record)
        return Reply(201, {"id": ident, "success": True, "errors": []})

    @staticmethod
    def _rollup(record: JSON) -> None:
        stage = record.get("StageName") or ""
        record["IsClosed"] = stage.startswith("Closed")
        record["IsWon"] = stage == CLOSED_WON
        if record["OpportunityLineItems"]:
            record["Amount"] = money(sum(i["TotalPrice"] for i in record["OpportunityLineItems"]))

    def get_record(self, call: Call) -> Reply:
        sobject = self._sobject(call)
        return Reply(200, self.render(sobject, self._record(sobject, call.params["id"])))

    def update_record(self, call: Call) -> Reply:
        sobject = self._sobject(call)
        record = self._record(sobject, call.params["id"])
        body = call.json_object()
        self._check_fields(sobject, body)
        if sobject == "Account":
            self._validate_account(body, record)
            record.update(body)
        else:
            self._validate_opportunity(body, record)
            was_won = record["StageName"] == CLOSED_WON
            changes = dict(body)
            if "OpportunityLineItems" in changes:
                changes["OpportunityLineItems"] = self._line_items(changes["OpportunityLineItems"])
            record.update(changes)
            self._rollup(record)
            if record["StageName"] == CLOSED_WON and not was_won:
                self._closed_won(record)
        record["LastModifiedDate"] = sf_datetime()
        return Reply(204)

    def _closed_won(self, opportunity: JSON) -> JSON | None:
        payload = {
            "event": "opportunity.closed_won",
            "data": self.opportunity_with_account(opportunity),
        }
        return self.emit(
            "opportunity.closed_won", payload, webhook_id=f"msg_{self.ids.token('', 24)}"
        )

    # -- SOQL subset

    _SOQL = re.compile(
        r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<sobject>\w+)"
        r"(?:\s+WHERE\s+(?P<where>.+?))?(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$",
        re.IGNORECASE | re.DOTALL,
    )
    _CONDITION = re.compile(
        r"^\s*(?P<field>[\w.]+)\s*(?P<op>=|!=)\s*"
        r"(?P<value>'(?:[^'\\]|\\.)*'|-?\d+(?:\.\d+)?|null|true|false)\s*$",
        re.IGNORECASE,
    )

    def query(self, call: Call) -> Reply:
        soql = call.query.get("q")
        if not soql:
            raise bad_request("MALFORMED_QUERY", "missing q parameter")
        match = self._SOQL.match(soql)
        if not match:
            raise bad_request(
                "MALFORMED_QUERY", "unsupported query (SELECT ... FROM ... WHERE ...)"
            )
        sobject = next((s for s in SOBJECTS if s.lower() == match["sobject"].lower()), None)
        if sobject is None:
            raise bad_request("INVALID_TYPE", f"sObject type '{match['sobject']}' is not supported")
        conditions = []
        if match["where"]:
            for part in re.split(r"\s+AND\s+", match["where"], flags=re.IGNORECASE):
                cond = self._CONDITION.match(part)
                if not cond:
                    raise bad_request("MALFORMED_QUERY", f"unsupported condition: {part.strip()}")
                conditions.append((cond["field"], cond["op"], _soql_value(cond["value"])))
        fields = [f.strip() for f in match["fields"].split(",")]
        records = []
        for record in self.data[SOBJECTS[sobject]].values():
            full = (
                self.opportunity_with_account(record)
                if sobject == "Opportunity"
                else self.render(sobject, record)
            )
            if all((_path(full, f) == v) == (op == "=") for f, op, v in conditions):
                records.append(full if fields == ["FIELDS(ALL)"] else _select(full, fields))
        if match["limit"]:
            records = records[: int(match["limit"])]
        return Reply(200, {"totalSize": len(records), "done": True, "records": records})

    # -- sandbox helpers

    def list_helper(self, collection: str, filters: tuple[str, ...]) -> Handler:
        sobject = "Account" if collection == "accounts" else "Opportunity"

        def handler(call: Call) -> Reply:
            records = list(self.data[collection].values())
            for name in filters:
                if name in call.query:
                    records = [r for r in records if str(r.get(name)) == call.query[name]]
            return Reply(200, {"records": [self.render(sobject, r) for r in records]})

        return handler

    def close_opportunity(self, call: Call) -> Reply:
        """Set StageName to Closed Won (webhook on the transition; ``resend`` forces a new one)."""
        record = self._record("Opportunity", call.params["id"])
        body = call.json_object()
        stage = body.get("StageName", CLOSED_WON)
        changes = {"StageName": stage, **{k: v for k, v in body.items() if k != "resend"}}
        self._check_fields("Opportunity", changes)
        self._validate_opportunity(changes, record)
        was_won = record["StageName"] == CLOSED_WON
        record.update(changes)
        self._rollup(record)
        record["LastModifiedDate"] = sf_datetime()
        delivery = None
        if stage == CLOSED_WON and (not was_won or body.get("resend")):
            delivery = self._closed_won(record)
        return Reply(
            200,
            {
                "opportunity": self.opportunity_with_account(record),
                "webhook": (
                    {"delivery_id": delivery["id"], "webhook_id": delivery["webhook_id"]}
                    if delivery
                    else None
                ),
            },
        )


def _soql_value(text: str) -> Any:
    if text.startswith("'"):
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    lowered = text.lower()
    if lowered in ("null", "true", "false"):
        return {"null": None, "true": True, "false": False}[lowered]
    return float(text) if "." in text else int(text)


def _path(record: JSON, dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _select(record: JSON, fields: list[str]) -> JSON:
    out: JSON = {"attributes": record["attributes"]}
    for name in fields:
        head, _, rest = name.partition(".")
        if rest:
            nested = record.get(head)
            if isinstance(nested, dict):
                out.setdefault(head, {"attributes": nested.get("attributes")})
                out[head][rest] = _path(nested, rest)
            else:
                out[head] = None
        else:
            out[name] = record.get(name)
    return out


def create_app(config: CrmConfig | None = None, **overrides: Any) -> Starlette:
    """The CRM sandbox's Starlette app (``app.state.sandbox`` is the `CrmSandbox`)."""
    return CrmSandbox(config, **overrides).app


if __name__ == "__main__":
    run_standalone(CrmSandbox, 9101)
