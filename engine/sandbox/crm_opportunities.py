"""The CRM sandbox's opportunities: created and changed through the sObject API, closed through
``/sandbox/opportunities/{Id}/close``; the ``opportunity.closed_won`` webhook when one is won."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.sandbox.common import JSON, Call, Reply, money
from engine.sandbox.crm_rules import (
    CLOSED_WON,
    OPPORTUNITY_FIELDS,
    check_fields,
    line_items,
    salesforce_id,
    sf_datetime,
    validate_opportunity,
)

if TYPE_CHECKING:
    from engine.sandbox.common import IdGenerator


def rollup(record: JSON) -> None:
    """IsClosed, IsWon and (with lines) Amount follow the stage and the lines, as in Salesforce."""
    stage = record.get("StageName") or ""
    record["IsClosed"] = stage.startswith("Closed")
    record["IsWon"] = stage == CLOSED_WON
    if record["OpportunityLineItems"]:
        record["Amount"] = money(sum(i["TotalPrice"] for i in record["OpportunityLineItems"]))


class Opportunities:
    """The Opportunity resource of `CrmSandbox` (a mixin: it uses the system's data and ids)."""

    data: dict[str, dict[str, JSON]]
    ids: IdGenerator
    if TYPE_CHECKING:  # provided by CrmSandbox and SandboxSystem

        def render(self, sobject: str, record: JSON) -> JSON: ...

        def emit(self, event_type: str, payload: Any, webhook_id: str,
                 key: str | None = None) -> JSON | None: ...

        def _record(self, sobject: str, ident: str) -> JSON: ...

    def opportunity_with_account(self, opportunity: JSON) -> JSON:
        """The webhook's ``data``: the opportunity with its account embedded as ``Account``."""
        out = self.render("Opportunity", opportunity)
        account = self.data["accounts"].get(opportunity.get("AccountId") or "")
        out["Account"] = self.render("Account", account) if account else None
        return out

    def _line_items(self, raw: Any) -> list[JSON]:
        return line_items(raw, lambda: self.ids.next("line_item"))

    def new_opportunity(self, body: JSON) -> JSON:
        """A new opportunity record from a create's body (validated)."""
        validate_opportunity(body, None, self.data["accounts"])
        items = self._line_items(body.get("OpportunityLineItems", []))
        ident = salesforce_id("006", self.ids.next("opportunity"))
        record = {"Id": ident, **dict.fromkeys(OPPORTUNITY_FIELDS), **body}
        record["OpportunityLineItems"] = items
        record["CurrencyIsoCode"] = record["CurrencyIsoCode"] or "USD"
        record["Type"] = record["Type"] or "New Business"
        rollup(record)
        return record

    def change_opportunity(self, record: JSON, body: JSON) -> None:
        """Apply an update's body (validated); the webhook when it wins the deal."""
        validate_opportunity(body, record, self.data["accounts"])
        was_won = record["StageName"] == CLOSED_WON
        changes = dict(body)
        if "OpportunityLineItems" in changes:
            changes["OpportunityLineItems"] = self._line_items(changes["OpportunityLineItems"])
        record.update(changes)
        rollup(record)
        if record["StageName"] == CLOSED_WON and not was_won:
            self.closed_won(record)

    def closed_won(self, opportunity: JSON) -> JSON | None:
        payload = {
            "event": "opportunity.closed_won",
            "data": self.opportunity_with_account(opportunity),
        }
        return self.emit(
            "opportunity.closed_won", payload, webhook_id=f"msg_{self.ids.token('', 24)}",
            key=opportunity.get("AccountId"),
        )

    def close_opportunity(self, call: Call) -> Reply:
        """Set StageName to Closed Won (webhook on the transition; ``resend`` forces a new one)."""
        record = self._record("Opportunity", call.params["id"])
        body = call.json_object()
        stage = body.get("StageName", CLOSED_WON)
        changes = {"StageName": stage, **{k: v for k, v in body.items() if k != "resend"}}
        check_fields("Opportunity", changes)
        validate_opportunity(changes, record, self.data["accounts"])
        was_won = record["StageName"] == CLOSED_WON
        record.update(changes)
        rollup(record)
        record["LastModifiedDate"] = sf_datetime()
        delivery = None
        if stage == CLOSED_WON and (not was_won or body.get("resend")):
            delivery = self.closed_won(record)
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
