"""ERP customers: found or created by CRM ``account_id``, with a complete bill-to."""

from __future__ import annotations

from typing import Any

from engine.sandbox.common import (
    JSON,
    Call,
    Reply,
    bad_request,
    iso_now,
    require_str,
)
from engine.sandbox.erp_catalog import ErpCatalog


class ErpCustomers(ErpCatalog):
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
