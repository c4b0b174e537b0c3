"""Subscription billing sandbox (Stripe-like): customers, prices, subscriptions, invoices.

Object shapes follow Stripe's API (``object`` fields, ``{"object": "list", "data": [...]}`` lists,
amounts in the currency's **minor unit**: ``amount_due: 120000`` is 1,200.00). Real Stripe takes
``application/x-www-form-urlencoded`` bodies; this sandbox takes JSON bodies instead (the same
field names, nested objects and arrays as JSON). Idempotency-Key is honoured as Stripe does.
Errors are ``{"error": {"type": "invalid_request_error", "code": "resource_missing", ...}}``.

Creating a subscription creates its first invoice (``open``). Stripe-signed webhooks
(``Stripe-Signature: t=...,v1=...``) in Stripe's event envelope are sent for
``customer.subscription.created|updated|deleted``, ``invoice.paid`` and
``invoice.payment_failed``; the sandbox endpoints ``/sandbox/subscriptions/{id}/update``,
``/sandbox/invoices/{id}/pay`` and ``/sandbox/invoices/{id}/fail`` drive them.

Run standalone: ``python -m engine.sandbox.billing --port 9103``.
"""

from __future__ import annotations

import copy
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette

from engine.sandbox.common import JSON, ApiError, Call, Handler, Reply, add_months
from engine.sandbox.serving import run_standalone
from engine.sandbox.system import SandboxConfig, SandboxSystem
from engine.sandbox.webhooks import STRIPE

API_VERSION = "2024-06-20"
DEFAULT_WEBHOOK_SECRET = "whsec_sandbox_billing_0123456789abcdef"

DEFAULT_PRICES: dict[str, JSON] = {
    "price_plat_ent_yearly": {
        "product": "prod_plat_ent",
        "lookup_key": "PLAT-ENT",
        "unit_amount": 2400000,
        "currency": "usd",
        "recurring": {"interval": "year", "interval_count": 1},
    },
    "price_plat_pro_yearly": {
        "product": "prod_plat_pro",
        "lookup_key": "PLAT-PRO",
        "unit_amount": 1200000,
        "currency": "usd",
        "recurring": {"interval": "year", "interval_count": 1},
    },
    "price_seat_std_yearly": {
        "product": "prod_seat_std",
        "lookup_key": "SEAT-STD",
        "unit_amount": 60000,
        "currency": "usd",
        "recurring": {"interval": "year", "interval_count": 1},
    },
    "price_support_prem_yearly": {
        "product": "prod_support_prem",
        "lookup_key": "SUPPORT-PREM",
        "unit_amount": 500000,
        "currency": "usd",
        "recurring": {"interval": "year", "interval_count": 1},
    },
}
"""The default price catalog (``lookup_key`` is the matching ERP sku)."""


def invalid(message: str, code: str = "parameter_invalid", param: str | None = None) -> ApiError:
    error = ApiError(400, code, message, type="invalid_request_error")
    if param:
        error.details["param"] = param
    return error


def missing(kind: str, ident: Any, param: str = "id") -> ApiError:
    return ApiError(
        404,
        "resource_missing",
        f"No such {kind}: '{ident}'",
        type="invalid_request_error",
        param=param,
    )


@dataclass
class BillingConfig(SandboxConfig):
    prices: dict[str, JSON] = field(default_factory=lambda: copy.deepcopy(DEFAULT_PRICES))


