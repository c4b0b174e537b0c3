"""The revenue section of the demo's report, in a finance reader's words and money, from the
systems' states: bookings and their revenue schedules, amendments prorated, usage overages
billed and booked, receivables (billed, collected, open) and the renewal pipeline forecast in
the CRM. Money is per currency, and covers both ERPs (the US entity's USD in the old ERP, the
EU entity's EUR and GBP in the cloud ERP: `engine.demo.revenue_erps`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from engine.demo.migration import CLOUD, OLD
from engine.demo.revenue_erps import revenue_records

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
    if "revenue_schedules" not in states.get(OLD, {}).get("data", {}):
        return {}
    erp = revenue_records(states)
    billing = states.get("billing", {}).get("data", {})
    orders = {o["id"]: o for o in erp["sales_orders"] if o["status"] != "cancelled"}
    schedules = [s for s in erp["revenue_schedules"] if s["sales_order_id"] in orders]
    by_erp = {system: [s for s in schedules if s["erp"] == system] for system in (OLD, CLOUD)}
    balanced = {
        system: [sum(1 for s in mine if _sums_to_total(s, orders[s["sales_order_id"]])),
                 len(mine)]
        for system, mine in by_erp.items()
    }
    amendments = [a for a in erp["adjustments"]
                  if not any(li["sku"] == "API-OVERAGE" for li in a["lines"])]
    overages = [i for i in billing.get("invoiceitems", []) if i["metadata"].get("usage_id")]
    booked = [a for a in erp["adjustments"]
              if any(li["sku"] == "API-OVERAGE" for li in a["lines"])]
    currency = {o["id"]: o["currency"] for o in erp["sales_orders"]}
    receivables = erp["receivables"]
    crm = states.get("crm", {}).get("data", {})
    forecasts = [o for o in crm.get("opportunities", [])
                 if o.get("Renewal_Key__c") and o["StageName"] == "Prospecting"]
    figures = {
        "bookings": _by_currency((o["currency"], o["total"]) for o in orders.values()),
        "revenue_scheduled": _by_currency(
            (s["currency"], e["amount"]) for s in schedules for e in s["entries"]),
        "schedules_balanced": [sum(b for b, _ in balanced.values()), len(schedules)],
        "schedules_balanced_by_erp": balanced,
        "amendments": len(amendments),
        "amendments_prorated": _by_currency(
            (currency[a["sales_order_id"]], a["amount"]) for a in amendments),
        "amendments_full_price": _by_currency(
            (currency[a["sales_order_id"]], sum(li["quantity"] * li["unit_price"]
                                                for li in a["lines"])) for a in amendments),
        "overage_months": len(overages),
        "overages_billed": _by_currency((i["currency"], i["amount"] / 100) for i in overages),
        "overages_booked": _by_currency(
            (currency[a["sales_order_id"]], a["amount"]) for a in booked),
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


def _sums_to_total(schedule: Mapping[str, Any], order: Mapping[str, Any]) -> bool:
    return bool(abs(sum(e["amount"] for e in schedule["entries"]) - order["total"]) < TOLERANCE)


def _sentences(f: Mapping[str, Any]) -> list[str]:
    balanced, schedules = f["schedules_balanced"]
    (old, old_all), (cloud, cloud_all) = (f["schedules_balanced_by_erp"][e] for e in (OLD, CLOUD))
    return [
        f"Bookings (live orders: the US entity's in the old ERP, the EU entity's in the cloud "
        f"ERP): {_money(f['bookings'])}",
        f"Revenue scheduled: {_money(f['revenue_scheduled'])}; {balanced} of {schedules} "
        f"revenue schedules sum to their order total (old ERP {old} of {old_all}, cloud ERP "
        f"{cloud} of {cloud_all})",
        f"Mid-term amendments: {f['amendments']}, booked prorated at "
        f"{_money(f['amendments_prorated'])} (a full year would have been "
        f"{_money(f['amendments_full_price'])})",
        f"Usage overages: {f['overage_months']} customer-month"
        f"{'' if f['overage_months'] == 1 else 's'} over plan, billed "
        f"{_money(f['overages_billed'])}; booked on their orders in the ERPs "
        f"{_money(f['overages_booked'])}",
        f"Receivables: {f['ar_invoices']} invoices posted to the ERPs' AR, billed "
        f"{_money(f['ar_billed'])}; collected {_money(f['ar_collected'])}; open "
        f"{_money(f['ar_open'])}",
        f"Renewal pipeline (renewing within 90 days, forecast in the CRM): "
        f"{f['renewals_forecast']} renewals worth {_money(f['renewal_pipeline'])} a year",
    ]
