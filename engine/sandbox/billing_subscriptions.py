"""Billing subscriptions: created (first invoice open), updated (items, metadata) and cancelled."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from engine.sandbox.billing_catalog import invalid, missing
from engine.sandbox.billing_invoices import BillingInvoices
from engine.sandbox.common import JSON, Call, Reply, add_months


class BillingSubscriptions(BillingInvoices):
    def _resolve_item(self, item: Any, index: int, currency: str | None) -> JSON:
        param = f"items[{index}]"
        if not isinstance(item, dict):
            raise invalid(f"{param} must be an object", param=param)
        quantity = item.get("quantity", 1)
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 0:
            raise invalid("quantity must be a non-negative integer", param=f"{param}[quantity]")
        if item.get("price") is not None:
            price = self.prices.get(item["price"])
            if price is None:
                raise missing("price", item["price"], param=f"{param}[price]")
        elif isinstance(item.get("price_data"), dict):
            spec = item["price_data"]
            amount = spec.get("unit_amount")
            if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
                raise invalid(
                    "unit_amount must be a non-negative integer (minor units)",
                    param=f"{param}[price_data][unit_amount]",
                )
            price = self._price_object(
                self.ids.token("price_"),
                {
                    "unit_amount": amount,
                    "currency": spec.get("currency") or currency or "usd",
                    "product": spec.get("product"),
                    "recurring": spec.get("recurring") or {"interval": "year", "interval_count": 1},
                },
            )
        else:
            raise invalid("give price or price_data", code="parameter_missing", param=param)
        return {
            "id": self.ids.token("si_"),
            "object": "subscription_item",
            "price": copy.deepcopy(price),
            "quantity": quantity,
            "metadata": self._metadata(item),
        }

    def create_subscription(self, call: Call) -> Reply:
        body = call.json_object()
        customer_id = body.get("customer")
        if not isinstance(customer_id, str):
            raise invalid("Missing required param: customer.", "parameter_missing", "customer")
        if customer_id not in self.data["customers"]:
            raise missing("customer", customer_id, param="customer")
        raw_items = body.get("items")
        if not isinstance(raw_items, list) or not raw_items:
            raise invalid("Missing required param: items.", "parameter_missing", "items")
        currency = body.get("currency")
        if currency is not None and (not isinstance(currency, str) or len(currency) != 3):
            raise invalid("currency must be a three-letter ISO code", param="currency")
        items = [self._resolve_item(item, i, currency) for i, item in enumerate(raw_items)]
        currency = (currency or items[0]["price"]["currency"]).lower()
        start_ts = body.get("billing_cycle_anchor") or self.now()
        if not isinstance(start_ts, int):
            raise invalid(
                "billing_cycle_anchor must be a unix timestamp", param="billing_cycle_anchor"
            )
        ident = self.ids.token("sub_")
        subscription: JSON = {
            "id": ident,
            "object": "subscription",
            "customer": customer_id,
            "status": "active",
            "currency": currency,
            "items": {"object": "list", "data": items, "has_more": False},
            "quantity": items[0]["quantity"] if len(items) == 1 else None,
            "collection_method": body.get("collection_method", "charge_automatically"),
            "cancel_at_period_end": False,
            "canceled_at": None,
            "created": self.now(),
            "start_date": start_ts,
            "billing_cycle_anchor": start_ts,
            "metadata": self._metadata(body),
            "latest_invoice": None,
            "livemode": False,
        }
        self._set_period(subscription, start_ts)
        self.data["subscriptions"][ident] = subscription
        customer = self.data["customers"][customer_id]
        customer["currency"] = customer["currency"] or currency
        self._create_invoice(subscription, "subscription_create")
        self._event("customer.subscription.created", subscription)
        if "latest_invoice" in (body.get("expand") or ()):  # Stripe's expand[]
            invoice = self.data["invoices"][subscription["latest_invoice"]]
            return Reply(200, {**subscription, "latest_invoice": copy.deepcopy(invoice)})
        return Reply(200, subscription)

    @staticmethod
    def _set_period(subscription: JSON, start_ts: int) -> None:
        recurring = subscription["items"]["data"][0]["price"]["recurring"] or {}
        interval = recurring.get("interval", "month")
        count = int(recurring.get("interval_count", 1))
        start = dt.datetime.fromtimestamp(start_ts, dt.UTC)
        if interval == "year":
            end_day = add_months(start.date(), 12 * count)
        elif interval == "month":
            end_day = add_months(start.date(), count)
        else:
            days = {"week": 7, "day": 1}.get(interval, 30) * count
            end_day = start.date() + dt.timedelta(days=days)
        end = dt.datetime.combine(end_day, start.timetz())
        subscription["current_period_start"] = start_ts
        subscription["current_period_end"] = int(end.timestamp())

    def update_subscription(self, call: Call) -> Reply:
        """Change quantities/prices/metadata; emits ``customer.subscription.updated``.

        Body: Stripe's ``{"items": [{"id": "si_...", "quantity": 50}], "metadata": {...}}`` or the
        shorthand ``{"quantity": 50}`` (first item) / ``{"item": "si_...", "quantity": 50}``.
        """
        subscription = self._get("subscriptions", "subscription", call.params["id"])
        if subscription["status"] == "canceled":
            raise invalid(
                "A canceled subscription can only update its metadata.",
                code="subscription_canceled",
            )
        body = call.json_object()
        changes = body.get("items")
        if changes is None and "quantity" in body:
            changes = [{"id": body.get("item"), "quantity": body["quantity"]}]
            if "price" in body:
                changes[0]["price"] = body["price"]
        previous: JSON = {}
        if changes is not None:
            if not isinstance(changes, list):
                raise invalid("items must be a list", param="items")
            items = copy.deepcopy(subscription["items"]["data"])
            for index, change in enumerate(changes):
                if not isinstance(change, dict):
                    raise invalid(f"items[{index}] must be an object", param=f"items[{index}]")
                target = (
                    next((i for i in items if i["id"] == change["id"]), None)
                    if change.get("id")
                    else (items[0] if body.get("quantity") is not None else None)
                )
                if change.get("id") and target is None:
                    raise missing("subscription item", change["id"], param=f"items[{index}][id]")
                if target is None:  # a new item
                    items.append(self._resolve_item(change, index, subscription["currency"]))
                    continue
                if change.get("deleted"):
                    items.remove(target)
                    continue
                quantity = change.get("quantity", target["quantity"])
                if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 0:
                    raise invalid(
                        "quantity must be a non-negative integer",
                        param=f"items[{index}][quantity]",
                    )
                target["quantity"] = quantity
                if change.get("price"):
                    price = self.prices.get(change["price"])
                    if price is None:
                        raise missing("price", change["price"], param=f"items[{index}][price]")
                    target["price"] = copy.deepcopy(price)
                elif isinstance(change.get("price_data"), dict):  # re-priced (a renewal)
                    priced = self._resolve_item(change, index, subscription["currency"])
                    target["price"] = priced["price"]
            if not items:
                raise invalid("a subscription needs at least one item", param="items")
            previous["items"] = copy.deepcopy(subscription["items"])
            if subscription["quantity"] is not None:
                previous["quantity"] = subscription["quantity"]
            subscription["items"]["data"] = items
            subscription["quantity"] = items[0]["quantity"] if len(items) == 1 else None
        if "metadata" in body:
            previous["metadata"] = dict(subscription["metadata"])
            subscription["metadata"] = self._metadata(body, subscription["metadata"])
        if "cancel_at_period_end" in body:
            previous["cancel_at_period_end"] = subscription["cancel_at_period_end"]
            subscription["cancel_at_period_end"] = bool(body["cancel_at_period_end"])
        if previous:
            self._event("customer.subscription.updated", subscription, previous)
        return Reply(200, subscription)

    def cancel_subscription(self, call: Call) -> Reply:
        subscription = self._get("subscriptions", "subscription", call.params["id"])
        if subscription["status"] != "canceled":
            subscription.update(status="canceled", canceled_at=self.now())
            subscription["ended_at"] = subscription["canceled_at"]
            for invoice in self.data["invoices"].values():
                if invoice["subscription"] == subscription["id"] and invoice["status"] == "open":
                    invoice["status"] = "void"
                    invoice["amount_remaining"] = 0
                    invoice["status_transitions"]["voided_at"] = self.now()
            self._event("customer.subscription.deleted", subscription)
        return Reply(200, subscription)

    def list_upcoming_renewals(self, call: Call) -> Reply:
        """Subscriptions whose current period (the contract term) ends within ``days`` (90 by
        default) of billing's now and that will renew (live, not cancelling at period end): one
        item per subscription and term, ``id`` ``<subscription>_<period end>``, with what the
        renewal would bill (``items``, ``amount`` a year, minor units)."""
        raw = call.query.get("days", "90")
        if not raw.isdigit() or not 1 <= int(raw) <= 366:
            raise invalid("days must be a whole number from 1 to 366", param="days")
        now, horizon = self.now(), self.now() + int(raw) * 86400
        renewals = []
        for sub in self.data["subscriptions"].values():
            end = sub["current_period_end"]
            if sub["status"] not in ("active", "past_due") or sub["cancel_at_period_end"]:
                continue
            if not now <= end <= horizon:
                continue
            items = [
                {"sku": i["price"]["product"], "quantity": i["quantity"],
                 "unit_amount": i["price"]["unit_amount"]}
                for i in sub["items"]["data"]
            ]
            renewals.append({
                "id": f"{sub['id']}_{end}",
                "object": "upcoming_renewal",
                "subscription": sub["id"],
                "customer": sub["customer"],
                "currency": sub["currency"],
                "metadata": dict(sub["metadata"]),
                "renews_at": end,
                "renews_on": dt.datetime.fromtimestamp(end, dt.UTC).date().isoformat(),
                "items": items,
                "amount": sum(i["quantity"] * i["unit_amount"] for i in items),
            })
        return Reply(200, self._list(renewals, call))

