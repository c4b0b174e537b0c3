"""ERP sales orders: created (customer found or created, the whole order billed at once, its
revenue scheduled over the term), cancelled (invoices voided) and adjusted (quantity deltas, a
positive adjustment invoiced).

An adjustment line may carry ``amount``: what the delta costs for the rest of the term (a
mid-term change prorated by the integration; at most the line's full ``quantity * unit_price``,
with its sign). Without it the delta costs the full price. The order's ``total`` moves by the
adjustment's amount; its lines keep the yearly run-rate (``quantity * unit_price``)."""

from __future__ import annotations

import copy
import datetime as dt

from engine.sandbox.common import (
    JSON,
    ApiError,
    Call,
    Reply,
    add_months,
    bad_request,
    is_number,
    iso_now,
    money,
    parse_date,
    require_str,
)
from engine.sandbox.erp_schedules import ErpSchedules
from engine.sandbox.tax import tax_per_line


class ErpOrders(ErpSchedules):
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
        self._open_schedule(order)
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
        self.data["revenue_schedules"][order["revenue_schedule_id"]]["status"] = "cancelled"
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
        for index, (line, raw) in enumerate(zip(delta_lines, body["lines"], strict=True)):
            if isinstance(raw, dict) and raw.get("amount") is not None:
                line["amount"] = self._prorated(raw["amount"], line, index)
                line["prorated"] = True
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
        order["total"] = money(order["total"] + amount)
        order["adjustment_ids"].append(ident)
        if amount > 0:
            adjustment["invoice_id"] = self._invoice(order, delta_lines, amount, effective)["id"]
        self._refresh_totals(order)
        self.data["adjustments"][ident] = adjustment
        return Reply(201, {**adjustment, "sales_order": order})

    @staticmethod
    def _prorated(amount: object, line: JSON, index: int) -> float:
        """A delta line's prorated amount: a number with the line's sign, at most its full
        price."""
        full = line["amount"]
        if (not is_number(amount) or abs(amount) > abs(full) + 0.005
                or (amount != 0 and (amount > 0) != (full > 0))):
            raise bad_request(
                "INVALID_AMOUNT",
                f"lines[{index}].amount must be a number between 0 and {full} "
                "(the delta at the full price)",
                field=f"lines[{index}].amount",
            )
        return money(amount)
