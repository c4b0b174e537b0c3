"""The cloud ERP sandbox's accounts receivable (`CloudReceivables`, a mixin of
`ErpCloudSandbox`): the customer invoices the billing platform issued, posted as AR invoices of
the order's legal entity, and settled when a payment for them arrives.

``POST /api/v2/receivables {externalReference, orderId, customerReference?, documentNumber,
amount: {value, currencyCode}, state: Open|Paid|Voided, description, invoiceDate?}``: the
receivable belongs to the order's entity and customer (a ``customerReference`` naming another
customer is 422 ``customer_mismatch``, another currency 422 ``currency_mismatch``); the same
``externalReference`` in the entity again answers 200 with the existing one. ``PATCH
/api/v2/receivables/{id} {"state": "Voided"}`` voids an open one (409 ``receivable_paid`` once
paid). A payment (``POST /api/v2/payments``) whose ``externalReference`` is a receivable's
settles it (``Paid``). ``GET /api/v2/receivables[?entity=&orderId=&state=]`` lists them.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from engine.sandbox.common import JSON, Call, Reply, is_number, iso_now, money, parse_date
from engine.sandbox.erp_cloud_ledger import problem, reject

if TYPE_CHECKING:
    from engine.sandbox.erp_cloud import ErpCloudConfig

STATES = ("Open", "Paid", "Voided")


class CloudReceivables:
    """AR invoices posted from billing, and their settlement."""

    data: dict[str, dict[str, JSON]]
    config: ErpCloudConfig
    ids: Any

    if TYPE_CHECKING:  # provided by `CloudLedger` (a stub here would shadow it in the MRO)
        def order(self, ident: str) -> JSON: ...

        def _by_reference(self, collection: str, entity: str, reference: str) -> JSON | None:
            ...

    def post_receivable(self, call: Call) -> Reply:
        body = call.json_object()
        reference = body.get("externalReference")
        if not isinstance(reference, str) or not reference:
            raise reject([problem("reference_required", "externalReference is required",
                                  "/externalReference")])
        order = self.order(str(body.get("orderId")))
        existing = self._by_reference("receivables", order["entity"], reference)
        if existing is not None:
            return Reply(200, existing)
        raw = body.get("amount")
        amount: JSON = raw if isinstance(raw, dict) else {}
        value: Any = amount.get("value")
        currency = amount.get("currencyCode")
        problems = []
        if not is_number(value) or value < 0:
            problems.append(problem("invalid_amount", "amount.value must be a non-negative "
                                    "number", "/amount/value"))
        if currency != order["currencyCode"]:
            problems.append(problem("currency_mismatch", f"receivable in {currency}, order in "
                                    f"{order['currencyCode']}", "/amount/currencyCode"))
        customer = order["customer"]
        if body.get("customerReference") not in (None, customer["externalReference"]):
            problems.append(problem(
                "customer_mismatch", f"order {order['id']} is customer "
                f"{customer['externalReference']}'s, not {body.get('customerReference')!r}'s",
                "/customerReference"))
        state = body.get("state", "Open")
        if state not in STATES:
            problems.append(problem("invalid_state", f"state: one of {', '.join(STATES)}",
                                    "/state"))
        if problems:
            raise reject(problems)
        issued = (parse_date(body["invoiceDate"], "invoiceDate") if body.get("invoiceDate")
                  else dt.date.today())
        entity = order["entity"]
        paid = value if state == "Paid" else 0
        record: JSON = {
            "id": f"AR-{entity}-{self.ids.next(f'receivable-{entity}', 1):05d}",
            "entity": entity,
            "externalReference": reference,
            "documentNumber": body.get("documentNumber"),
            "orderId": order["id"],
            "customerId": customer["id"],
            "customerReference": customer["externalReference"],
            "amount": {"value": money(value), "currencyCode": currency},
            "amountPaid": money(paid),
            "balanceDue": money(value - paid) if state == "Open" else 0,
            "state": state,
            "description": body.get("description"),
            "invoiceDate": issued.isoformat(),
            "dueDate": (issued + dt.timedelta(days=self.config.payment_terms_days)).isoformat(),
            "createdAt": iso_now(),
            "modifiedAt": iso_now(),
        }
        self.data["receivables"][record["id"]] = record
        return Reply(201, record)

    def update_receivable(self, call: Call) -> Reply:
        """PATCH a receivable: only ``{"state": "Voided"}`` (again: 200 unchanged)."""
        record = self.data["receivables"].get(call.params["id"])
        if record is None:
            raise reject([problem("receivable_not_found", f"no receivable "
                                  f"{call.params['id']!r}", "/id")], 404)
        body = call.json_object()
        if body.get("state") != "Voided" or set(body) != {"state"}:
            raise reject([problem("unsupported_change", "only state: Voided can be changed",
                                  "/state")])
        if record["state"] == "Paid":
            raise reject([problem("receivable_paid", f"receivable {record['id']} is paid",
                                  "/state")], 409)
        record.update(state="Voided", balanceDue=0, modifiedAt=iso_now())
        return Reply(200, record)

    def settle_receivable(self, payment: JSON) -> None:
        """A payment for a billing invoice settles the open receivable posted for it."""
        record = self._by_reference("receivables", payment["entity"],
                                    str(payment.get("externalReference")))
        if record is not None and record["state"] == "Open":
            record.update(state="Paid", amountPaid=record["amount"]["value"], balanceDue=0,
                          paymentId=payment["id"], paidAt=iso_now(), modifiedAt=iso_now())
