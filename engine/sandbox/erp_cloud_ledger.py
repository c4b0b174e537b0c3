"""The cloud ERP sandbox's errors (JSON:API style) and what happens to an order after it is
booked: reads, amendments (prorated or not) and customer payments (`CloudLedger`, a mixin of
`ErpCloudSandbox`)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from engine.sandbox.common import JSON, ApiError, Call, Handler, Reply, is_number, iso_now, money

if TYPE_CHECKING:
    from engine.sandbox.erp_cloud import ErpCloudConfig


class CloudProblem(ApiError):
    """A rejection with every problem found: ``{"errors": [{status, code, title, detail,
    source: {pointer}, meta}]}``."""

    def __init__(self, status: int, problems: list[JSON]) -> None:
        first = problems[0]
        super().__init__(status, first["code"], first["detail"])
        self.problems = [{"status": str(status), **p} for p in problems]

    def body(self) -> JSON:
        return {"errors": self.problems}


def problem(code: str, detail: str, pointer: str, **meta: Any) -> JSON:
    found: JSON = {"code": code, "title": code.replace("_", " ").capitalize(), "detail": detail,
                   "source": {"pointer": pointer}}
    if meta:
        found["meta"] = meta
    return found


def reject(problems: list[JSON], status: int = 422) -> CloudProblem:
    return CloudProblem(status, problems)


class CloudLedger:
    """Reads, line pricing, amendments and payments, on the state of a `SandboxSystem`."""

    data: dict[str, dict[str, JSON]]
    items: dict[str, JSON]
    config: ErpCloudConfig
    ids: Any

    def retotal(self, order: JSON) -> None: ...  # provided by the system

    def settle_receivable(self, payment: JSON) -> None: ...  # by `CloudReceivables`

    # -- reads

    def listing(self, collection: str, filters: tuple[str, ...]) -> Handler:
        def handler(call: Call) -> Reply:
            records = list(self.data[collection].values())
            for name in filters:
                if name in call.query:
                    records = [r for r in records if str(r.get(name)) == call.query[name]]
            return Reply(200, {"items": records, "count": len(records)})

        return handler

    def fetch(self, collection: str, kind: str) -> Handler:
        def handler(call: Call) -> Reply:
            record = self.data[collection].get(call.params["id"])
            if record is None:
                raise reject([problem(f"{kind}_not_found", f"no {kind} {call.params['id']!r}",
                                      "/id")], 404)
            return Reply(200, record)

        return handler

    def order(self, ident: str) -> JSON:
        found = self.data["orders"].get(ident)
        if found is None:
            raise reject([problem("order_not_found", f"no order {ident!r}", "/id")], 404)
        return found

    def _by_reference(self, collection: str, entity: str, reference: str) -> JSON | None:
        return next((r for r in self.data[collection].values()
                     if r["entity"] == entity and r["externalReference"] == reference), None)

    def priced_lines(self, raw: Any, pointer: str, *, quantity_key: str,
                     delta: bool = False) -> tuple[list[JSON], list[JSON]]:
        """Lines with their catalog description and net amount, and the problems found (an
        unknown item is collected; a malformed line is refused at once)."""
        if not isinstance(raw, list) or not raw:
            raise reject([problem("order_lines_required", "at least one line", pointer)])
        lines, problems = [], []
        for index, line in enumerate(raw):
            where = f"{pointer}/{index}"
            sku = line.get("itemNumber") if isinstance(line, dict) else None
            quantity = line.get(quantity_key) if isinstance(line, dict) else None
            price = line.get("unitPrice") if isinstance(line, dict) else None
            if not isinstance(sku, str) or not is_number(quantity) or (
                    quantity == 0 if delta else quantity <= 0):
                raise reject([problem("invalid_line", f"line {index}: itemNumber and a "
                                      f"{'non-zero' if delta else 'positive'} {quantity_key}",
                                      where)])
            if sku not in self.items:
                problems.append(problem("item_not_found", f"item {sku!r} is not in the item "
                                        "catalog", f"{where}/itemNumber", itemNumber=sku))
                continue
            if price is None:
                price = self.items[sku].get("unit_price", 0)
            if not is_number(price) or price < 0:
                raise reject([problem("invalid_line", f"line {index}: unitPrice must be a "
                                      "non-negative number", f"{where}/unitPrice")])
            lines.append({"lineNo": 10 * (index + 1), "itemNumber": sku,
                          "description": self.items[sku].get("name", sku),
                          quantity_key: quantity, "unitPrice": price,
                          "netAmount": money(quantity * price)})
        return lines, problems

    # -- amendments

    def amend_order(self, call: Call) -> Reply:
        """``POST /api/v2/orders/{id}/amendments {externalReference, effectiveDate, reason,
        lineChanges: [{itemNumber, quantityDelta, unitPrice}]}``: the order's lines change by
        the deltas; the same externalReference again answers 200 with the amendment made."""
        order = self.order(call.params["id"])
        body = call.json_object()
        reference = body.get("externalReference")
        for amendment in self.data["amendments"].values():
            if reference and amendment["externalReference"] == reference:
                return Reply(200, {**amendment, "order": self.order(amendment["orderId"])})
        if order["state"] == "Cancelled":
            raise reject([problem("order_cancelled", f"order {order['id']} is cancelled",
                                  "/id")], 409)
        changes, problems = self.priced_lines(body.get("lineChanges"), "/lineChanges",
                                              quantity_key="quantityDelta", delta=True)
        if problems:
            raise reject(problems)
        self._prorate(changes, body["lineChanges"])
        lines = copy.deepcopy(order["orderLines"])
        for change in changes:
            line = next((x for x in lines if x["itemNumber"] == change["itemNumber"]), None)
            if line is None:
                line = {**change, "lineNo": 10 * (len(lines) + 1), "quantity": 0,
                        "netAmount": 0}
                del line["quantityDelta"]
                line.pop("prorated", None)
                lines.append(line)
            quantity = line["quantity"] + change["quantityDelta"]
            if quantity < 0:
                raise reject([problem("invalid_line", f"{change['itemNumber']} quantity would "
                                      f"become {quantity}", "/lineChanges")])
            line.update(quantity=quantity, unitPrice=change["unitPrice"],
                        netAmount=money(line["netAmount"] + change["netAmount"]))
        entity = order["entity"]
        amendment = {
            "id": f"AMD-{entity}-{self.ids.next(f'amendment-{entity}', 1):05d}",
            "entity": entity,
            "orderId": order["id"],
            "externalReference": reference,
            "effectiveDate": body.get("effectiveDate"),
            "reason": body.get("reason"),
            "lineChanges": changes,
            "netAmount": money(sum(c["netAmount"] for c in changes)),
            "createdAt": iso_now(),
        }
        order["orderLines"] = lines
        order["amendmentIds"].append(amendment["id"])
        self.retotal(order)
        self.data["amendments"][amendment["id"]] = amendment
        return Reply(201, {**amendment, "order": order})

    @staticmethod
    def _prorate(changes: list[JSON], raw: list[Any]) -> None:
        """A line change may carry ``netAmount``: what the delta costs for the rest of the
        service period (prorated by the integration), at most the full ``quantityDelta *
        unitPrice`` with its sign; the order line's net amount moves by it. Without it the
        change costs the full price."""
        for index, (change, sent) in enumerate(zip(changes, raw, strict=True)):
            amount = sent.get("netAmount")
            if amount is None:
                continue
            full = change["netAmount"]
            if (not is_number(amount) or abs(amount) > abs(full) + 0.005
                    or (amount != 0 and (amount > 0) != (full > 0))):
                raise reject([problem(
                    "invalid_amount", f"line {index}: netAmount must be between 0 and {full} "
                    "(the change at the full price)", f"/lineChanges/{index}/netAmount")])
            change.update(netAmount=money(amount), prorated=True)

    # -- payments

    def create_payment(self, call: Call) -> Reply:
        """``POST /api/v2/payments {externalReference, orderId, amount: {value, currencyCode},
        paymentMethod}``; the same externalReference again answers 200 with that payment."""
        body = call.json_object()
        reference = body.get("externalReference")
        for payment in self.data["payments"].values():
            if reference and payment["externalReference"] == reference:
                return Reply(200, payment)
        order = self.order(str(body.get("orderId")))
        raw = body.get("amount")
        amount: JSON = raw if isinstance(raw, dict) else {}
        value, currency = amount.get("value"), amount.get("currencyCode")
        if not is_number(value) or value <= 0:
            raise reject([problem("invalid_amount", "amount.value must be positive",
                                  "/amount/value")])
        if currency != order["currencyCode"]:
            raise reject([problem("currency_mismatch", f"payment in {currency}, order in "
                                  f"{order['currencyCode']}", "/amount/currencyCode")])
        if order["state"] == "Cancelled" or value > order["balanceDue"] + 0.005:
            raise reject([problem("amount_exceeds_balance", f"{value} exceeds the balance "
                                  f"{order['balanceDue']} due", "/amount/value",
                                  balanceDue=order["balanceDue"])])
        entity = order["entity"]
        payment = {
            "id": f"PMT-{entity}-{self.ids.next(f'payment-{entity}', 1):05d}",
            "entity": entity,
            "externalReference": reference,
            "orderId": order["id"],
            "customerId": order["customer"]["id"],
            "amount": {"value": money(value), "currencyCode": currency},
            "paymentMethod": body.get("paymentMethod"),
            "createdAt": iso_now(),
        }
        order["amountPaid"] = money(order["amountPaid"] + value)
        order["paymentIds"].append(payment["id"])
        self.retotal(order)
        self.data["payments"][payment["id"]] = payment
        self.settle_receivable(payment)
        return Reply(201, payment)
