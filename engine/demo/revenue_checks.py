"""The revenue checks of the demo's reconciliation that the product's Reconciliations cannot
express (`engine.demo.reconcile` runs them), from the systems' `GET /sandbox/state`, over both
ERPs (the US entity's revenue in the old ERP, the EU entity's in the cloud ERP, read in one shape
by `engine.demo.revenue_erps`):

- an AR invoice's amount is its billing invoice's (cents against major units: JMESPath has no
  arithmetic);
- an amendment is prorated (it costs less than the full-price delta, more than nothing) and
  its ERP revenue schedule took the adjustment's amount (a join of adjustments and schedule
  entries by source);
- an overage is rated right: started blocks of 1,000 calls above what the plan includes, at the
  currency's block price, and the order's ERP booked what billing billed (a computation from
  three lists, and cents against major units);
- the CRM account shows the payment status of its subscription's invoices (a join through
  the subscription, and a verdict over several invoices);
- a renewal re-priced the subscription and gave it the new term's contract dates (a join of
  the renewal deal, its ERP order and the subscription through the account).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine.demo.revenue_erps import revenue_records
from engine.demo.scenario import INCLUDED_API_CALLS

if TYPE_CHECKING:
    from engine.demo.reconcile import Reconciliation

BLOCK = 1000
BLOCK_PRICE = {"usd": 500, "eur": 460, "gbp": 395}  # minor units, as mapping usage-to-overage
TOLERANCE = 0.005


def revenue(result: Reconciliation, states: Mapping[str, Mapping[str, Any]]) -> None:
    erp, billing = revenue_records(states), states["billing"]["data"]
    _ar_amounts(result, erp, billing)
    _amendments(result, erp)
    _overages(result, erp, billing)
    _payment_status(result, states["crm"]["data"], billing)
    _renewal_terms(result, states["crm"]["data"], erp, billing)


def _renewal_terms(
    result: Reconciliation, crm: Mapping[str, Any], erp: Mapping[str, Any],
    billing: Mapping[str, Any],
) -> None:
    subscriptions = {s["metadata"].get("current_order_id"): s for s in billing["subscriptions"]}
    orders = {o["external_id"]: o for o in erp["sales_orders"]}
    for deal in crm["opportunities"]:
        if deal.get("Type") != "Renewal" or deal["StageName"] != "Closed Won":
            continue
        subscription, order = subscriptions.get(deal["Id"]), orders.get(deal["Id"])
        if subscription is None or order is None:  # the renewal checks report it
            continue
        meta = subscription["metadata"]
        prices = {i["price"]["product"]: i["price"]["unit_amount"]
                  for i in subscription["items"]["data"]}
        sold = {li["sku"]: round(li["unit_price"] * 100) for li in order["lines"]
                if li["sku"] not in ("SVC-ONBOARD", "API-OVERAGE")}
        result.check(
            "renewal contract terms in billing",
            (meta.get("current_term_start"), meta.get("current_term_end"))
            == (order["start_date"], order["end_date"]) and prices == sold,
            f"renewal {deal['Id']}: subscription {subscription['id']} has term "
            f"{meta.get('current_term_start')}..{meta.get('current_term_end')} at {prices}, "
            f"the renewal order {order['start_date']}..{order['end_date']} at {sold}",
        )


def _ar_amounts(result: Reconciliation, erp: Mapping[str, Any], billing: Mapping[str, Any]) -> None:
    invoices = {i["id"]: i for i in billing["invoices"]}
    for ar in erp.get("receivables", []):
        invoice = invoices.get(ar["external_id"])
        if invoice is None:  # ar-invoices-vs-billing-invoices reports it
            continue
        amount = invoice["amount_due"] / 100
        result.check(
            "AR invoice amount",
            abs(ar["amount"] - amount) < TOLERANCE,
            f"AR invoice {ar['id']} is {ar['amount']:,.2f} {ar['currency']}, billing invoice "
            f"{invoice['number']} {amount:,.2f}",
        )


def _amendments(result: Reconciliation, erp: Mapping[str, Any]) -> None:
    entries = {
        e["source"]: e for s in erp.get("revenue_schedules", []) for e in s["entries"]
    }
    for adjustment in erp["adjustments"]:
        if any(li["sku"] == "API-OVERAGE" for li in adjustment["lines"]):
            continue
        full = sum(li["quantity"] * li["unit_price"] for li in adjustment["lines"])
        amount = adjustment["amount"]
        label = f"amendment {adjustment['id']} of order {adjustment['sales_order_id']}"
        result.check(
            "amendment prorated",
            0 < abs(amount) < abs(full) and (amount > 0) == (full > 0),
            f"{label}: {amount:,.2f} for a delta worth {full:,.2f} a year (not prorated)",
        )
        entry = entries.get(adjustment["id"])
        result.check(
            "amendment revenue scheduled",
            entry is not None and abs(entry["amount"] - amount) < TOLERANCE,
            f"{label}: {amount:,.2f} booked, revenue schedule entry "
            f"{entry['amount'] if entry else 'missing'}",
        )


def _overages(result: Reconciliation, erp: Mapping[str, Any], billing: Mapping[str, Any]) -> None:
    subscriptions = {s["id"]: s for s in billing["subscriptions"]}
    booked = {a["external_id"]: a for a in erp["adjustments"]}
    items = {i["metadata"].get("usage_id"): i for i in billing.get("invoiceitems", [])}
    for usage in billing.get("usage", []):
        subscription = subscriptions[usage["subscription"]]
        included = sum(INCLUDED_API_CALLS.get(i["price"]["product"], 0) * i["quantity"]
                       for i in subscription["items"]["data"])
        blocks = math.ceil(max(0, usage["total_usage"] - included) / BLOCK)
        key = f"usum_{usage['subscription']}_{usage['period']}"
        item = items.get(key)
        if blocks == 0:
            result.check("usage within the plan not billed", item is None,
                         f"{key}: billed {item and item['amount']} within the plan")
            continue
        if item is None:  # overages-billed-once reports it
            continue
        expected = blocks * BLOCK_PRICE[subscription["currency"]]
        result.check(
            "overage rated",
            item["amount"] == expected,
            f"{key}: {usage['total_usage']:,} calls, {included:,} included: billed "
            f"{item['amount'] / 100:,.2f}, rated {expected / 100:,.2f}",
        )
        adjustment = booked.get(key)
        result.check(
            "overage booked as billed",
            adjustment is not None and abs(adjustment["amount"] - item["amount"] / 100) < TOLERANCE,
            f"{key}: billed {item['amount'] / 100:,.2f} "
            f"{subscription['currency'].upper()}, ERP booked "
            f"{adjustment['amount'] if adjustment else 'nothing'}",
        )


def _payment_status(
    result: Reconciliation, crm: Mapping[str, Any], billing: Mapping[str, Any]
) -> None:
    by_subscription: dict[str, list[Any]] = defaultdict(list)
    for invoice in billing["invoices"]:
        if invoice["billing_reason"] == "subscription_create":
            by_subscription[invoice["subscription"]].append(invoice)
    for account in crm["accounts"]:
        invoices = by_subscription.get(account.get("Subscription_Id__c") or "", [])
        if not invoices or all(i["attempt_count"] == 0 for i in invoices):
            continue  # nobody paid or tried to: nothing to report yet
        paid = all(i["status"] == "paid" for i in invoices)
        failed = any(i["status"] == "open" and i["attempt_count"] for i in invoices)
        expected = "paid" if paid else "payment failed" if failed else None
        if expected is None:
            continue
        result.check(
            "CRM payment status",
            account.get("Invoice_Status__c") == expected,
            f"account {account['Id']} ({account['Name']}): CRM shows invoice status "
            f"{account.get('Invoice_Status__c')!r}, billing says {expected!r}",
        )
