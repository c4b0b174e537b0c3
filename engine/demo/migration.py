"""The ERP migration in `syncline demo`: where each entity's orders were booked and how the cloud
ERP's shadow of the US orders compared, read from the runs' lineage (`routing`, `shadows`), and
the cloud ERP's records in the old ERP's shape for the reconciliation (`cloud_records`).

The reference project routes the EU entity's order writes to the cloud ERP (`erp-cloud`) and
shadows the US entity's onto it (flows/closed-won-to-order.yaml): the demo reports both per
entity in plain words, and the reconciliation checks that each deal's order lives in the ERP of
record of its entity, and only there.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from engine.runtime.shadow import shadow_results

FLOW, STEP = "closed-won-to-order", "erp"
CLOUD, OLD = "erp-cloud", "erp"
US_COUNTRIES = frozenset({"US", "CA"})
"""Billing countries of the US entity (its tax nexuses); every other country is the EU's."""

NAMES = {CLOUD: "the cloud ERP", OLD: "the old ERP"}
WORDS = {"tax_amount": "tax", "total": "net total", "currency": "currency"}


def entity_of(currency: str) -> str:
    """A deal's entity by its currency: the US entity bills in USD only, the EU in EUR or GBP."""
    return "US" if currency.upper() == "USD" else "EU"


async def fetch_migration(client: httpx.AsyncClient, runs: list[dict[str, Any]],
                          states: Mapping[str, Any]) -> dict[str, Any]:
    """`migration_summary` of the day's closed-won runs, their details read through the admin
    API (as `syncline shadow report --url` reads them)."""
    gate = asyncio.Semaphore(8)

    async def detail(run_id: str) -> dict[str, Any]:
        async with gate:
            response = await client.get(f"/api/v1/runs/{run_id}")
            found: dict[str, Any] = response.raise_for_status().json()
            return found

    chosen = [r["id"] for r in runs if r["flow"] == FLOW and r["state"] == "succeeded"]
    return migration_summary(await asyncio.gather(*(detail(i) for i in chosen)), states)


def migration_summary(details: Iterable[dict[str, Any]],
                      states: Mapping[str, Any]) -> dict[str, Any]:
    """Routing per entity and shadow agreement, from the details of the closed-won runs."""
    routed: dict[str, Counter[str]] = defaultdict(Counter)
    shadows: dict[str, Counter[str]] = defaultdict(Counter)
    mismatched: dict[str, list[str]] = defaultdict(list)  # path -> external ids
    failures: Counter[str] = Counter()  # the candidate's error messages
    for run in details:
        if run.get("state") != "succeeded":
            continue
        step = next((s for s in run.get("steps", []) if s["id"] == STEP), None)
        attempts = (step or {}).get("attempts") or []
        route = ((attempts[-1].get("request") or {}).get("route") or {}) if attempts else {}
        if route:
            routed[str(route.get("value"))][route["system"]] += 1
        found = [r for sid, r in shadow_results(run) if sid == STEP]
        if found:
            entity = str(route.get("value") or "?")
            result = found[-1]
            shadows[entity][result["result"]] += 1
            for path in result.get("paths", []):
                mismatched[path].append(_external_id(attempts))
            if result["result"] == "error":
                failures[str(result.get("error"))] += 1
    return {
        "routing": {entity: dict(systems) for entity, systems in sorted(routed.items())},
        "shadow": {entity: dict(results) for entity, results in sorted(shadows.items())},
        "mismatches": {path: _explain(path, ids, states) for path, ids in mismatched.items()},
        "errors": dict(failures),
        "oauth": dict(states.get(CLOUD, {}).get("oauth", {})),
    }


def _external_id(attempts: list[Mapping[str, Any]]) -> str:
    body = (attempts[-1].get("request") or {}).get("body") or {}
    return str(body.get("external_id") or body.get("externalReference") or "")


