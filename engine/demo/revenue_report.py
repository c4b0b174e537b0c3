"""The revenue section of the demo's report, in a finance reader's words and money, from the
systems' states: bookings and their revenue schedules, amendments prorated, usage overages
billed, receivables (billed, collected, open) and the renewal pipeline forecast in the CRM."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

TOLERANCE = 0.005


def _by_currency(pairs: Iterable[tuple[str, float]]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for currency, amount in pairs:
        totals[currency.upper()] += amount
    return {c: round(v, 2) for c, v in sorted(totals.items())}


def _money(totals: Mapping[str, float]) -> str:
    return ", ".join(f"{c} {v:,.2f}" for c, v in totals.items()) or "none"


def revenue_summary(states: Mapping[str, Any]) -> dict[str, Any]:
    """Figures (by currency) and the sentences that say them."""
    erp = states.get("erp", {}).get("data", {})
    billing = states.get("billing", {}).get("data", {})
    if not erp or "revenue_schedules" not in erp:
        return {}
    orders = {o["id"]: o for o in erp["sales_orders"] if o["status"] != "cancelled"}
    schedules = [s for s in erp["revenue_schedules"] if s["sales_order_id"] in orders]
    balanced = sum(
        1 for s in schedules
        if abs(sum(e["amount"] for e in s["entries"]) - orders[s["sales_order_id"]]["total"])
        < TOLERANCE
    )
    amendments = [a for a in erp["adjustments"]
                  if not any(li["sku"] == "API-OVERAGE" for li in a["lines"])]
    overages = [i for i in billing.get("invoiceitems", []) if i["metadata"].get("usage_id")]
    currency = {o["id"]: o["currency"] for o in erp["sales_orders"]}
    receivables = erp.get("receivables", [])
    crm = states.get("crm", {}).get("data", {})
    forecasts = [o for o in crm.get("opportunities", [])
                 if o.get("Renewal_Key__c") and o["StageName"] == "Prospecting"]
    figures = {
        "bookings": _by_currency((o["currency"], o["total"]) for o in orders.values()),
        "revenue_scheduled": _by_currency(
            (s["currency"], e["amount"]) for s in schedules for e in s["entries"]),
        "schedules_balanced": [balanced, len(schedules)],
        "amendments": len(amendments),
        "amendments_prorated": _by_currency(
            (currency[a["sales_order_id"]], a["amount"]) for a in amendments),
        "amendments_full_price": _by_currency(
            (currency[a["sales_order_id"]], sum(li["quantity"] * li["unit_price"]
                                                for li in a["lines"])) for a in amendments),
        "overage_months": len(overages),
        "overages_billed": _by_currency((i["currency"], i["amount"] / 100) for i in overages),
        "ar_invoices": len(receivables),
        "ar_billed": _by_currency((r["currency"], r["amount"]) for r in receivables
                                  if r["status"] != "void"),
        "ar_collected": _by_currency((r["currency"], r["amount_paid"]) for r in receivables),
        "ar_open": _by_currency((r["currency"], r["amount_due"]) for r in receivables
                                if r["status"] == "open"),
        "renewals_forecast": len(forecasts),
        "renewal_pipeline": _by_currency(
            (o["CurrencyIsoCode"], o.get("Amount") or 0) for o in forecasts),
    }
    return {**figures, "lines": _sentences(figures)}


def _sentences(f: Mapping[str, Any]) -> list[str]:
    balanced, schedules = f["schedules_balanced"]
    return [
        f"Bookings (live orders in the old ERP; the EU entity's are in the cloud ERP): "
        f"{_money(f['bookings'])}",
        f"Revenue scheduled: {_money(f['revenue_scheduled'])}; {balanced} of {schedules} "
        "old-ERP revenue schedules sum to their order total",
        f"Mid-term amendments: {f['amendments']}, booked prorated at "
        f"{_money(f['amendments_prorated'])} (a full year would have been "
        f"{_money(f['amendments_full_price'])})",
        f"Usage overages: {f['overage_months']} customer-months over plan, billed "
        f"{_money(f['overages_billed'])}",
        f"Receivables: {f['ar_invoices']} invoices posted to ERP AR, billed "
        f"{_money(f['ar_billed'])}; collected {_money(f['ar_collected'])}; open "
        f"{_money(f['ar_open'])}",
        f"Renewal pipeline (renewing within 90 days, forecast in the CRM): "
        f"{f['renewals_forecast']} renewals worth {_money(f['renewal_pipeline'])} a year",
    ]
