"""Cloud ERP sandbox (`erp-cloud`): the ERP the reference integration migrates to, with another
API shape than the old one (`erp`).

- OAuth 2.0 client credentials (`engine.sandbox.oauth`): ``POST /oauth/token``; tokens expire
  (``token_ttl``) and ``POST /sandbox/tokens/expire`` revokes them all, so clients must refresh.
- REST resources under ``/api/v2`` in camelCase, with nested lines and money, its own ids per
  legal entity (``ORD-EU-00001``, ``CUST-EU-00001``) and JSON:API-style errors:
  ``{"errors": [{"status": "422", "code": "item_not_found", "title", "detail", "meta"}]}``.
- Per-entity data: each legal entity (``EU``, ``US``) has its currencies and tax registrations;
  customers and orders belong to one entity.
- Creating is idempotent by ``externalReference``: the same reference in the same entity answers
  200 with the existing record (a replay), never a duplicate.
- Tax: the net total is taxed once, rounded half up (`engine.sandbox.tax`); the old ERP rounds
  each line's tax, so on some orders they differ by a cent.

Endpoints: ``GET /api/v2/entities``, ``GET /api/v2/items``, ``POST /api/v2/tax/validate``
``{entity, countryCode}``, ``POST /api/v2/orders``, ``GET /api/v2/orders[?entity=
&externalReference=&state=]``, ``GET|PATCH /api/v2/orders/{id}`` (PATCH ``{"state":
"Cancelled", "cancellationReason"}``), ``POST /api/v2/orders/{id}/amendments``, ``POST|GET
/api/v2/payments``, ``GET /api/v2/customers``; the revenue module's schedules
(`engine.sandbox.erp_cloud_revenue`) and receivables (`engine.sandbox.erp_cloud_receivables`),
``GET /api/v2/amendments[?entity=&orderId=]``. Sandbox: ``POST /sandbox/items``, ``POST
/sandbox/tax-registrations {entity, countryCode}``, ``GET /sandbox/tokens``, ``POST
/sandbox/tokens/expire``, ``GET /sandbox/master-data``.

Run standalone: ``python -m engine.sandbox.erp_cloud --port 9106``.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route

from engine.sandbox.common import (
    JSON,
    ApiError,
    Call,
    Handler,
    Reply,
    add_months,
    iso_now,
    money,
    parse_date,
)
from engine.sandbox.erp import DEFAULT_ITEMS
from engine.sandbox.erp_cloud_ledger import CloudLedger, CloudProblem, problem, reject
from engine.sandbox.erp_cloud_master import CloudMasterData
from engine.sandbox.erp_cloud_receivables import CloudReceivables
from engine.sandbox.erp_cloud_revenue import CloudRevenue
from engine.sandbox.oauth import TOKEN_PATH, OAuthIssuer
from engine.sandbox.serving import run_standalone
from engine.sandbox.system import SandboxConfig, SandboxSystem
from engine.sandbox.tax import DEFAULT_TAX_RATES, tax_on_total

DEFAULT_CLIENT_ID = "syncline"
DEFAULT_CLIENT_SECRET = "sandbox-erp-cloud-client-secret"

DEFAULT_ENTITIES: dict[str, JSON] = {
    "EU": {"legalName": "Acme Europe B.V.", "currencies": ["EUR", "GBP"],
           "taxRegistrations": ["DE", "FR", "NL", "IE", "ES", "IT", "BE", "GB"]},
    "US": {"legalName": "Acme Inc.", "currencies": ["USD"], "taxRegistrations": ["US", "CA"]},
}
"""Legal entities: their currencies and the countries they are registered for tax in."""

ADDRESS_FIELDS = ("line1", "city", "postcode", "countryCode")


@dataclass
class ErpCloudConfig(SandboxConfig):
    rate_limit: tuple[float, int] | None = (50.0, 100)
    clients: dict[str, str] = field(
        default_factory=lambda: {DEFAULT_CLIENT_ID: DEFAULT_CLIENT_SECRET})
    """OAuth clients: id -> secret. Empty: no token is needed (tests of the API alone)."""
    token_ttl: float = 3600.0
    entities: dict[str, JSON] = field(default_factory=lambda: copy.deepcopy(DEFAULT_ENTITIES))
    items: dict[str, JSON] = field(default_factory=lambda: copy.deepcopy(DEFAULT_ITEMS))
    tax_rates: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TAX_RATES))
    payment_terms_days: int = 30
    """A receivable's due date: its invoice date plus these days."""