def _explain(path: str, ids: list[str], states: Mapping[str, Any]) -> dict[str, Any]:
    """How often `path` differed and, for tax, by how much at most (from both ERPs' records)."""
    words = WORDS.get(path, path)
    if path != "tax_amount":
        return {"count": len(ids), "words": f"{words} differs"}
    old = {o["external_id"]: o for o in states.get(OLD, {}).get("data", {}).get(
        "sales_orders", [])}
    cloud = {o["externalReference"]: o for o in states.get(CLOUD, {}).get("data", {}).get(
        "orders", [])}
    gaps = [abs(float(old[i].get("tax_amount") or 0) - float(cloud[i]["totals"]["tax"]))
            for i in ids if i in old and i in cloud]
    biggest = max(gaps, default=0.0)
    rounding = bool(gaps) and biggest < 0.015 * max(1, len(_lines(old, ids)))
    return {"count": len(ids), "largest": round(biggest, 2),
            "words": "tax rounding" if rounding else "tax differs"}


def _lines(old: Mapping[str, Any], ids: list[str]) -> list[Any]:
    return [line for i in ids if i in old for line in old[i].get("lines", [])]


def migration_lines(summary: Mapping[str, Any]) -> list[str]:
    """The migration in plain words, one line per entity and fact."""
    if not summary.get("routing") and not summary.get("shadow"):
        return []
    lines = ["ERP migration (EU entity on the cloud ERP, US entity shadowed onto it)"]
    for entity, systems in summary["routing"].items():
        booked = "; ".join(f"{n} {'routed to' if s == CLOUD else 'booked in'} "
                           f"{NAMES.get(s, s)}" for s, n in sorted(systems.items()))
        lines.append(f"  {entity} orders: {booked}")
    for entity, results in summary["shadow"].items():
        total = sum(results.values())
        text = f"  {entity} orders: {results.get('match', 0)} of {total} matched the cloud ERP"
        if results.get("mismatch"):
            why = ", ".join(f"{m['words']} (at most {m['largest']:.2f})" if m.get("largest")
                            else m["words"] for m in summary["mismatches"].values())
            n = results["mismatch"]
            text += f"; {n} {'mismatch' if n == 1 else 'mismatches'}: {why}"
        if results.get("error"):
            n, first = results["error"], next(iter(summary.get("errors") or {"": 0}))
            text += f"; {n} shadow {'call' if n == 1 else 'calls'} failed ({first})"
        lines.append(text)
    oauth = summary.get("oauth") or {}
    if oauth:
        issued, refused = oauth.get("issued", 0), oauth.get("refused", 0)
        lines.append(f"  cloud ERP OAuth: {issued} {'token' if issued == 1 else 'tokens'} "
                     f"issued; {refused} {'call' if refused == 1 else 'calls'} refused with an "
                     "expired token and sent again with a fresh one")
    return [*lines, ""]


# -- the cloud ERP's records, for the reconciliation ------------------------------------------

def cloud_records(states: Mapping[str, Any], entity: str = "EU") -> dict[str, list[Any]]:
    """The cloud ERP's orders, amendments and payments of `entity`, in the old ERP's shape
    (sales_orders, adjustments, payments), so one set of checks covers both ERPs."""
    data = states.get(CLOUD, {}).get("data", {})
    orders = [_order(o) for o in data.get("orders", []) if o["entity"] == entity]
    adjustments = [{"id": a["id"], "external_id": a["externalReference"],
                    "sales_order_id": a["orderId"], "amount": a["netAmount"],
                    "lines": [{"sku": c["itemNumber"], "quantity": c.get("quantityDelta"),
                               "unit_price": c.get("unitPrice"), "amount": c.get("netAmount")}
                              for c in a.get("lineChanges", [])]}
                   for a in data.get("amendments", []) if a["entity"] == entity]
    payments = [{"id": p["id"], "external_id": p["externalReference"],
                 "amount": p["amount"]["value"], "currency": p["amount"]["currencyCode"]}
                for p in data.get("payments", []) if p["entity"] == entity]
    return {"sales_orders": orders, "adjustments": adjustments, "payments": payments}


def _order(order: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": order["id"],
        "external_id": order["externalReference"],
        "currency": order["currencyCode"],
        "status": "cancelled" if order["state"] == "Cancelled" else "open",
        "total": order["totals"]["net"],
        "start_date": order["servicePeriod"]["start"],
        "end_date": order["servicePeriod"]["end"],
        # a line's yearly run-rate, as the old ERP's lines keep it (its netAmount is what the
        # line is booked at: prorated amendments move it by less)
        "lines": [{"sku": li["itemNumber"], "quantity": li["quantity"],
                   "unit_price": li["unitPrice"],
                   "amount": round(li["quantity"] * li["unitPrice"], 2)}
                  for li in order["orderLines"]],
    }
