"""ERP sandbox (NetSuite-like): customers, sales orders, invoices, payments.

Creating a sales order finds or creates the customer (by CRM ``account_id``) and bills the whole
order at once (one open invoice). Orders with master-data problems are rejected with ``400`` and
one of the codes ``MISSING_BILL_TO``, ``UNKNOWN_TAX_NEXUS`` (nexus not configured for the
subsidiary) or ``UNKNOWN_ITEM`` (sku not in the item catalog); ``error.errors`` lists every
problem found. An operator fixes master data with ``POST /sandbox/items`` and
``POST /sandbox/tax-nexus`` and the same request (even with the same Idempotency-Key) then
succeeds. Amounts are decimal major units (``1200.5`` = 1,200.50).

When a webhook URL is configured the ERP sends Standard Webhooks signed ``payment.applied`` events.

Run standalone: ``python -m engine.sandbox.erp --port 9102``.
"""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette

from engine.sandbox.common import (
    JSON,
    ApiError,
    Call,
    Handler,
    Reply,
    add_months,
    bad_request,
    is_number,
    iso_now,
    money,
    not_found,
    parse_date,
    require_str,
)
from engine.sandbox.serving import run_standalone
from engine.sandbox.system import SandboxConfig, SandboxSystem
from engine.sandbox.tax import DEFAULT_TAX_RATES, tax_per_line
from engine.sandbox.webhooks import STANDARD_WEBHOOKS

DEFAULT_ITEMS: dict[str, JSON] = {
    "PLAT-ENT": {
        "name": "Platform - Enterprise edition",
        "unit_price": 24000,
        "billing": "recurring",
    },
    "PLAT-PRO": {
        "name": "Platform - Professional edition",
        "unit_price": 12000,
        "billing": "recurring",
    },
    "SEAT-STD": {"name": "Named user seat", "unit_price": 600, "billing": "recurring"},
    "SUPPORT-PREM": {"name": "Premium support", "unit_price": 5000, "billing": "recurring"},
    "SVC-ONBOARD": {"name": "Onboarding services", "unit_price": 3000, "billing": "one_time"},
}
"""The default item catalog: sku -> {name, unit_price (list price), billing}."""

DEFAULT_TAX_NEXUS: dict[str, list[str]] = {
    "US": ["US", "CA"],
    "EU": ["DE", "FR", "NL", "IE", "ES", "IT", "BE", "GB"],
}
"""Tax nexuses (ISO country codes) registered per subsidiary; e.g. ``AT`` is missing from EU."""

DEFAULT_WEBHOOK_SECRET = "whsec_c3luY2xpbmUtc2FuZGJveC1lcnAtd2ViaG9vaw=="


@dataclass
class ErpConfig(SandboxConfig):
    rate_limit: tuple[float, int] | None = (20.0, 40)
    items: dict[str, JSON] = field(default_factory=lambda: copy.deepcopy(DEFAULT_ITEMS))
    tax_nexus: dict[str, list[str]] = field(
        default_factory=lambda: copy.deepcopy(DEFAULT_TAX_NEXUS)
    )
    invoice_due_days: int = 30
    tax_rates: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TAX_RATES))