class BillingSandbox(SandboxSystem):
    name = "billing"
    config_class = BillingConfig
    config: BillingConfig
    webhook_scheme = STRIPE
    default_webhook_secret = DEFAULT_WEBHOOK_SECRET
    collections = ("customers", "subscriptions", "invoices", "events")

    def reset_master_data(self) -> None:
        self.prices: dict[str, JSON] = {}
        for ident, price in self.config.prices.items():
            self.prices[ident] = self._price_object(ident, price)

    def master_data(self) -> JSON:
        return {"prices": copy.deepcopy(list(self.prices.values()))}

    @staticmethod
    def _price_object(ident: str, spec: JSON) -> JSON:
        return {
            "id": ident,
            "object": "price",
            "active": True,
            "currency": str(spec.get("currency", "usd")).lower(),
            "unit_amount": int(spec["unit_amount"]),
            "product": spec.get("product", f"prod_{ident}"),
            "lookup_key": spec.get("lookup_key"),
            "recurring": spec.get("recurring", {"interval": "month", "interval_count": 1}),
            "type": "recurring",
            "livemode": False,
        }

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/v1/customers", self.create_customer),
            ("GET", "/v1/customers", self.list_of("customers", ())),
            ("GET", "/v1/customers/{id}", self.get_one("customers", "customer")),
            ("POST", "/v1/customers/{id}", self.update_customer),
            ("DELETE", "/v1/customers/{id}", self.delete_customer),
            ("GET", "/v1/prices", lambda call: Reply(200, self._list(self.prices.values(), call))),
            ("GET", "/v1/prices/{id}", self.get_price),
            ("POST", "/v1/subscriptions", self.create_subscription),
            ("GET", "/v1/subscriptions", self.list_of("subscriptions", ("customer", "status"))),
            ("GET", "/v1/subscriptions/{id}", self.get_one("subscriptions", "subscription")),
            ("POST", "/v1/subscriptions/{id}", self.update_subscription),
            ("DELETE", "/v1/subscriptions/{id}", self.cancel_subscription),
            (
                "GET",
                "/v1/invoices",
                self.list_of("invoices", ("customer", "subscription", "status")),
            ),
            ("GET", "/v1/invoices/{id}", self.get_one("invoices", "invoice")),
            ("POST", "/v1/invoices/{id}/pay", self.pay_invoice),
            ("GET", "/v1/events", self.list_of("events", ("type",))),
            ("GET", "/v1/events/{id}", self.get_one("events", "event")),
        ]

    def sandbox_routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/sandbox/prices", self.h_add_price),
            ("POST", "/sandbox/subscriptions/{id}/update", self.update_subscription),
            ("POST", "/sandbox/invoices/{id}/pay", self.pay_invoice),
            ("POST", "/sandbox/invoices/{id}/fail", self.fail_invoice),
        ]

    # -- helpers

    def _list(self, records: Any, call: Call) -> JSON:
        data = list(records)
        limit = call.query.get("limit")
        if limit and limit.isdigit():
            data = data[: int(limit)]
        return {"object": "list", "data": data, "has_more": False, "url": call.path}

    def list_of(self, collection: str, filters: tuple[str, ...]) -> Handler:
        def handler(call: Call) -> Reply:
            records = list(self.data[collection].values())
            # Stripe lists newest first
            records.reverse()
            for name in filters:
                if name in call.query:
                    records = [r for r in records if str(r.get(name)) == call.query[name]]
            return Reply(200, self._list(records, call))

        return handler

    def get_one(self, collection: str, kind: str) -> Handler:
        def handler(call: Call) -> Reply:
            return Reply(200, self._get(collection, kind, call.params["id"]))

        return handler

    def _get(self, collection: str, kind: str, ident: str) -> JSON:
        record = self.data[collection].get(ident)
        if record is None:
            raise missing(kind, ident)
        return record

    def get_price(self, call: Call) -> Reply:
        price = self.prices.get(call.params["id"])
        if price is None:
            raise missing("price", call.params["id"])
        return Reply(200, price)

    @staticmethod
    def _metadata(body: JSON, current: JSON | None = None) -> JSON:
        metadata = body.get("metadata")
        if metadata is None:
            return dict(current or {})
        if not isinstance(metadata, dict):
            raise invalid("metadata must be an object", param="metadata")
        merged = dict(current or {})
        for key, value in metadata.items():
            if value in ("", None):
                merged.pop(key, None)  # Stripe: an empty value unsets a key
            else:
                merged[key] = str(value)
        return merged

    def _event(self, event_type: str, obj: JSON, previous: JSON | None = None) -> JSON:
        data: JSON = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = previous
        event_id = self.ids.token("evt_", 24)
        event = {
            "id": event_id,
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        self.data["events"][event_id] = event
        self.emit(event_type, event, webhook_id=event_id)
        return event

    # -- customers

    def create_customer(self, call: Call) -> Reply:
        body = call.json_object()
        for name in ("name", "email", "description"):
            if body.get(name) is not None and not isinstance(body[name], str):
                raise invalid(f"{name} must be a string", param=name)
        ident = self.ids.token("cus_")
        customer = {
            "id": ident,
            "object": "customer",
            "name": body.get("name"),
            "email": body.get("email"),
            "description": body.get("description"),
            "address": body.get("address"),
            "currency": None,
            "metadata": self._metadata(body),
            "created": int(time.time()),
            "livemode": False,
        }
        self.data["customers"][ident] = customer
        return Reply(200, customer)

    def update_customer(self, call: Call) -> Reply:
        customer = self._get("customers", "customer", call.params["id"])
        body = call.json_object()
        for name in ("name", "email", "description", "address"):
            if name in body:
                customer[name] = body[name]
        customer["metadata"] = self._metadata(body, customer["metadata"])
        return Reply(200, customer)

    def delete_customer(self, call: Call) -> Reply:
        """Stripe's delete: the customer is marked deleted (kept, as Stripe keeps it)."""
        customer = self._get("customers", "customer", call.params["id"])
        customer["deleted"] = True
        return Reply(200, {"id": customer["id"], "object": "customer", "deleted": True})

    # -- subscriptions

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
        start_ts = body.get("billing_cycle_anchor") or int(time.time())
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
            "created": int(time.time()),
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

    def _create_invoice(self, subscription: JSON, reason: str) -> JSON:
        ident = self.ids.token("in_")
        lines = []
        for item in subscription["items"]["data"]:
            amount = item["price"]["unit_amount"] * item["quantity"]
            lines.append(
                {
                    "id": self.ids.token("il_"),
                    "object": "line_item",
                    "amount": amount,
                    "currency": subscription["currency"],
                    "quantity": item["quantity"],
                    "price": copy.deepcopy(item["price"]),
                    "subscription_item": item["id"],
                    "period": {
                        "start": subscription["current_period_start"],
                        "end": subscription["current_period_end"],
                    },
                }
            )
        total = sum(line["amount"] for line in lines)
        number = self.ids.next("invoice_number")
        invoice = {
            "id": ident,
            "object": "invoice",
            "number": f"SBX-{number:04d}",
            "customer": subscription["customer"],
            "subscription": subscription["id"],
            "subscription_details": {"metadata": dict(subscription["metadata"])},
            "billing_reason": reason,
            "status": "open",
            "currency": subscription["currency"],
            "subtotal": total,
            "total": total,
            "amount_due": total,
            "amount_paid": 0,
            "amount_remaining": total,
            "attempt_count": 0,
            "attempted": False,
            "paid": False,
            "lines": {"object": "list", "data": lines, "has_more": False},
            "period_start": subscription["current_period_start"],
            "period_end": subscription["current_period_end"],
            "status_transitions": {
                "finalized_at": int(time.time()),
                "paid_at": None,
                "voided_at": None,
            },
            "next_payment_attempt": None,
            "created": int(time.time()),
            "livemode": False,
        }
        self.data["invoices"][ident] = invoice
        subscription["latest_invoice"] = ident
        return invoice

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
            subscription.update(status="canceled", canceled_at=int(time.time()))
            subscription["ended_at"] = subscription["canceled_at"]
            for invoice in self.data["invoices"].values():
                if invoice["subscription"] == subscription["id"] and invoice["status"] == "open":
                    invoice["status"] = "void"
                    invoice["amount_remaining"] = 0
                    invoice["status_transitions"]["voided_at"] = int(time.time())
            self._event("customer.subscription.deleted", subscription)
        return Reply(200, subscription)

    def _set_status(self, subscription: JSON, status: str) -> None:
        if subscription["status"] != status and subscription["status"] != "canceled":
            previous = {"status": subscription["status"]}
            subscription["status"] = status
            self._event("customer.subscription.updated", subscription, previous)

    # -- invoices

    def pay_invoice(self, call: Call) -> Reply:
        """Finalize (if needed) and pay an invoice; emits ``invoice.paid``."""
        invoice = self._get("invoices", "invoice", call.params["id"])
        if invoice["status"] == "paid":
            raise invalid("Invoice is already paid.", code="invoice_not_open")
        if invoice["status"] not in ("draft", "open"):
            raise invalid(f"Invoice is {invoice['status']}.", code="invoice_not_open")
        now = int(time.time())
        invoice["status_transitions"]["finalized_at"] = (
            invoice["status_transitions"]["finalized_at"] or now
        )
        invoice.update(
            status="paid",
            paid=True,
            attempted=True,
            attempt_count=invoice["attempt_count"] + 1,
            amount_paid=invoice["amount_due"],
            amount_remaining=0,
            next_payment_attempt=None,
        )
        invoice["status_transitions"]["paid_at"] = now
        self._event("invoice.paid", invoice)
        subscription = self.data["subscriptions"].get(invoice["subscription"])
        if subscription is not None and subscription["status"] in ("past_due", "unpaid"):
            self._set_status(subscription, "active")
        return Reply(200, invoice)

    def fail_invoice(self, call: Call) -> Reply:
        """A failed payment attempt: emits ``invoice.payment_failed`` (and the subscription
        turns ``past_due``, emitting ``customer.subscription.updated``)."""
        invoice = self._get("invoices", "invoice", call.params["id"])
        if invoice["status"] != "open":
            raise invalid(f"Invoice is {invoice['status']}.", code="invoice_not_open")
        body = call.json_object()
        now = int(time.time())
        invoice.update(
            attempted=True,
            attempt_count=invoice["attempt_count"] + 1,
            next_payment_attempt=now + 3 * 24 * 3600,
            last_payment_error={
                "type": "card_error",
                "code": body.get("decline_code", "card_declined"),
                "message": body.get("message", "Your card was declined."),
            },
        )
        self._event("invoice.payment_failed", invoice)
        subscription = self.data["subscriptions"].get(invoice["subscription"])
        if subscription is not None:
            self._set_status(subscription, "past_due")
        return Reply(200, invoice)

    # -- master data

    def h_add_price(self, call: Call) -> Reply:
        body = call.json_object()
        ident = body.get("id")
        amount = body.get("unit_amount")
        if not isinstance(ident, str) or not ident:
            raise invalid("id is required", param="id")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise invalid("unit_amount must be a non-negative integer", param="unit_amount")
        with self.lock:
            self.prices[ident] = self._price_object(ident, body)
        return Reply(201, self.prices[ident])


def create_app(config: BillingConfig | None = None, **overrides: Any) -> Starlette:
    """The billing sandbox's Starlette app (``app.state.sandbox`` is the `BillingSandbox`)."""
    return BillingSandbox(config, **overrides).app


if __name__ == "__main__":
    run_standalone(BillingSandbox, 9103)
