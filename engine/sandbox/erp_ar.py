"""ERP accounts receivable: the customer invoices the billing platform issued, posted to the
ERP's receivables ledger (AR invoices), and settled when a payment for them is applied.

``POST /receivables`` posts one (``external_id`` is the billing invoice's id: a second post of it
is ``409 DUPLICATE_EXTERNAL_ID`` with ``existing_id``); the customer must exist (by CRM
``account_id``: ``400 UNKNOWN_CUSTOMER``), and a given ``sales_order_id`` must be an order of that
customer. A payment (``POST /payments``) whose ``external_id`` is an AR invoice's settles it
(``paid``); ``POST /receivables/{id}/void`` voids an open one. Amounts are major units.
"""

from __future__ import annotations

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
    parse_date,
    require_str,
)
from engine.sandbox.erp_customers import ErpCustomers

AR_STATUSES = ("open", "paid", "void")


class ErpAccountsReceivable(ErpCustomers):
    """AR invoices posted from billing, and their settlement."""

    def post_receivable(self, call: Call) -> Reply:
        body = call.json_object()
        external_id = require_str(body, "external_id")
        account_id = require_str(body, "account_id")
        amount = body.get("amount")
        if not is_number(amount) or amount < 0:
            raise bad_request("INVALID_AMOUNT", "amount must be a non-negative number",
                              field="amount")
        status = body.get("status", "open")
        if status not in AR_STATUSES:
            raise bad_request("INVALID_REQUEST", f"status must be one of {list(AR_STATUSES)}",
                              field="status")
        currency = self._currency(body)
        customer = next(
            (c for c in self.data["customers"].values() if c["account_id"] == account_id), None
        )
        if customer is None:
            raise bad_request("UNKNOWN_CUSTOMER", f"no customer for account {account_id!r}",
                              field="account_id", account_id=account_id)
        order_id = body.get("sales_order_id")
        if order_id is not None:
            order = self.data["sales_orders"].get(order_id)
            if order is None or order["account_id"] != account_id:
                raise bad_request("UNKNOWN_SALES_ORDER",
                                  f"{order_id!r} is no sales order of account {account_id!r}",
                                  field="sales_order_id")
        issued = (parse_date(body["invoice_date"], "invoice_date")
                  if body.get("invoice_date") is not None else dt.date.today())
        self._check_external_id("receivables", external_id)
        paid = amount if status == "paid" else 0
        ident = f"AR-{self.ids.next('receivable', 1001)}"
        record: JSON = {
            "id": ident,
            "external_id": external_id,
            "number": body.get("number"),
            "customer_id": customer["id"],
            "account_id": account_id,
            "sales_order_id": order_id,
            "currency": currency,
            "amount": money(amount),
            "amount_paid": money(paid),
            "amount_due": money(0 if status != "open" else amount),
            "status": status,
            "description": body.get("description"),
            "invoice_date": issued.isoformat(),
            "due_date": (issued + dt.timedelta(days=self.config.invoice_due_days)).isoformat(),
            "created_at": iso_now(),
            "updated_at": iso_now(),
        }
        self.data["receivables"][ident] = record
        return Reply(201, record)

    def void_receivable(self, call: Call) -> Reply:
        record = self.data["receivables"].get(call.params["id"])
        if record is None:
            raise not_found("receivable", call.params["id"])
        if record["status"] == "paid":
            raise ApiError(409, "RECEIVABLE_PAID", f"AR invoice {record['id']} is paid")
        record.update(status="void", amount_due=0, updated_at=iso_now())
        return Reply(200, record)

    def _settle_receivable(self, payment: JSON) -> None:
        """A payment for a billing invoice settles the AR invoice posted for it."""
        external_id = payment.get("external_id")
        for record in self.data["receivables"].values():
            if external_id is not None and record["external_id"] == external_id:
                if record["status"] == "open":
                    record.update(status="paid", amount_paid=record["amount"], amount_due=0,
                                  paid_at=iso_now(), payment_id=payment["id"],
                                  updated_at=iso_now())
                return
