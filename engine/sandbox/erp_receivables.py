"""ERP order billing: the invoices of sales orders and the payments applied to them (a payment
for a billing invoice also settles its AR invoice, `erp_ar`)."""

from __future__ import annotations

import copy
import datetime as dt

from engine.sandbox.common import (
    JSON,
    ApiError,
    Call,
    Reply,
    bad_request,
    is_number,
    iso_now,
    money,
    not_found,
)
from engine.sandbox.erp_ar import ErpAccountsReceivable


class ErpReceivables(ErpAccountsReceivable):
    def _order(self, ident: str) -> JSON:
        order = self.data["sales_orders"].get(ident)
        if order is None:
            raise not_found("sales order", ident)
        return order

    def _invoice(self, order: JSON, lines: list[JSON], amount: float, day: dt.date) -> JSON:
        number = self.ids.next("invoice", 1001)
        ident = f"INV-{number}"
        invoice = {
            "id": ident,
            "tran_id": f"INV{number}",
            "sales_order_id": order["id"],
            "customer_id": order["customer_id"],
            "account_id": order["account_id"],
            "currency": order["currency"],
            "lines": copy.deepcopy(lines),
            "amount": amount,
            "amount_paid": 0,
            "amount_due": amount,
            "status": "open",
            "invoice_date": day.isoformat(),
            "due_date": (day + dt.timedelta(days=self.config.invoice_due_days)).isoformat(),
            "created_at": iso_now(),
        }
        self.data["invoices"][ident] = invoice
        order["invoice_ids"].append(ident)
        return invoice

    def _refresh_totals(self, order: JSON) -> None:
        invoices = [self.data["invoices"][i] for i in order["invoice_ids"]]
        live = [i for i in invoices if i["status"] != "voided"]
        order["amount_paid"] = money(sum(i["amount_paid"] for i in live))
        order["amount_due"] = money(sum(i["amount_due"] for i in live))
        order["updated_at"] = iso_now()

    def create_payment(self, call: Call) -> Reply:
        body = call.json_object()
        amount = body.get("amount")
        if not is_number(amount) or amount <= 0:
            raise bad_request("INVALID_AMOUNT", "amount must be a positive number")
        external_id = body.get("external_id")
        if external_id is not None and not isinstance(external_id, str):
            raise bad_request("INVALID_REQUEST", "external_id must be a string")
        invoice_id, order_id = body.get("invoice_id"), body.get("sales_order_id")
        if invoice_id:
            invoice = self.data["invoices"].get(invoice_id)
            if invoice is None:
                raise not_found("invoice", invoice_id)
            if invoice["status"] != "open":
                raise ApiError(
                    409, "INVOICE_NOT_OPEN", f"invoice {invoice_id} is {invoice['status']}"
                )
            invoices = [invoice]
            order = self.data["sales_orders"][invoice["sales_order_id"]]
        elif order_id:
            order = self._order(order_id)
            invoices = [
                self.data["invoices"][i]
                for i in order["invoice_ids"]
                if self.data["invoices"][i]["status"] == "open"
            ]
            if not invoices:
                raise ApiError(409, "NOTHING_DUE", f"sales order {order_id} has no open invoice")
        else:
            raise bad_request("INVALID_REQUEST", "give invoice_id or sales_order_id")
        currency = body.get("currency", order["currency"])
        if currency != order["currency"]:
            raise bad_request(
                "CURRENCY_MISMATCH", f"payment in {currency}, order in {order['currency']}"
            )
        due = money(sum(i["amount_due"] for i in invoices))
        if amount > due + 0.005:
            raise bad_request("AMOUNT_EXCEEDS_DUE", f"amount {amount} exceeds {due} due", due=due)
        self._check_external_id("payments", external_id)
        remaining, applied = float(amount), []
        for invoice in invoices:
            if remaining <= 0:
                break
            part = money(min(remaining, invoice["amount_due"]))
            invoice["amount_paid"] = money(invoice["amount_paid"] + part)
            invoice["amount_due"] = money(invoice["amount_due"] - part)
            if invoice["amount_due"] <= 0:
                invoice.update(status="paid", paid_at=iso_now())
            applied.append({"invoice_id": invoice["id"], "amount": part})
            remaining = money(remaining - part)
        self._refresh_totals(order)
        ident = f"PAY-{self.ids.next('payment', 1001)}"
        payment = {
            "id": ident,
            "external_id": external_id,
            "sales_order_id": order["id"],
            "invoice_id": invoices[0]["id"] if len(applied) == 1 else None,
            "customer_id": order["customer_id"],
            "account_id": order["account_id"],
            "amount": money(amount),
            "currency": order["currency"],
            "method": body.get("method", "wire"),
            "applied": applied,
            "created_at": iso_now(),
        }
        self.data["payments"][ident] = payment
        self._settle_receivable(payment)
        self.emit(
            "payment.applied",
            {
                "type": "payment.applied",
                "timestamp": payment["created_at"],
                "data": {
                    **payment,
                    "sales_order": {
                        k: order[k]
                        for k in (
                            "id",
                            "external_id",
                            "status",
                            "total",
                            "amount_paid",
                            "amount_due",
                        )
                    },
                },
            },
            webhook_id=f"msg_{self.ids.token('', 20)}",
            key=order["account_id"],
        )
        return Reply(201, payment)
