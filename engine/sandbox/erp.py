"""ERP sandbox (NetSuite-like): customers, sales orders, invoices, payments.

Creating a sales order finds or creates the customer (by CRM ``account_id``) and bills the whole
order at once (one open invoice). Orders with master-data problems are rejected with ``400`` and
one of the codes ``MISSING_BILL_TO``, ``UNKNOWN_TAX_NEXUS`` (nexus not configured for the
subsidiary) or ``UNKNOWN_ITEM`` (sku not in the item catalog); ``error.errors`` lists every
problem found. An operator fixes master data with ``POST /sandbox/items`` and
``POST /sandbox/tax-nexus`` and the same request (even with the same Idempotency-Key) then
succeeds. Amounts are decimal major units (``1200.5`` = 1,200.50).

Each order's revenue schedule must sum to its total (`erp_schedules`); invoices the billing
platform issued are posted to receivables as AR invoices (`erp_ar`).

When a webhook URL is configured the ERP sends Standard Webhooks signed ``payment.applied`` events.

Run standalone: ``python -m engine.sandbox.erp --port 9102``.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette

from engine.sandbox.common import Handler, Reply
from engine.sandbox.erp_catalog import DEFAULT_ITEMS, DEFAULT_TAX_NEXUS, ErpConfig
from engine.sandbox.erp_orders import ErpOrders
from engine.sandbox.serving import run_standalone
from engine.sandbox.webhooks import STANDARD_WEBHOOKS

__all__ = [
    "DEFAULT_ITEMS",
    "DEFAULT_TAX_NEXUS",
    "DEFAULT_WEBHOOK_SECRET",
    "ErpConfig",
    "ErpSandbox",
]

DEFAULT_WEBHOOK_SECRET = "whsec_c3luY2xpbmUtc2FuZGJveC1lcnAtd2ViaG9vaw=="


class ErpSandbox(ErpOrders):
    """The ERP: its resources live in the mixins (`erp_catalog`, `erp_customers`, `erp_ar`,
    `erp_receivables`, `erp_schedules`, `erp_orders`); this class names the system and routes
    its API."""

    name = "erp"
    webhook_scheme = STANDARD_WEBHOOKS
    default_webhook_secret = DEFAULT_WEBHOOK_SECRET
    collections = (
        "customers",
        "sales_orders",
        "invoices",
        "payments",
        "adjustments",
        "revenue_schedules",
        "receivables",
    )

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/customers", self.create_customer),
            ("GET", "/customers", self.list_of("customers", ("account_id", "external_id"))),
            ("GET", "/customers/{id}", self.get_one("customers", "customer")),
            ("POST", "/sales-orders", self.create_sales_order),
            (
                "GET",
                "/sales-orders",
                self.list_of(
                    "sales_orders", ("external_id", "customer_id", "account_id", "status")
                ),
            ),
            ("GET", "/sales-orders/{id}", self.get_one("sales_orders", "sales order")),
            ("POST", "/sales-orders/{id}/cancel", self.cancel_sales_order),
            ("POST", "/sales-orders/{id}/adjustments", self.adjust_sales_order),
            (
                "GET",
                "/invoices",
                self.list_of("invoices", ("sales_order_id", "customer_id", "status")),
            ),
            ("GET", "/invoices/{id}", self.get_one("invoices", "invoice")),
            ("POST", "/payments", self.create_payment),
            ("GET", "/payments", self.list_of("payments", ("invoice_id", "sales_order_id"))),
            ("GET", "/payments/{id}", self.get_one("payments", "payment")),
            ("POST", "/sales-orders/{id}/revenue-schedule", self.update_revenue_schedule),
            ("GET", "/revenue-schedules", self.list_revenue_schedules),
            ("POST", "/receivables", self.post_receivable),
            (
                "GET",
                "/receivables",
                self.list_of("receivables", ("external_id", "account_id", "status")),
            ),
            ("GET", "/receivables/{id}", self.get_one("receivables", "receivable")),
            ("POST", "/receivables/{id}/void", self.void_receivable),
            ("GET", "/adjustments", self.list_of("adjustments", ("sales_order_id", "external_id"))),
            ("GET", "/items", lambda call: Reply(200, {"items": self._items_list()})),
            ("POST", "/tax-nexus/check", self.check_tax_nexus),
        ]

    def sandbox_routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/sandbox/master-data", lambda call: Reply(200, self.master_data())),
            ("POST", "/sandbox/items", self.h_add_item),
            ("DELETE", "/sandbox/items/{sku}", self.h_delete_item),
            ("POST", "/sandbox/tax-nexus", self.h_add_tax_nexus),
            ("DELETE", "/sandbox/tax-nexus/{subsidiary}/{nexus}", self.h_delete_tax_nexus),
        ]


def create_app(config: ErpConfig | None = None, **overrides: Any) -> Starlette:
    """The ERP sandbox's Starlette app (``app.state.sandbox`` is the `ErpSandbox`)."""
    return ErpSandbox(config, **overrides).app


if __name__ == "__main__":
    run_standalone(ErpSandbox, 9102)
