"""The billing sandbox's base: Stripe-shaped errors, lists and events, and the price catalog."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

from engine.sandbox.common import JSON, ApiError, Call, Handler, Reply
from engine.sandbox.system import SandboxConfig, SandboxSystem

API_VERSION = "2024-06-20"
DEFAULT_PRICES: dict[str, JSON] = {
    "price_plat_ent_yearly": {
        "product": "prod_plat_ent",
        "lookup_key": "PLAT-ENT",
        "unit_amount": 2400000,
        "currency": "usd",
        "recurring": {"interval": "year", "interval_count": 1},
    },
    "price_plat_pro_yearly": {
        "product": "prod_plat_pro",
        "lookup_key": "PLAT-PRO",
        "unit_amount": 1200000,
        "currency": "usd",
        "recurring": {"interval": "year", "interval_count": 1},
    },
    "price_seat_std_yearly": {
        "product": "prod_seat_std",
        "lookup_key": "SEAT-STD",
        "unit_amount": 60000,
        "currency": "usd",
        "recurring": {"interval": "year", "interval_count": 1},
    },
    "price_support_prem_yearly": {
        "product": "prod_support_prem",
        "lookup_key": "SUPPORT-PREM",
        "unit_amount": 500000,
        "currency": "usd",
        "recurring": {"interval": "year", "interval_count": 1},
    },
}
"""The default price catalog (``lookup_key`` is the matching ERP sku)."""

DEFAULT_INCLUDED_USAGE: dict[str, int] = {"PLAT-PRO": 100_000, "PLAT-ENT": 500_000}
"""API calls a month the platform plans include (products as the reference integration names
them); usage above that is an overage."""


def invalid(message: str, code: str = "parameter_invalid", param: str | None = None) -> ApiError:
    error = ApiError(400, code, message, type="invalid_request_error")
    if param:
        error.details["param"] = param
    return error


def missing(kind: str, ident: Any, param: str = "id") -> ApiError:
    return ApiError(
        404,
        "resource_missing",
        f"No such {kind}: '{ident}'",
        type="invalid_request_error",
        param=param,
    )


@dataclass
class BillingConfig(SandboxConfig):
    prices: dict[str, JSON] = field(default_factory=lambda: copy.deepcopy(DEFAULT_PRICES))
    included_usage: dict[str, int] = field(
        default_factory=lambda: dict(DEFAULT_INCLUDED_USAGE)
    )
    """API calls a month each plan product includes (per unit of the subscription item)."""


class BillingRecords(SandboxSystem):
    """Stripe-shaped reads, metadata, events, and the price catalog (master data)."""

    config_class = BillingConfig
    config: BillingConfig

    def now(self) -> int:
        """Billing's clock: the wall clock, moved on by ``POST /sandbox/clock`` (as Stripe's test
        clocks move a customer's time: events, periods and usage months follow it)."""
        return int(time.time() + self.clock_offset)

    def advance_clock(self, call: Call) -> Reply:
        body = call.json_object()
        days = body.get("days")
        if not isinstance(days, (int, float)) or isinstance(days, bool) or days < 0:
            raise invalid("days must be a non-negative number", param="days")
        with self.lock:
            self.clock_offset += float(days) * 86400
        return Reply(200, {"now": self.now(), "offset_days": self.clock_offset / 86400})

    def reset_master_data(self) -> None:
        self.clock_offset = 0.0
        self.closed_periods: set[str] = set()  # "<subscription>:<YYYY-MM>" closed early
        self.prices: dict[str, JSON] = {}
        for ident, price in self.config.prices.items():
            self.prices[ident] = self._price_object(ident, price)

    def master_data(self) -> JSON:
        return {"prices": copy.deepcopy(list(self.prices.values()))}

    @staticmethod
    def _price_object(ident: str, spec: JSON) -> JSON:
        return {
            "id": ident,
            "object": "price",
            "active": True,
            "currency": str(spec.get("currency", "usd")).lower(),
            "unit_amount": int(spec["unit_amount"]),
            "product": spec.get("product", f"prod_{ident}"),
            "lookup_key": spec.get("lookup_key"),
            "recurring": spec.get("recurring", {"interval": "month", "interval_count": 1}),
            "type": "recurring",
            "livemode": False,
        }

    def _list(self, records: Any, call: Call) -> JSON:
        data = list(records)
        limit = call.query.get("limit")
        if limit and limit.isdigit():
            data = data[: int(limit)]
        return {"object": "list", "data": data, "has_more": False, "url": call.path}

    def list_of(self, collection: str, filters: tuple[str, ...]) -> Handler:
        def handler(call: Call) -> Reply:
            records = list(self.data[collection].values())
            # Stripe lists newest first
            records.reverse()
            for name in filters:
                if name in call.query:
                    records = [r for r in records if str(r.get(name)) == call.query[name]]
            return Reply(200, self._list(records, call))

        return handler

    def get_one(self, collection: str, kind: str) -> Handler:
        def handler(call: Call) -> Reply:
            return Reply(200, self._get(collection, kind, call.params["id"]))

        return handler

    def _get(self, collection: str, kind: str, ident: str) -> JSON:
        record = self.data[collection].get(ident)
        if record is None:
            raise missing(kind, ident)
        return record

    def get_price(self, call: Call) -> Reply:
        price = self.prices.get(call.params["id"])
        if price is None:
            raise missing("price", call.params["id"])
        return Reply(200, price)

    @staticmethod
    def _metadata(body: JSON, current: JSON | None = None) -> JSON:
        metadata = body.get("metadata")
        if metadata is None:
            return dict(current or {})
        if not isinstance(metadata, dict):
            raise invalid("metadata must be an object", param="metadata")
        merged = dict(current or {})
        for key, value in metadata.items():
            if value in ("", None):
                merged.pop(key, None)  # Stripe: an empty value unsets a key
            else:
                merged[key] = str(value)
        return merged

    def _event(self, event_type: str, obj: JSON, previous: JSON | None = None) -> JSON:
        data: JSON = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = previous
        event_id = self.ids.token("evt_", 24)
        event = {
            "id": event_id,
            "object": "event",
            "api_version": API_VERSION,
            "created": self.now(),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        self.data["events"][event_id] = event
        customer = obj.get("customer") if obj.get("object") != "customer" else obj.get("id")
        self.emit(event_type, event, webhook_id=event_id,
                  key=customer if isinstance(customer, str) else None)
        return event

    def h_add_price(self, call: Call) -> Reply:
        body = call.json_object()
        ident = body.get("id")
        amount = body.get("unit_amount")
        if not isinstance(ident, str) or not ident:
            raise invalid("id is required", param="id")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise invalid("unit_amount must be a non-negative integer", param="unit_amount")
        with self.lock:
            self.prices[ident] = self._price_object(ident, body)
        return Reply(201, self.prices[ident])