class ErpSandbox(SandboxSystem):
    name = "erp"
    config_class = ErpConfig
    config: ErpConfig
    webhook_scheme = STANDARD_WEBHOOKS
    default_webhook_secret = DEFAULT_WEBHOOK_SECRET
    collections = ("customers", "sales_orders", "invoices", "payments", "adjustments")

    # -- master data

    def reset_master_data(self) -> None:
        self.items: dict[str, JSON] = copy.deepcopy(self.config.items)
        self.tax_nexus: dict[str, list[str]] = {
            sub: list(codes) for sub, codes in self.config.tax_nexus.items()
        }

    def master_data(self) -> JSON:
        return {"items": copy.deepcopy(self.items), "tax_nexus": copy.deepcopy(self.tax_nexus)}

    def add_item(
        self, sku: str, name: str | None = None, unit_price: float = 0, **extra: Any
    ) -> None:
        with self.lock:
            self.items[sku] = {"name": name or sku, "unit_price": unit_price, **extra}

    def add_tax_nexus(self, subsidiary: str, nexus: str) -> None:
        with self.lock:
            codes = self.tax_nexus.setdefault(subsidiary, [])
            if nexus not in codes:
                codes.append(nexus)

    # -- routes

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

    # -- generic reads

    def list_of(self, collection: str, filters: tuple[str, ...]) -> Handler:
        def handler(call: Call) -> Reply:
            records = list(self.data[collection].values())
            for name in filters:
                if name in call.query:
                    records = [r for r in records if str(r.get(name)) == call.query[name]]
            return Reply(200, {"data": records, "count": len(records)})

        return handler

    def get_one(self, collection: str, kind: str) -> Handler:
        def handler(call: Call) -> Reply:
            record = self.data[collection].get(call.params["id"])
            if record is None:
                raise not_found(kind, call.params["id"])
            return Reply(200, record)

        return handler

    def _items_list(self) -> list[JSON]:
        return [{"sku": sku, **item} for sku, item in self.items.items()]

    # -- validation

    def _bill_to_problems(self, customer: Any) -> list[JSON]:
        bill_to = customer.get("bill_to") if isinstance(customer, dict) else None
        if not isinstance(bill_to, dict):
            return [{"code": "MISSING_BILL_TO", "message": "customer.bill_to is missing"}]
        missing = [
            name
            for name in ("street", "city", "postal_code", "country")
            if not isinstance(bill_to.get(name), str) or not bill_to[name].strip()
        ]
        if missing:
            return [
                {
                    "code": "MISSING_BILL_TO",
                    "message": f"customer.bill_to lacks {', '.join(missing)}",
                    "fields": [f"customer.bill_to.{m}" for m in missing],
                }
            ]
        return []

    def _lines(self, raw: Any, *, delta: bool = False) -> tuple[list[JSON], list[JSON]]:
        """Validated lines and the UNKNOWN_ITEM problems among them."""
        if not isinstance(raw, list) or not raw:
            raise bad_request("NO_LINES", "lines must be a non-empty list")
        lines, unknown = [], []
        for index, line in enumerate(raw):
            if not isinstance(line, dict):
                raise bad_request("INVALID_REQUEST", f"lines[{index}] must be an object")
            sku = line.get("sku")
            if not isinstance(sku, str) or not sku:
                raise bad_request("INVALID_REQUEST", f"lines[{index}].sku is required")
            quantity, unit_price = line.get("quantity"), line.get("unit_price")
            if not is_number(quantity) or (quantity == 0 if delta else quantity <= 0):
                raise bad_request(
                    "INVALID_QUANTITY",
                    f"lines[{index}].quantity must be a positive number"
                    if not delta
                    else f"lines[{index}].quantity must be a non-zero number",
                    field=f"lines[{index}].quantity",
                )
            if unit_price is None and sku in self.items:
                unit_price = self.items[sku].get("unit_price", 0)
            if not is_number(unit_price) or unit_price < 0:
                raise bad_request(
                    "INVALID_REQUEST",
                    f"lines[{index}].unit_price must be a non-negative number",
                    field=f"lines[{index}].unit_price",
                )
            if sku not in self.items:
                unknown.append(sku)
            lines.append({"sku": sku, "quantity": quantity, "unit_price": unit_price})
        problems = [
            {"code": "UNKNOWN_ITEM", "message": f"item {sku!r} is not in the catalog", "sku": sku}
            for sku in dict.fromkeys(unknown)
        ]
        return lines, problems

    @staticmethod
    def _reject(problems: list[JSON]) -> ApiError:
        first = problems[0]
        details = {k: v for k, v in first.items() if k not in ("code", "message")}
        return ApiError(400, first["code"], first["message"], errors=problems, **details)

    def _subsidiary(self, body: JSON) -> str:
        subsidiary = body.get("subsidiary")
        if subsidiary not in self.tax_nexus:
            raise bad_request(
                "UNKNOWN_SUBSIDIARY",
                f"subsidiary must be one of {sorted(self.tax_nexus)}",
                field="subsidiary",
            )
        return str(subsidiary)

    def check_tax_nexus(self, call: Call) -> Reply:
        """A process API: may an order of `subsidiary` be taxed in `tax_nexus`? 200 when it may;
        400 UNKNOWN_TAX_NEXUS (as create-sales-order would answer) when it may not."""
        body = call.json_object()
        subsidiary = self._subsidiary(body)
        nexus = body.get("tax_nexus")
        if nexus not in self.tax_nexus[subsidiary]:
            raise self._reject([{
                "code": "UNKNOWN_TAX_NEXUS",
                "message": f"tax nexus {nexus!r} is not registered for subsidiary {subsidiary}",
                "tax_nexus": nexus,
                "subsidiary": subsidiary,
            }])
        return Reply(200, {"subsidiary": subsidiary, "tax_nexus": nexus, "registered": True})

    def _currency(self, body: JSON) -> str:
        currency = body.get("currency")
        if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
            raise bad_request("INVALID_CURRENCY", "currency must be an ISO 4217 code like USD")
        return currency.upper()

    def _check_external_id(self, collection: str, external_id: str | None) -> None:
        if external_id is None:
            return
        for record in self.data[collection].values():
            if record.get("external_id") == external_id:
                raise ApiError(
                    409,
                    "DUPLICATE_EXTERNAL_ID",
                    f"external_id {external_id!r} already exists",
                    existing_id=record["id"],
                    existing_status=record.get("status"),
                )

    # -- customers

    def _customer_from(self, customer: JSON, subsidiary: str | None, currency: str | None) -> JSON:
        """Find the customer by account_id (updating name and bill-to) or create it."""
        account_id = require_str(customer, "account_id")
        existing = next(
            (c for c in self.data["customers"].values() if c["account_id"] == account_id), None
        )
        bill_to = {
            k: customer["bill_to"].get(k) for k in ("street", "city", "postal_code", "country")
        }
        if existing is not None:
            existing.update(name=customer.get("name") or existing["name"], bill_to=bill_to)
            existing["updated_at"] = iso_now()
            return existing
        ident = f"CUS-{self.ids.next('customer', 1001)}"
        record = {
            "id": ident,
            "external_id": account_id,
            "account_id": account_id,
            "name": require_str(customer, "name"),
            "bill_to": bill_to,
            "subsidiary": subsidiary,
            "currency": currency,
            "status": "active",
            "created_at": iso_now(),
            "updated_at": iso_now(),
        }
        self.data["customers"][ident] = record
        return record

    def create_customer(self, call: Call) -> Reply:
        body = call.json_object()
        account_id = body.get("account_id") or body.get("external_id")
        if not isinstance(account_id, str) or not account_id:
            raise bad_request("INVALID_REQUEST", "account_id is required", field="account_id")
        problems = self._bill_to_problems(body)
        if problems:
            raise self._reject(problems)
        self._check_external_id("customers", account_id)
        subsidiary = self._subsidiary(body) if "subsidiary" in body else None
        currency = self._currency(body) if "currency" in body else None
        record = self._customer_from({**body, "account_id": account_id}, subsidiary, currency)
        return Reply(201, record)

    # -- sales orders

    def create_sales_order(self, call: Call) -> Reply:
        body = call.json_object()
        external_id = require_str(body, "external_id")
        customer = body.get("customer")
        if not isinstance(customer, dict):
            raise bad_request("INVALID_REQUEST", "customer is required (an object)")
        require_str(customer, "account_id")
        require_str(customer, "name")
        subsidiary = self._subsidiary(body)
        currency = self._currency(body)
        problems = self._bill_to_problems(customer)
        nexus = body.get("tax_nexus")
        if nexus not in self.tax_nexus[subsidiary]:
            problems.append(
                {
                    "code": "UNKNOWN_TAX_NEXUS",
                    "message": f"tax nexus {nexus!r} is not registered for subsidiary {subsidiary}",
                    "tax_nexus": nexus,
                    "subsidiary": subsidiary,
                }
            )
        lines, unknown = self._lines(body.get("lines"))
        problems += unknown
        term_months = body.get("term_months", 12)
        if not isinstance(term_months, int) or isinstance(term_months, bool) or term_months < 1:
            raise bad_request("INVALID_REQUEST", "term_months must be a positive integer")
        start = (
            parse_date(body["start_date"], "start_date")
            if body.get("start_date") is not None
            else dt.date.today()
        )
        if problems:
            raise self._reject(problems)
        self._check_external_id("sales_orders", external_id)

        record_customer = self._customer_from(customer, subsidiary, currency)
        number = self.ids.next("sales_order", 1001)
        ident = f"SO-{number}"
        order_lines = [self._order_line(i, line) for i, line in enumerate(lines, 1)]
        total = money(sum(line["amount"] for line in order_lines))
        order: JSON = {
            "id": ident,
            "tran_id": f"SO{number}",
            "external_id": external_id,
            "customer_id": record_customer["id"],
            "account_id": record_customer["account_id"],
            "customer": {
                "id": record_customer["id"],
                "account_id": record_customer["account_id"],
                "name": record_customer["name"],
                "bill_to": dict(record_customer["bill_to"]),
            },
            # where the goods go (tax follows them); without one, the bill-to
            "ship_to": dict(customer["ship_to"])
            if isinstance(customer.get("ship_to"), dict)
            else dict(record_customer["bill_to"]),
            "subsidiary": subsidiary,
            "currency": currency,
            "tax_nexus": nexus,
            "status": "open",
            "lines": order_lines,
            "total": total,
            # tax is reported beside the net total, each line's rounded to the cent
            "tax_amount": tax_per_line(
                [line["amount"] for line in order_lines], self.config.tax_rates.get(str(nexus), 0.0)
            ),
            "amount_paid": 0,
            "amount_due": total,
            "term_months": term_months,
            "start_date": start.isoformat(),
            "end_date": (add_months(start, term_months) - dt.timedelta(days=1)).isoformat(),
            "invoice_ids": [],
            "adjustment_ids": [],
            "memo": body.get("memo"),
            "created_at": iso_now(),
            "updated_at": iso_now(),
        }
        self.data["sales_orders"][ident] = order
        self._invoice(order, order_lines, total, start)
        return Reply(201, order)

    def _order_line(self, number: int, line: JSON) -> JSON:
        item = self.items[line["sku"]]
        return {
            "line": number,
            "sku": line["sku"],
            "description": item.get("name", line["sku"]),
            "quantity": line["quantity"],
            "unit_price": line["unit_price"],
            "amount": money(line["quantity"] * line["unit_price"]),
        }

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

    def _order(self, ident: str) -> JSON:
        order = self.data["sales_orders"].get(ident)
        if order is None:
            raise not_found("sales order", ident)
        return order

    def _refresh_totals(self, order: JSON) -> None:
        invoices = [self.data["invoices"][i] for i in order["invoice_ids"]]
        live = [i for i in invoices if i["status"] != "voided"]
        order["amount_paid"] = money(sum(i["amount_paid"] for i in live))
        order["amount_due"] = money(sum(i["amount_due"] for i in live))
        order["updated_at"] = iso_now()

    def cancel_sales_order(self, call: Call) -> Reply:
        order = self._order(call.params["id"])
        body = call.json_object()
        if order["status"] == "cancelled":
            return Reply(200, order)
        if order["amount_paid"]:
            raise ApiError(
                409,
                "ORDER_HAS_PAYMENTS",
                f"sales order {order['id']} has payments and cannot be cancelled",
                amount_paid=order["amount_paid"],
            )
        for invoice_id in order["invoice_ids"]:
            invoice = self.data["invoices"][invoice_id]
            invoice.update(status="voided", amount_due=0)
        order.update(status="cancelled", cancelled_at=iso_now(), cancel_reason=body.get("reason"))
        self._refresh_totals(order)
        return Reply(200, order)

    def adjust_sales_order(self, call: Call) -> Reply:
        order = self._order(call.params["id"])
        body = call.json_object()
        if order["status"] == "cancelled":
            raise ApiError(409, "ORDER_CANCELLED", f"sales order {order['id']} is cancelled")
        lines, unknown = self._lines(body.get("lines"), delta=True)
        if unknown:
            raise self._reject(unknown)
        external_id = body.get("external_id")
        if external_id is not None and not isinstance(external_id, str):
            raise bad_request("INVALID_REQUEST", "external_id must be a string")
        self._check_external_id("adjustments", external_id)
        effective = (
            parse_date(body["effective_date"], "effective_date")
            if body.get("effective_date") is not None
            else dt.date.today()
        )
        # apply to a copy first so a rejected adjustment changes nothing
        new_lines = copy.deepcopy(order["lines"])
        for line in lines:
            current = next((x for x in new_lines if x["sku"] == line["sku"]), None)
            if current is None:
                if line["quantity"] < 0:
                    raise bad_request(
                        "INVALID_QUANTITY", f"order has no {line['sku']} line to reduce"
                    )
                new_lines.append(self._order_line(len(new_lines) + 1, line))
                continue
            quantity = current["quantity"] + line["quantity"]
            if quantity < 0:
                raise bad_request(
                    "INVALID_QUANTITY", f"{line['sku']} quantity would become {quantity}"
                )
            current.update(
                quantity=quantity,
                unit_price=line["unit_price"],
                amount=money(quantity * line["unit_price"]),
            )
        delta_lines = [self._order_line(i, line) for i, line in enumerate(lines, 1)]
        amount = money(sum(line["amount"] for line in delta_lines))
        ident = f"ADJ-{self.ids.next('adjustment', 1001)}"
        adjustment: JSON = {
            "id": ident,
            "external_id": external_id,
            "sales_order_id": order["id"],
            "lines": delta_lines,
            "amount": amount,
            "effective_date": effective.isoformat(),
            "reason": body.get("reason"),
            "invoice_id": None,
            "created_at": iso_now(),
        }
        order["lines"] = new_lines
        order["total"] = money(sum(line["amount"] for line in new_lines))
        order["adjustment_ids"].append(ident)
        if amount > 0:
            adjustment["invoice_id"] = self._invoice(order, delta_lines, amount, effective)["id"]
        self._refresh_totals(order)
        self.data["adjustments"][ident] = adjustment
        return Reply(201, {**adjustment, "sales_order": order})

    # -- payments

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
        )
        return Reply(201, payment)

    # -- sandbox master-data endpoints

    def h_add_item(self, call: Call) -> Reply:
        body = call.json_object()
        sku = require_str(body, "sku")
        unit_price = body.get("unit_price", 0)
        if not is_number(unit_price) or unit_price < 0:
            raise bad_request("INVALID_REQUEST", "unit_price must be a non-negative number")
        extra = {k: v for k, v in body.items() if k not in ("sku", "name", "unit_price")}
        self.add_item(sku, body.get("name"), unit_price, **extra)
        return Reply(201, {"sku": sku, **self.items[sku]})

    def h_delete_item(self, call: Call) -> Reply:
        with self.lock:
            if self.items.pop(call.params["sku"], None) is None:
                raise not_found("item", call.params["sku"])
        return Reply(204)

    def h_add_tax_nexus(self, call: Call) -> Reply:
        body = call.json_object()
        subsidiary, nexus = require_str(body, "subsidiary"), require_str(body, "nexus")
        self.add_tax_nexus(subsidiary, nexus)
        return Reply(201, {"subsidiary": subsidiary, "tax_nexus": list(self.tax_nexus[subsidiary])})

    def h_delete_tax_nexus(self, call: Call) -> Reply:
        subsidiary, nexus = call.params["subsidiary"], call.params["nexus"]
        with self.lock:
            codes = self.tax_nexus.get(subsidiary, [])
            if nexus not in codes:
                raise not_found("tax nexus", f"{subsidiary}/{nexus}")
            codes.remove(nexus)
        return Reply(204)


def create_app(config: ErpConfig | None = None, **overrides: Any) -> Starlette:
    """The ERP sandbox's Starlette app (``app.state.sandbox`` is the `ErpSandbox`)."""
    return ErpSandbox(config, **overrides).app


if __name__ == "__main__":
    run_standalone(ErpSandbox, 9102)
