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
``{"event": "opportunity.closed_won", "data": <opportunity, with "Account": <account>>}``. Every
change of an account through the API (the integration's own writes too, as Salesforce's Change
Data Capture does) sends ``{"event": "account.updated", "data": <account>, "changedFields":
[...]}``.

Run standalone: ``python -m engine.sandbox.crm --port 9101``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette

from engine.sandbox.common import JSON, ApiError, Call, Handler, Reply
from engine.sandbox.crm_opportunities import Opportunities
from engine.sandbox.crm_query import SOBJECTS, run_query
from engine.sandbox.crm_rules import (
    ACCOUNT_FIELDS,
    CLOSED_WON,
    check_fields,
    salesforce_id,
    sf_datetime,
    validate_account,
)
from engine.sandbox.serving import run_standalone
from engine.sandbox.system import SandboxConfig, SandboxSystem
from engine.sandbox.webhooks import STANDARD_WEBHOOKS, changed_fields

DEFAULT_WEBHOOK_SECRET = "whsec_c3luY2xpbmUtc2FuZGJveC1jcm0td2ViaG9va3MhIQ=="


@dataclass
class CrmConfig(SandboxConfig):
    api_version: str = "v60.0"


class CrmSandbox(Opportunities, SandboxSystem):
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

    # -- API

    def create_record(self, call: Call) -> Reply:
        sobject = self._sobject(call)
        body = call.json_object()
        check_fields(sobject, body)
        now = sf_datetime()
        if sobject == "Account":
            validate_account(body, None, self.data["accounts"])
            ident = salesforce_id("001", self.ids.next("account"))
            record = {"Id": ident, **dict.fromkeys(ACCOUNT_FIELDS), **body}
            record.setdefault("CurrencyIsoCode", None)
        else:
            record = self.new_opportunity(body)
            ident = record["Id"]
        record.update(CreatedDate=now, LastModifiedDate=now)
        self.data[SOBJECTS[sobject]][ident] = record
        if sobject == "Opportunity" and record["StageName"] == CLOSED_WON:
            self.closed_won(record)
        return Reply(201, {"id": ident, "success": True, "errors": []})

    def get_record(self, call: Call) -> Reply:
        sobject = self._sobject(call)
        return Reply(200, self.render(sobject, self._record(sobject, call.params["id"])))

    def update_record(self, call: Call) -> Reply:
        sobject = self._sobject(call)
        record = self._record(sobject, call.params["id"])
        body = call.json_object()
        check_fields(sobject, body)
        before = dict(record)
        if sobject == "Account":
            validate_account(body, record, self.data["accounts"])
            record.update(body)
        else:
            self.change_opportunity(record, body)
        record["LastModifiedDate"] = sf_datetime()
        if sobject == "Account":
            self._account_changed(record, changed_fields(before, record))
        return Reply(204)

    def _account_changed(self, account: JSON, changed: list[str]) -> None:
        """Change Data Capture, as Salesforce sends it: every change, whoever made it (the
        integration's own writes included), with the fields it changed."""
        if changed == ["LastModifiedDate"]:
            return  # nothing changed but the timestamp: Salesforce sends no event either
        payload = {"event": "account.updated", "data": self.render("Account", account),
                   "changedFields": changed}
        self.emit("account.updated", payload, webhook_id=f"msg_{self.ids.token('', 24)}",
                  key=account["Id"])

    def query(self, call: Call) -> Reply:
        return Reply(200, run_query(call.query.get("q"), self._rendered))

    def _rendered(self, sobject: str) -> list[JSON]:
        render = (self.opportunity_with_account if sobject == "Opportunity"
                  else lambda record: self.render(sobject, record))
        return [render(record) for record in self.data[SOBJECTS[sobject]].values()]

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



def create_app(config: CrmConfig | None = None, **overrides: Any) -> Starlette:
    """The CRM sandbox's Starlette app (``app.state.sandbox`` is the `CrmSandbox`)."""
    return CrmSandbox(config, **overrides).app


if __name__ == "__main__":
    run_standalone(CrmSandbox, 9101)
