"""The reference project's revenue flows against the real sandbox systems and the real server:
a prorated amendment with its revenue schedule, usage overages billed once however often a
month is read, AR invoices settled by their payment, renewal forecasts made once per
subscription and term, and the revenue Reconciliations agreeing (and disagreeing when a system
is changed behind Syncline's back). The US entity's revenue is posted to the old ERP, the EU
entity's to the cloud ERP (in its own shape): both are played."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from engine.demo.driver import CRM_API, Driver
from engine.demo.scenario import build_scenario
from engine.demo.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = {
    "Name": "Initech Austin", "BillingStreet": "100 Congress Ave", "BillingCity": "Austin",
    "BillingPostalCode": "78701", "BillingCountry": "US", "CurrencyIsoCode": "USD",
}
LINES = [
    {"ProductCode": "PLAT-PRO", "Quantity": 1, "UnitPrice": 12000},
    {"ProductCode": "SEAT-STD", "Quantity": 10, "UnitPrice": 600},
]
REVENUE = ("revenue-schedules-vs-orders", "overages-billed-once", "overages-booked-once",
           "ar-invoices-vs-billing-invoices", "renewal-forecasts-vs-subscriptions")
EU_ACCOUNT = {
    "Name": "Globex Berlin", "BillingStreet": "Invalidenstr. 116", "BillingCity": "Berlin",
    "BillingPostalCode": "10115", "BillingCountry": "DE", "CurrencyIsoCode": "EUR",
}
CLOUD_REVENUE = ("cloud-revenue-schedules-vs-orders", "overages-billed-once",
                 "cloud-overages-booked-once", "cloud-ar-invoices-vs-billing-invoices",
                 "renewal-forecasts-vs-subscriptions")


async def _day(workdir: Path, entity: str = "US") -> dict[str, Any]:
    account_fields, currency = (ACCOUNT, "USD") if entity == "US" else (EU_ACCOUNT, "EUR")
    stack = Stack(ROOT, workdir)
    await stack.start()
    seen: dict[str, Any] = {}
    try:
        async with Driver(stack, build_scenario(4)) as driver:
            call, runtime = driver.call, stack.runtime
            account = await call("crm", "POST", f"{CRM_API}/sobjects/Account", account_fields)
            deal = await call("crm", "POST", f"{CRM_API}/sobjects/Opportunity", {
                "AccountId": account["id"], "Name": "Initech - New Business",
                "StageName": "Negotiation", "CloseDate": time.strftime("%Y-%m-%d"),
                "CurrencyIsoCode": currency, "Term__c": 1, "OpportunityLineItems": LINES})
            await call("crm", "POST", f"/sandbox/opportunities/{deal['id']}/close")
            await driver.settle()
            crm = await call("crm", "GET", f"{CRM_API}/sobjects/Account/{account['id']}")
            sub = await call("billing", "GET", f"/v1/subscriptions/{crm['Subscription_Id__c']}")
            await call("billing", "POST", f"/sandbox/invoices/{sub['latest_invoice']}/pay")
            await driver.settle()

            # half a year later, ten more seats: prorated
            clock = await call("billing", "POST", "/sandbox/clock", {"days": 182})
            seat = next(i for i in sub["items"]["data"] if i["price"]["product"] == "SEAT-STD")
            await call("billing", "POST", f"/sandbox/subscriptions/{sub['id']}/update",
                       {"item": seat["id"], "quantity": 20})
            await driver.settle()

            # a metered month over the plan, read by three polls
            plan = next(i for i in sub["items"]["data"] if i["price"]["product"] == "PLAT-PRO")
            await call("billing", "POST", f"/v1/subscription_items/{plan['id']}/usage_records",
                       {"quantity": 112_345, "timestamp": int(clock["now"]) - 35 * 86400})
            usage = runtime.plan.flows["usage-overage"]
            seen["usage_polls"] = [(await runtime.polls.poll(usage)).as_dict()]
            await driver.settle()
            for _ in range(2):
                seen["usage_polls"].append((await runtime.polls.poll(usage)).as_dict())
            await driver.settle()

            # renewal forecasts, within 90 days of the renewal, read twice
            await call("billing", "POST", "/sandbox/clock", {"days": 120})
            forecast = runtime.plan.flows["renewal-forecast"]
            seen["forecast_polls"] = [(await runtime.polls.poll(forecast)).as_dict()]
            await driver.settle()
            seen["forecast_polls"].append((await runtime.polls.poll(forecast)).as_dict())
            await driver.settle()

            seen["reports"] = [
                await call("syncline", "POST", f"/api/v1/reconciliations/{name}/run")
                for name in (REVENUE if entity == "US" else CLOUD_REVENUE)
            ]
            seen["state"] = stack.sandbox.snapshot()
            seen["ids"] = (account["id"], deal["id"], sub["id"])
            # a system changed behind Syncline's back: the Reconciliation sees it
            if entity == "US":
                (schedule,) = stack.sandbox.erp.data["revenue_schedules"].values()
                schedule["entries"].pop()
                name = "revenue-schedules-vs-orders"
            else:
                (schedule,) = stack.sandbox.erp_cloud.data["revenue_schedules"].values()
                schedule["lines"].pop()
                name = "cloud-revenue-schedules-vs-orders"
            seen["tampered"] = await call(
                "syncline", "POST", f"/api/v1/reconciliations/{name}/run")
    finally:
        await stack.stop()
    return seen


def test_revenue_flows_bill_book_and_reconcile_once(tmp_path: Path) -> None:
    seen = asyncio.run(_day(tmp_path))
    account_id, deal_id, sub_id = seen["ids"]
    erp, billing, crm = (seen["state"][n]["data"] for n in ("erp", "billing", "crm"))
    (order,) = erp["sales_orders"]

    # the amendment: 10 seats for the ~183 days left of 365 cost about half of 6,000
    amendment, overage = erp["adjustments"]
    assert amendment["lines"][0]["quantity"] == 10 and amendment["lines"][0]["prorated"]
    assert 2900 < amendment["amount"] < 3100
    (schedule,) = erp["revenue_schedules"]
    sources = [e["source"] for e in schedule["entries"]]
    assert sources == [order["id"], amendment["id"], overage["id"]]
    assert abs(sum(e["amount"] for e in schedule["entries"]) - order["total"]) < 0.005
    assert abs(order["total"] - (18000 + amendment["amount"] + overage["amount"])) < 0.005

    # the overage: 12,345 calls over 100,000 = 13 blocks of 5.00, billed and booked once
    first, *again = seen["usage_polls"]
    assert (first["accepted"], [p["accepted"] for p in again]) == (1, [0, 0])
    assert [p["duplicates"] for p in again] == [1, 1]
    (item,) = billing["invoiceitems"]
    assert (item["amount"], item["quantity"], item["currency"]) == (6500, 13, "usd")
    assert overage["amount"] == 65 and overage["external_id"] == item["metadata"]["usage_id"]
    overage_invoice = next(i for i in billing["invoices"] if i["billing_reason"] == "manual")
    assert overage_invoice["amount_due"] == 6500

    # receivables: both billing invoices are AR invoices; the paid one is settled in the ERP
    ar = {r["external_id"]: r for r in erp["receivables"]}
    assert set(ar) == {i["id"] for i in billing["invoices"]}
    first_invoice = next(i for i in billing["invoices"] if i["billing_reason"] != "manual")
    assert (ar[first_invoice["id"]]["status"], ar[first_invoice["id"]]["amount"]) == (
        "paid", 18000)
    assert (ar[overage_invoice["id"]]["status"], ar[overage_invoice["id"]]["amount"]) == (
        "open", 65)
    account = next(a for a in crm["accounts"] if a["Id"] == account_id)
    assert (account["Invoice_Status__c"], account["Last_Invoice__c"]) == (
        "paid", first_invoice["number"])

    # the renewal forecast: once per subscription and term, however often it is read
    assert [p["accepted"] for p in seen["forecast_polls"]] == [1, 0]
    (forecast,) = [o for o in crm["opportunities"] if o.get("Renewal_Key__c")]
    assert forecast["Renewal_Key__c"].startswith(f"{sub_id}_")
    assert (forecast["AccountId"], forecast["Type"], forecast["StageName"]) == (
        account_id, "Renewal", "Prospecting")
    assert forecast["Amount"] == 12000 + 20 * 600

    for report in seen["reports"]:
        assert report["error"] is None and report["state"] == "ok", report
        assert report["mismatches"] == [], report
        assert report["matched"] >= 1, report
    tampered = seen["tampered"]
    assert [(m["kind"], m["field"]) for m in tampered["mismatches"]] == [("field", "total")]


def test_the_eu_entitys_revenue_is_posted_to_the_cloud_erp_and_reconciled_there(
        tmp_path: Path) -> None:
    seen = asyncio.run(_day(tmp_path, "EU"))
    account_id, deal_id, sub_id = seen["ids"]
    cloud, erp, billing = (seen["state"][n]["data"] for n in ("erp-cloud", "erp", "billing"))
    assert not erp["sales_orders"] and not erp["receivables"]  # nothing in the old ERP
    (order,) = [o for o in cloud["orders"] if o["entity"] == "EU"]
    assert (order["externalReference"], order["currencyCode"]) == (deal_id, "EUR")

    # the amendment: 10 seats for the ~183 days left of 365 cost about half of 6,000, and the
    # schedule re-spreads it from the change to the end of the term
    amendment, overage = (a for a in cloud["amendments"] if a["orderId"] == order["id"])
    assert amendment["lineChanges"][0]["prorated"] and 2900 < amendment["netAmount"] < 3100
    (schedule,) = [s for s in cloud["revenue_schedules"] if s["orderId"] == order["id"]]
    assert [line["sourceId"] for line in schedule["lines"]] == [
        order["id"], amendment["id"], overage["id"]]
    assert abs(sum(line["amount"] for line in schedule["lines"]) - order["totals"]["net"]) < 0.005
    assert abs(order["totals"]["net"] - (18000 + amendment["netAmount"] + overage["netAmount"])
               ) < 0.005
    assert schedule["lines"][1]["periodEnd"] == order["servicePeriod"]["end"]

    # the overage: 13 blocks of 4.60 EUR, billed once, booked once as an API-OVERAGE line and
    # recognized in its usage month
    (item,) = billing["invoiceitems"]
    assert (item["amount"], item["currency"]) == (5980, "eur")
    assert overage["externalReference"] == item["metadata"]["usage_id"]
    assert overage["lineChanges"][0]["itemNumber"] == "API-OVERAGE"
    assert overage["netAmount"] == 59.8
    point = schedule["lines"][2]
    assert point["recognition"] == "PointInTime" and len(point["periods"]) == 1

    # receivables of the EU entity: both billing invoices; the paid one settled by its payment
    ar = {r["externalReference"]: r for r in cloud["receivables"]}
    assert set(ar) == {i["id"] for i in billing["invoices"]}
    assert {r["entity"] for r in ar.values()} == {"EU"}
    first_invoice = next(i for i in billing["invoices"] if i["billing_reason"] != "manual")
    overage_invoice = next(i for i in billing["invoices"] if i["billing_reason"] == "manual")
    assert (ar[first_invoice["id"]]["state"], ar[first_invoice["id"]]["amount"]) == (
        "Paid", {"value": 18000, "currencyCode": "EUR"})
    assert (ar[overage_invoice["id"]]["state"], ar[overage_invoice["id"]]["balanceDue"]) == (
        "Open", 59.8)

    for report in seen["reports"]:
        assert report["error"] is None and report["state"] == "ok", report
        assert report["mismatches"] == [], report
        assert report["matched"] >= 1, report
    tampered = seen["tampered"]
    assert [(m["kind"], m["field"]) for m in tampered["mismatches"]] == [("field", "total")]


async def _eu_deal_cancelled(workdir: Path) -> dict[str, Any]:
    """An EU deal whose run parks at the CRM (after its receivable is posted to the cloud ERP),
    then is cancelled: its compensations run against the cloud ERP, in its shape."""
    stack = Stack(ROOT, workdir)
    await stack.start()
    seen: dict[str, Any] = {}
    try:
        async with Driver(stack, build_scenario(4)) as driver:
            call = driver.call
            account = await call("crm", "POST", f"{CRM_API}/sobjects/Account", EU_ACCOUNT)
            deal = await call("crm", "POST", f"{CRM_API}/sobjects/Opportunity", {
                "AccountId": account["id"], "Name": "Globex - New Business",
                "StageName": "Negotiation", "CloseDate": time.strftime("%Y-%m-%d"),
                "CurrencyIsoCode": "EUR", "Term__c": 1, "OpportunityLineItems": LINES})
            await call("crm", "POST", "/sandbox/faults", {
                "status": 403, "count": 1, "method": "PATCH",
                "path_prefix": f"{CRM_API}/sobjects/Account/{account['id']}"})
            await call("crm", "POST", f"/sandbox/opportunities/{deal['id']}/close")
            await driver.settle()
            listing = await call("syncline", "GET", "/api/v1/runs?flow=closed-won-to-order")
            (run,) = listing["runs"]
            seen["parked"] = run
            seen["before"] = stack.sandbox.erp_cloud.snapshot()
            await call("syncline", "POST", f"/api/v1/runs/{run['id']}/cancel")
            await driver.settle()
            seen["cancelled"] = await call("syncline", "GET", f"/api/v1/runs/{run['id']}")
            seen["after"] = stack.sandbox.erp_cloud.snapshot()
    finally:
        await stack.stop()
    return seen


def test_cancelling_an_eu_deal_voids_its_receivable_in_the_cloud_erp(tmp_path: Path) -> None:
    seen = asyncio.run(_eu_deal_cancelled(tmp_path))
    assert (seen["parked"]["state"], seen["parked"]["reason"]["step"]) == ("parked", "crm")
    (posted,) = seen["before"]["data"]["receivables"]
    assert (posted["entity"], posted["state"]) == ("EU", "Open")
    assert seen["cancelled"]["state"] == "cancelled", seen["cancelled"]
    after = seen["after"]["data"]
    (receivable,) = after["receivables"]
    assert (receivable["id"], receivable["state"], receivable["balanceDue"]) == (
        posted["id"], "Voided", 0)
    eu = [o for o in after["orders"] if o["entity"] == "EU"]
    assert [o["state"] for o in eu] == ["Cancelled"]
    assert [s["state"] for s in after["revenue_schedules"] if s["entity"] == "EU"] == [
        "Cancelled"]
