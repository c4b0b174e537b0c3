"""Billing usage: metered usage reported per subscription item and month, the usage summaries a
rating integration reads, and one-off invoice items invoiced on demand (Stripe's invoice items).

- ``POST /v1/subscription_items/{id}/usage_records`` ``{quantity, timestamp?, action?}``
  (``increment``, the default, or ``set``) records API calls in the month (UTC) of ``timestamp``.
- ``GET /v1/usage_summaries`` (``?closed=true``, ``?period=YYYY-MM``, ``?subscription=``) lists one
  summary per subscription and month: ``id`` (``usum_<subscription>_<YYYY-MM>``),
  ``total_usage``, ``included_quantity`` (what the plan includes a month: the configured
  ``included_usage`` per product, times the item's quantity), the subscription's ``metadata``
  and currency, ``closed`` (the month is over, or ``POST /sandbox/usage/close {period}`` closed it).
- ``POST /v1/invoiceitems`` ``{customer, subscription?, amount, currency, description, metadata}``
  adds a pending item (``DELETE /v1/invoiceitems/{id}`` removes a pending one);
  ``POST /v1/invoices`` ``{customer, subscription?}`` invoices the pending
  items (open, ``billing_reason: manual``; ``invoice.finalized`` is sent); nothing pending is
  ``400 invoice_no_customer_line_items``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from engine.sandbox.billing_catalog import invalid, missing
from engine.sandbox.billing_subscriptions import BillingSubscriptions
from engine.sandbox.common import JSON, Call, Reply

METRIC = "api_calls"


def month_of(timestamp: int) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m")


def _integer(body: JSON, name: str, *, minimum: int = 0) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise invalid(f"{name} must be an integer of at least {minimum}", param=name)
    return value


class BillingUsage(BillingSubscriptions):
    """Usage records and summaries, invoice items and invoices made of them."""

    def report_usage(self, call: Call) -> Reply:
        item_id = call.params["id"]
        subscription = next(
            (s for s in self.data["subscriptions"].values()
             if any(i["id"] == item_id for i in s["items"]["data"])),
            None,
        )
        if subscription is None:
            raise missing("subscription item", item_id)
        body = call.json_object()
        quantity = _integer(body, "quantity")
        timestamp = body.get("timestamp", self.now())
        if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 0:
            raise invalid("timestamp must be a unix timestamp", param="timestamp")
        action = body.get("action", "increment")
        if action not in ("increment", "set"):
            raise invalid("action must be increment or set", param="action")
        period = month_of(timestamp)
        key = f"{subscription['id']}:{period}"
        if key in self.closed_periods:
            raise invalid(f"the usage period {period} of {subscription['id']} is closed",
                          code="usage_period_closed", param="timestamp")
        usage = self.data["usage"].setdefault(key, {
            "subscription": subscription["id"], "period": period, "total_usage": 0,
        })
        usage["total_usage"] = quantity if action == "set" else usage["total_usage"] + quantity
        record = {
            "id": self.ids.token("mbur_"), "object": "usage_record", "quantity": quantity,
            "subscription_item": item_id, "timestamp": timestamp, "livemode": False,
        }
        return Reply(200, record)

    def _summary(self, key: str, usage: JSON) -> JSON:
        subscription = self.data["subscriptions"][usage["subscription"]]
        included = sum(
            int(self.config.included_usage.get(item["price"]["product"], 0)) * item["quantity"]
            for item in subscription["items"]["data"]
        )
        plan = next(
            (i["price"]["product"] for i in subscription["items"]["data"]
             if i["price"]["product"] in self.config.included_usage),
            None,
        )
        return {
            "id": f"usum_{usage['subscription']}_{usage['period']}",
            "object": "usage_summary",
            "subscription": subscription["id"],
            "customer": subscription["customer"],
            "currency": subscription["currency"],
            "metadata": dict(subscription["metadata"]),
            "plan": plan,
            "metric": METRIC,
            "period": usage["period"],
            "total_usage": usage["total_usage"],
            "included_quantity": included,
            "closed": key in self.closed_periods or usage["period"] < month_of(self.now()),
        }

    def list_usage_summaries(self, call: Call) -> Reply:
        summaries = [self._summary(key, usage) for key, usage in self.data["usage"].items()]
        query = call.query
        if "closed" in query:
            closed = query["closed"] == "true"
            summaries = [s for s in summaries if s["closed"] == closed]
        for name in ("period", "subscription"):
            if name in query:
                summaries = [s for s in summaries if s[name] == query[name]]
        return Reply(200, self._list(summaries, call))

    def close_period(self, call: Call) -> Reply:
        """Sandbox: close a month's usage now (as the month's end would)."""
        period = call.json_object().get("period")
        if not isinstance(period, str) or len(period) != 7:
            raise invalid("period must be YYYY-MM", param="period")
        keys = [k for k, u in self.data["usage"].items() if u["period"] == period]
        self.closed_periods.update(keys)
        return Reply(200, {"period": period, "closed": len(keys)})

    def create_invoice_item(self, call: Call) -> Reply:
        body = call.json_object()
        customer = body.get("customer")
        if not isinstance(customer, str) or customer not in self.data["customers"]:
            raise missing("customer", customer, param="customer")
        subscription = body.get("subscription")
        if subscription is not None and subscription not in self.data["subscriptions"]:
            raise missing("subscription", subscription, param="subscription")
        amount = body.get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise invalid("amount must be an integer (minor units)", param="amount")
        currency = body.get("currency")
        if not isinstance(currency, str) or len(currency) != 3:
            raise invalid("currency must be a three-letter ISO code", param="currency")
        item: dict[str, Any] = {
            "id": self.ids.token("ii_"), "object": "invoiceitem", "customer": customer,
            "subscription": subscription, "amount": amount, "currency": currency.lower(),
            "description": body.get("description"), "quantity": body.get("quantity", 1),
            "unit_amount": body.get("unit_amount"), "period": body.get("period"),
            "metadata": self._metadata(body), "invoice": None, "date": self.now(),
            "livemode": False,
        }
        self.data["invoiceitems"][item["id"]] = item
        return Reply(200, item)

    def delete_invoice_item(self, call: Call) -> Reply:
        """Delete a pending invoice item (one already invoiced cannot be)."""
        item = self._get("invoiceitems", "invoice item", call.params["id"])
        if item["invoice"] is not None:
            raise invalid(f"Invoice item {item['id']} is on invoice {item['invoice']}.",
                          code="invoice_item_invoiced")
        del self.data["invoiceitems"][item["id"]]
        return Reply(200, {"id": item["id"], "object": "invoiceitem", "deleted": True})

    def create_invoice(self, call: Call) -> Reply:
        body = call.json_object()
        customer = body.get("customer")
        if not isinstance(customer, str) or customer not in self.data["customers"]:
            raise missing("customer", customer, param="customer")
        subscription_id = body.get("subscription")
        subscription = None
        if subscription_id is not None:
            subscription = self._get("subscriptions", "subscription", subscription_id)
        pending = [
            i for i in self.data["invoiceitems"].values()
            if i["customer"] == customer and i["invoice"] is None
            and (subscription_id is None or i["subscription"] == subscription_id)
        ]
        if not pending:
            raise invalid(f"Nothing to invoice for customer {customer}.",
                          code="invoice_no_customer_line_items")
        lines = [
            {"id": self.ids.token("il_"), "object": "line_item", "amount": i["amount"],
             "currency": i["currency"], "quantity": i["quantity"], "invoice_item": i["id"],
             "description": i["description"], "metadata": dict(i["metadata"]),
             "period": i["period"]}
            for i in pending
        ]
        now = self.now()
        invoice = self._issue(customer, subscription, lines, "manual", (now, now))
        if body.get("description") is not None:
            invoice["description"] = body["description"]
        for item in pending:
            item["invoice"] = invoice["id"]
        self._event("invoice.finalized", invoice)
        return Reply(200, invoice)
