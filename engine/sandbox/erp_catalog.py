"""The ERP sandbox's base: record lookups, the item catalog and tax nexuses (master data), and
the ``/sandbox`` endpoints that change them."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from engine.sandbox.common import (
    JSON,
    ApiError,
    Call,
    Handler,
    Reply,
    bad_request,
    is_number,
    not_found,
    require_str,
)
from engine.sandbox.system import SandboxConfig, SandboxSystem
from engine.sandbox.tax import DEFAULT_TAX_RATES

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
    "API-OVERAGE": {"name": "API calls over the plan (1,000)", "unit_price": 5, "billing": "usage"},
}
"""The default item catalog: sku -> {name, unit_price (list price), billing}."""

DEFAULT_TAX_NEXUS: dict[str, list[str]] = {
    "US": ["US", "CA"],
    "EU": ["DE", "FR", "NL", "IE", "ES", "IT", "BE", "GB"],
}
"""Tax nexuses (ISO country codes) registered per subsidiary; e.g. ``AT`` is missing from EU."""


@dataclass
class ErpConfig(SandboxConfig):
    rate_limit: tuple[float, int] | None = (20.0, 40)
    items: dict[str, JSON] = field(default_factory=lambda: copy.deepcopy(DEFAULT_ITEMS))
    tax_nexus: dict[str, list[str]] = field(
        default_factory=lambda: copy.deepcopy(DEFAULT_TAX_NEXUS)
    )
    invoice_due_days: int = 30
    tax_rates: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TAX_RATES))


class ErpRecords(SandboxSystem):
    """Reads of any ERP collection and the checks every write shares."""

    config_class = ErpConfig
    config: ErpConfig

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

    @staticmethod
    def _reject(problems: list[JSON]) -> ApiError:
        first = problems[0]
        details = {k: v for k, v in first.items() if k not in ("code", "message")}
        return ApiError(400, first["code"], first["message"], errors=problems, **details)

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


class ErpCatalog(ErpRecords):
    """Master data: the item catalog, subsidiaries and their tax nexuses."""

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

    def _items_list(self) -> list[JSON]:
        return [{"sku": sku, **item} for sku, item in self.items.items()]

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
            raise self._reject(
                [
                    {
                        "code": "UNKNOWN_TAX_NEXUS",
                        "message": (
                            f"tax nexus {nexus!r} is not registered for subsidiary {subsidiary}"
                        ),
                        "tax_nexus": nexus,
                        "subsidiary": subsidiary,
                    }
                ]
            )
        return Reply(200, {"subsidiary": subsidiary, "tax_nexus": nexus, "registered": True})

    def _currency(self, body: JSON) -> str:
        currency = body.get("currency")
        if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
            raise bad_request("INVALID_CURRENCY", "currency must be an ISO 4217 code like USD")
        return currency.upper()

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
