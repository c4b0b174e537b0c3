"""Billing customers (Stripe's delete marks a customer deleted and keeps it)."""

from __future__ import annotations

from engine.sandbox.billing_catalog import BillingRecords, invalid
from engine.sandbox.common import Call, Reply


class BillingCustomers(BillingRecords):
    def create_customer(self, call: Call) -> Reply:
        body = call.json_object()
        for name in ("name", "email", "description"):
            if body.get(name) is not None and not isinstance(body[name], str):
                raise invalid(f"{name} must be a string", param=name)
        ident = self.ids.token("cus_")
        customer = {
            "id": ident,
            "object": "customer",
            "name": body.get("name"),
            "email": body.get("email"),
            "description": body.get("description"),
            "address": body.get("address"),
            "currency": None,
            "metadata": self._metadata(body),
            "created": self.now(),
            "livemode": False,
        }
        self.data["customers"][ident] = customer
        return Reply(200, customer)

    def update_customer(self, call: Call) -> Reply:
        customer = self._get("customers", "customer", call.params["id"])
        body = call.json_object()
        for name in ("name", "email", "description", "address"):
            if name in body:
                customer[name] = body[name]
        customer["metadata"] = self._metadata(body, customer["metadata"])
        return Reply(200, customer)

    def delete_customer(self, call: Call) -> Reply:
        """Stripe's delete: the customer is marked deleted (kept, as Stripe keeps it)."""
        customer = self._get("customers", "customer", call.params["id"])
        customer["deleted"] = True
        return Reply(200, {"id": customer["id"], "object": "customer", "deleted": True})
