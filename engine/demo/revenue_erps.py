"""The revenue records of both ERPs in one shape, for the demo's revenue checks and report: the
old ERP's (the US entity's) as they are, and the cloud ERP's EU entity's orders, amendments,
payments, revenue schedules and receivables in the old ERP's shape (`engine.demo.migration`
converts the first three), so every currency's revenue is checked and reported by one code
path. Each record says which ERP keeps it (``erp``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.demo.migration import CLOUD, OLD, cloud_records

KINDS = ("sales_orders", "adjustments", "payments", "revenue_schedules", "receivables")
AR_STATUS = {"Open": "open", "Paid": "paid", "Voided": "void"}


def revenue_records(states: Mapping[str, Any], entity: str = "EU") -> dict[str, list[Any]]:
    """Both ERPs' records by kind (`KINDS`), the old ERP's first."""
    old = states.get(OLD, {}).get("data", {})
    cloud = {**cloud_records(states, entity), **_cloud_revenue(states, entity)}
    return {kind: [*({**r, "erp": OLD} for r in old.get(kind, [])),
                   *({**r, "erp": CLOUD} for r in cloud.get(kind, []))]
            for kind in KINDS}


def _cloud_revenue(states: Mapping[str, Any], entity: str) -> dict[str, list[Any]]:
    data = states.get(CLOUD, {}).get("data", {})
    schedules = [{
        "id": s["id"],
        "sales_order_id": s["orderId"],
        "currency": s["currencyCode"],
        "status": s["state"].lower(),
        "entries": [{"external_id": line["externalReference"], "source": line["sourceId"],
                     "start_date": line["periodStart"], "end_date": line["periodEnd"],
                     "amount": line["amount"]} for line in s["lines"]],
    } for s in data.get("revenue_schedules", []) if s["entity"] == entity]
    receivables = [{
        "id": r["id"],
        "external_id": r["externalReference"],
        "number": r.get("documentNumber"),
        "sales_order_id": r["orderId"],
        "currency": r["amount"]["currencyCode"],
        "amount": r["amount"]["value"],
        "amount_paid": r["amountPaid"],
        "amount_due": r["balanceDue"],
        "status": AR_STATUS.get(r["state"], r["state"]),
    } for r in data.get("receivables", []) if r["entity"] == entity]
    return {"revenue_schedules": schedules, "receivables": receivables}
