"""Billing invoices: created per subscription period, paid or failed (which drives the
subscription's status)."""

from __future__ import annotations

import copy

from engine.sandbox.billing_catalog import invalid
from engine.sandbox.billing_customers import BillingCustomers
from engine.sandbox.common import JSON, Call, Reply


class BillingInvoices(BillingCustomers):
    def _create_invoice(self, subscription: JSON, reason: str) -> JSON:
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
        invoice = self._issue(
            subscription["customer"], subscription, lines, reason,
            (subscription["current_period_start"], subscription["current_period_end"]),
        )
        subscription["latest_invoice"] = invoice["id"]
        return invoice

    def _issue(
        self, customer: str, subscription: JSON | None, lines: list[JSON], reason: str,
        period: tuple[int, int],
    ) -> JSON:
        """An open (finalized) invoice of `lines` for `customer`."""
        ident = self.ids.token("in_")
        total = sum(line["amount"] for line in lines)
        number = self.ids.next("invoice_number")
        invoice = {
            "id": ident,
            "object": "invoice",
            "number": f"SBX-{number:04d}",
            "customer": customer,
            "subscription": subscription["id"] if subscription else None,
            "subscription_details": {
                "metadata": dict(subscription["metadata"]) if subscription else {}
            },
            "billing_reason": reason,
            "status": "open",
            "currency": subscription["currency"] if subscription else lines[0]["currency"],
            "subtotal": total,
            "total": total,
            "amount_due": total,
            "amount_paid": 0,
            "amount_remaining": total,
            "attempt_count": 0,
            "attempted": False,
            "paid": False,
            "lines": {"object": "list", "data": lines, "has_more": False},
            "period_start": period[0],
            "period_end": period[1],
            "status_transitions": {
                "finalized_at": self.now(),
                "paid_at": None,
                "voided_at": None,
            },
            "next_payment_attempt": None,
            "created": self.now(),
            "livemode": False,
        }
        self.data["invoices"][ident] = invoice
        return invoice

    def _set_status(self, subscription: JSON, status: str) -> None:
        if subscription["status"] != status and subscription["status"] != "canceled":
            previous = {"status": subscription["status"]}
            subscription["status"] = status
            self._event("customer.subscription.updated", subscription, previous)

    def pay_invoice(self, call: Call) -> Reply:
        """Finalize (if needed) and pay an invoice; emits ``invoice.paid``."""
        invoice = self._get("invoices", "invoice", call.params["id"])
        if invoice["status"] == "paid":
            raise invalid("Invoice is already paid.", code="invoice_not_open")
        if invoice["status"] not in ("draft", "open"):
            raise invalid(f"Invoice is {invoice['status']}.", code="invoice_not_open")
        now = self.now()
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

    def void_invoice(self, call: Call) -> Reply:
        """Void an open invoice (Stripe: only an open one can be voided)."""
        invoice = self._get("invoices", "invoice", call.params["id"])
        if invoice["status"] != "open":
            raise invalid(f"Invoice is {invoice['status']}.", code="invoice_not_open")
        invoice.update(status="void", amount_remaining=0)
        invoice["status_transitions"]["voided_at"] = self.now()
        return Reply(200, invoice)

    def fail_invoice(self, call: Call) -> Reply:
        """A failed payment attempt: emits ``invoice.payment_failed`` (and the subscription
        turns ``past_due``, emitting ``customer.subscription.updated``)."""
        invoice = self._get("invoices", "invoice", call.params["id"])
        if invoice["status"] != "open":
            raise invalid(f"Invoice is {invoice['status']}.", code="invoice_not_open")
        body = call.json_object()
        now = self.now()
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
