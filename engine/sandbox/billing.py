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

from typing import Any

from starlette.applications import Starlette

from engine.sandbox.billing_catalog import API_VERSION, DEFAULT_PRICES, BillingConfig
from engine.sandbox.billing_usage import BillingUsage
from engine.sandbox.common import Handler, Reply
from engine.sandbox.serving import run_standalone
from engine.sandbox.webhooks import STRIPE

__all__ = [
    "API_VERSION",
    "DEFAULT_PRICES",
    "DEFAULT_WEBHOOK_SECRET",
    "BillingConfig",
    "BillingSandbox",
]

DEFAULT_WEBHOOK_SECRET = "whsec_sandbox_billing_0123456789abcdef"


class BillingSandbox(BillingUsage):
    """Stripe-like billing: its resources live in the mixins (`billing_catalog`,
    `billing_customers`, `billing_invoices`, `billing_subscriptions`, `billing_usage`); this
    class names the system and routes its API."""

    name = "billing"
    webhook_scheme = STRIPE
    default_webhook_secret = DEFAULT_WEBHOOK_SECRET
    collections = (
        "customers",
        "subscriptions",
        "invoices",
        "events",
        "usage",
        "invoiceitems",
    )

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
            ("POST", "/v1/invoices", self.create_invoice),
            ("POST", "/v1/invoices/{id}/void", self.void_invoice),
            ("DELETE", "/v1/invoiceitems/{id}", self.delete_invoice_item),
            ("POST", "/v1/invoiceitems", self.create_invoice_item),
            (
                "GET",
                "/v1/invoiceitems",
                self.list_of("invoiceitems", ("customer", "subscription", "invoice")),
            ),
            ("POST", "/v1/subscription_items/{id}/usage_records", self.report_usage),
            ("GET", "/v1/usage_summaries", self.list_usage_summaries),
            ("GET", "/v1/upcoming_renewals", self.list_upcoming_renewals),
            ("GET", "/v1/events", self.list_of("events", ("type",))),
            ("GET", "/v1/events/{id}", self.get_one("events", "event")),
        ]

    def sandbox_routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/sandbox/prices", self.h_add_price),
            ("POST", "/sandbox/subscriptions/{id}/update", self.update_subscription),
            ("POST", "/sandbox/invoices/{id}/pay", self.pay_invoice),
            ("POST", "/sandbox/invoices/{id}/fail", self.fail_invoice),
            ("POST", "/sandbox/usage/close", self.close_period),
            ("POST", "/sandbox/clock", self.advance_clock),
        ]


def create_app(config: BillingConfig | None = None, **overrides: Any) -> Starlette:
    """The billing sandbox's Starlette app (``app.state.sandbox`` is the `BillingSandbox`)."""
    return BillingSandbox(config, **overrides).app


if __name__ == "__main__":
    run_standalone(BillingSandbox, 9103)