class ErpCloudSandbox(CloudMasterData, CloudRevenue, CloudReceivables, CloudLedger,
                      SandboxSystem):
    name = "erp-cloud"
    config_class = ErpCloudConfig
    config: ErpCloudConfig
    collections = ("customers", "orders", "amendments", "payments", "revenue_schedules",
                   "receivables")

    def __init__(self, config: ErpCloudConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.oauth = OAuthIssuer(self.config.clients, self.config.token_ttl)
        self.app.router.routes.insert(0, Route(TOKEN_PATH, self.oauth.endpoint,
                                               methods=["POST"]))

    # -- the base system's hooks

    def authorize(self, headers: Mapping[str, str]) -> None:
        if self.config.clients:
            self.oauth.check(headers)

    def error_body(self, error: ApiError) -> JSON:
        if isinstance(error, CloudProblem):
            return error.body()
        entry = {"status": str(error.status), "code": error.code.lower(),
                 "title": error.message}
        return {"errors": [{**entry, **({"meta": error.details} if error.details else {})}]}

    def reset(self) -> None:
        super().reset()
        if hasattr(self, "oauth"):
            self.oauth.reset()

    def snapshot(self) -> JSON:
        state = super().snapshot()
        state["oauth"] = self.oauth.describe()
        return state

    def reset_master_data(self) -> None:
        self.entities: dict[str, JSON] = copy.deepcopy(self.config.entities)
        self.items: dict[str, JSON] = copy.deepcopy(self.config.items)

    def master_data(self) -> JSON:
        return {"entities": copy.deepcopy(self.entities), "items": copy.deepcopy(self.items)}

    def routes(self) -> list[tuple[str, str, Handler]]:
        api = "/api/v2"
        return [
            ("GET", f"{api}/entities", lambda call: Reply(200, self._entity_list())),
            ("GET", f"{api}/items", lambda call: Reply(200, self._item_list())),
            ("POST", f"{api}/tax/validate", self.validate_tax),
            ("POST", f"{api}/orders", self.create_order),
            ("GET", f"{api}/orders", self.listing("orders", ("entity", "externalReference",
                                                             "state"))),
            ("GET", f"{api}/orders/{{id}}", self.fetch("orders", "order")),
            ("PATCH", f"{api}/orders/{{id}}", self.update_order),
            ("POST", f"{api}/orders/{{id}}/amendments", self.amend_order),
            ("GET", f"{api}/amendments", self.listing("amendments", ("entity", "orderId"))),
            ("GET", f"{api}/orders/{{id}}/revenue-schedule", self.order_schedule),
            ("POST", f"{api}/orders/{{id}}/revenue-schedule/lines", self.add_schedule_line),
            ("GET", f"{api}/revenue-schedules", self.list_schedules),
            ("POST", f"{api}/receivables", self.post_receivable),
            ("GET", f"{api}/receivables", self.listing("receivables", ("entity", "orderId",
                                                                       "state"))),
            ("GET", f"{api}/receivables/{{id}}", self.fetch("receivables", "receivable")),
            ("PATCH", f"{api}/receivables/{{id}}", self.update_receivable),
            ("POST", f"{api}/payments", self.create_payment),
            ("GET", f"{api}/payments", self.listing("payments", ("orderId", "entity"))),
            ("GET", f"{api}/customers", self.listing("customers", ("entity",
                                                                   "externalReference"))),
        ]

    def sandbox_routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/sandbox/master-data", lambda call: Reply(200, self.master_data())),
            ("POST", "/sandbox/items", self.h_add_item),
            ("POST", "/sandbox/tax-registrations", self.h_add_registration),
            ("GET", "/sandbox/tokens", lambda call: Reply(200, self.oauth.describe())),
            ("POST", "/sandbox/tokens/expire",
             lambda call: Reply(200, {"expired": self.oauth.expire_all()})),
        ]

    # -- orders

    def create_order(self, call: Call) -> Reply:
        body = call.json_object()
        code, entity = self._entity(body)
        reference = body.get("externalReference")
        if not isinstance(reference, str) or not reference:
            raise reject([problem("reference_required", "externalReference is required",
                                  "/externalReference")])
        existing = self._by_reference("orders", code, reference)
        if existing is not None:
            return Reply(200, existing)
        raw_customer = body.get("customer")
        customer: JSON = raw_customer if isinstance(raw_customer, dict) else {}
        problems = self._order_problems(body, code, entity, customer)
        lines, line_problems = self.priced_lines(body.get("orderLines"), "/orderLines",
                                                 quantity_key="quantity")
        problems += line_problems
        if problems:
            raise reject(problems)
        start = (parse_date(body["orderDate"], "orderDate") if body.get("orderDate")
                 else dt.date.today())
        months = (body.get("servicePeriod") or {}).get("months", 12)
        if not isinstance(months, int) or isinstance(months, bool) or months < 1:
            raise reject([problem("invalid_period", "servicePeriod.months: a positive integer",
                                  "/servicePeriod/months")])
        number = self.ids.next(f"order-{code}", 1)
        order: JSON = {
            "id": f"ORD-{code}-{number:05d}",
            "number": f"{code}-SO-{number:05d}",
            "entity": code,
            "externalReference": reference,
            "state": "Released",
            "customer": self._customer(code, customer, str(body["currencyCode"])),
            "shippingAddress": customer.get("shippingAddress") or customer["billingAddress"],
            "currencyCode": body["currencyCode"],
            "taxCountry": body["taxCountry"],
            "orderDate": start.isoformat(),
            "servicePeriod": {
                "start": start.isoformat(),
                "end": (add_months(start, months) - dt.timedelta(days=1)).isoformat(),
                "months": months,
            },
            "orderLines": lines,
            "amountPaid": 0,
            "notes": body.get("notes"),
            "amendmentIds": [],
            "paymentIds": [],
            "createdAt": iso_now(),
            "modifiedAt": iso_now(),
        }
        self.retotal(order)
        self.data["orders"][order["id"]] = order
        self.open_schedule(order)
        return Reply(201, order)

    def _order_problems(self, body: JSON, code: str, entity: JSON, customer: JSON) -> list[JSON]:
        problems = []
        if body.get("currencyCode") not in entity["currencies"]:
            problems.append(problem(
                "currency_not_allowed",
                f"entity {code} books in {', '.join(entity['currencies'])}, not "
                f"{body.get('currencyCode')!r}", "/currencyCode"))
        if not isinstance(customer.get("externalReference"), str) or not customer.get(
                "legalName"):
            problems.append(problem("customer_incomplete", "customer needs externalReference "
                                    "and legalName", "/customer"))
        address = customer.get("billingAddress")
        missing = [f for f in ADDRESS_FIELDS
                   if not isinstance(address, dict) or not address.get(f)]
        if missing:
            problems.append(problem("address_incomplete", f"billingAddress lacks "
                                    f"{', '.join(missing)}", "/customer/billingAddress",
                                    fields=missing))
        if body.get("taxCountry") not in entity["taxRegistrations"]:
            problems.append(self._unregistered(code, body.get("taxCountry")))
        return problems

    def _customer(self, entity: str, customer: JSON, currency: str) -> JSON:
        """The entity's customer with this externalReference, updated, or a new one."""
        reference = customer["externalReference"]
        record = self._by_reference("customers", entity, reference)
        if record is None:
            number = self.ids.next(f"customer-{entity}", 1)
            record = {"id": f"CUST-{entity}-{number:05d}", "entity": entity,
                      "externalReference": reference, "currencyCode": currency,
                      "createdAt": iso_now()}
            self.data["customers"][record["id"]] = record
        record.update(legalName=customer["legalName"],
                      billingAddress=dict(customer["billingAddress"]), modifiedAt=iso_now())
        return {k: copy.deepcopy(record[k])
                for k in ("id", "externalReference", "legalName", "billingAddress")}

    def retotal(self, order: JSON) -> None:
        """Net, tax (on the net total, rounded once) and gross; the balance due; the revenue
        schedule's order total."""
        amounts = [line["netAmount"] for line in order["orderLines"]]
        net = money(sum(amounts))
        tax = tax_on_total(amounts, self.config.tax_rates.get(order["taxCountry"], 0.0))
        order["totals"] = {"net": net, "tax": tax, "gross": money(net + tax)}
        order["balanceDue"] = (0 if order["state"] == "Cancelled"
                               else money(net - order["amountPaid"]))
        order["modifiedAt"] = iso_now()
        if "revenueScheduleId" in order:  # its schedule's totals and state follow the order
            self.schedule_of(order)

    def update_order(self, call: Call) -> Reply:
        """PATCH an order: only ``{"state": "Cancelled", "cancellationReason"}`` (again: 200
        unchanged; 409 order_has_payments once paid)."""
        order = self.order(call.params["id"])
        body = call.json_object()
        if body.get("state") != "Cancelled" or set(body) - {"state", "cancellationReason"}:
            raise reject([problem("unsupported_change", "only state: Cancelled (with an "
                                  "optional cancellationReason) can be changed", "/state")])
        if order["state"] == "Cancelled":
            return Reply(200, order)
        if order["amountPaid"]:
            raise reject([problem("order_has_payments", f"order {order['id']} has payments",
                                  "/state", amountPaid=order["amountPaid"])], 409)
        order["state"] = "Cancelled"
        order["cancellation"] = {"reason": body.get("cancellationReason"), "at": iso_now()}
        self.retotal(order)
        return Reply(200, order)


def create_app(config: ErpCloudConfig | None = None, **overrides: Any) -> Starlette:
    """The cloud ERP sandbox's Starlette app (``app.state.sandbox`` is the system)."""
    system = ErpCloudSandbox(config, **overrides)
    return system.app


if __name__ == "__main__":
    run_standalone(ErpCloudSandbox, 9106)
