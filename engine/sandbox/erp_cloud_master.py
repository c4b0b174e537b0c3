"""The cloud ERP sandbox's master data (`CloudMasterData`, a mixin of `ErpCloudSandbox`): its
legal entities with their currencies and tax registrations, the item catalog, the tax check, and
the sandbox endpoints an operator fixes them with."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.sandbox.common import JSON, Call, Reply
from engine.sandbox.erp_cloud_ledger import problem, reject

if TYPE_CHECKING:
    import threading

    from engine.sandbox.erp_cloud import ErpCloudConfig


class CloudMasterData:
    """Entities, items and tax registrations, on the state of a `SandboxSystem`."""

    entities: dict[str, JSON]
    items: dict[str, JSON]
    config: ErpCloudConfig
    lock: threading.RLock

    def _entity_list(self) -> JSON:
        items = [{"code": code, **entity} for code, entity in self.entities.items()]
        return {"items": items, "count": len(items)}

    def _item_list(self) -> JSON:
        items = [{"itemNumber": sku, "description": item.get("name", sku),
                  "unitPrice": item.get("unit_price", 0)} for sku, item in self.items.items()]
        return {"items": items, "count": len(items)}

    def _entity(self, body: JSON) -> tuple[str, JSON]:
        code = body.get("entity")
        if not isinstance(code, str) or code not in self.entities:
            raise reject([problem("entity_not_found", f"no legal entity {code!r}",
                                  "/entity", known=sorted(self.entities))])
        return code, self.entities[code]

    def validate_tax(self, call: Call) -> Reply:
        """May `entity` charge tax in `countryCode`? 200, or 422 tax_registration_missing."""
        body = call.json_object()
        code, entity = self._entity(body)
        country = body.get("countryCode")
        if country not in entity["taxRegistrations"]:
            raise reject([self._unregistered(code, country)])
        return Reply(200, {"entity": code, "countryCode": country, "registered": True,
                           "rate": self.config.tax_rates.get(str(country), 0.0)})

    @staticmethod
    def _unregistered(entity: str, country: Any) -> JSON:
        return problem("tax_registration_missing",
                       f"entity {entity} is not registered for tax in {country!r}",
                       "/taxCountry", entity=entity, countryCode=country)

    def h_add_item(self, call: Call) -> Reply:
        body = call.json_object()
        sku = body.get("itemNumber")
        price = body.get("unitPrice", 0)
        if not isinstance(sku, str) or not sku or not isinstance(price, int | float):
            raise reject([problem("invalid_item", "itemNumber and a numeric unitPrice",
                                  "/itemNumber")])
        with self.lock:
            self.items[sku] = {"name": body.get("description") or sku, "unit_price": price}
        return Reply(201, {"itemNumber": sku, **self.items[sku]})

    def h_add_registration(self, call: Call) -> Reply:
        body = call.json_object()
        code, entity = self._entity(body)
        country = body.get("countryCode")
        if not isinstance(country, str) or len(country) != 2:
            raise reject([problem("invalid_country", "countryCode: two letters", "/countryCode")])
        with self.lock:
            if country not in entity["taxRegistrations"]:
                entity["taxRegistrations"].append(country)
        return Reply(201, {"entity": code, "taxRegistrations": list(entity["taxRegistrations"])})
