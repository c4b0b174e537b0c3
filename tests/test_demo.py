"""`syncline demo` end to end: the reference project against the sandbox systems, reconciled.

The first tests run the real command (a subprocess, as CI does): it reconciles and reports, and it
exits 1 when a project's bug leaves the systems disagreeing. The others play one day in-process,
check what the day did (progress, suspended entitlements), and break copies of the systems' states
in the ways a sync goes wrong to check that the reconciliation says so.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.demo import Progress, play_day, reconcile
from engine.demo.driver import DayLog
from engine.demo.scenario import Scenario, build_scenario
from engine.demo.stack import Stack, locate_project

ROOT = Path(__file__).resolve().parents[1]
FLOWS = (
    "account-changed",
    "billing-events",
    "closed-won-to-order",
    "crm-opportunity-events",
    "invoice-paid",
    "payment-failed",
    "publish-invoice-paid",
    "publish-order-activated",
    "publish-payment-failed",
    "publish-renewal-accepted",
    "publish-subscription-amended",
    "renewal",
    "renewal-forecast",
    "subscription-amended",
    "usage-overage",
)

pytestmark = pytest.mark.slow


def test_demo_command_reconciles_and_reports(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "demo", "--events", "10", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)

    assert report["reconciliation"]["ok"], report["reconciliation"]["problems"]
    checked = report["reconciliation"]["checked"]
    # the product's Reconciliations: 10 new deals and 1 renewal, each paired with its order in
    # its entity's ERP: the 4 EU deals (DE, FR, NL, GB) in the cloud ERP, the rest in the old one
    assert checked["reconciliation orders-vs-deals"] == 7
    assert checked["reconciliation cloud-orders-vs-deals"] == 4
    assert checked["ERP of record"] == 11
    assert checked["reconciliation subscriptions-vs-deals"] == 10
    assert checked["reconciliation entitlements-vs-subscriptions"] == 10
    assert checked["order amount"] == 10 and checked["renewed subscription"] == 1
    by_flow = report["runs"]["by_flow"]
    assert set(by_flow) == set(FLOWS)
    assert all(set(states) <= {"succeeded", "filtered"} for states in by_flow.values()), by_flow
    assert by_flow["closed-won-to-order"]["succeeded"] == 10
    assert report["runs"]["throughput_runs_per_s"] > 0
    assert report["latency_ms"]["samples"] > 10
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p95"]
    # both exceptions are EU deals (AT, GB): the cloud ERP refuses them in its own words (422)
    exceptions = {e["erp_code"]: e for e in report["exceptions"]}
    assert set(exceptions) == {"tax_registration_missing", "item_not_found"}
    steps = {"tax_registration_missing": "nexus", "item_not_found": "erp"}  # nexus check first
    for code, exception in exceptions.items():
        assert (exception["reason"]["code"], exception["reason"]["step"]) == ("HTTP_422",
                                                                              steps[code])
        assert exception["state"] == "succeeded" and exception["resolution_s"] > 0
        assert "cloud ERP" in exception["fix"]

    # the ERP migration: EU routed to the cloud ERP, US booked in the old one and shadowed;
    # one US order's tax is rounded per line by the old ERP and on the total by the cloud ERP
    migration = report["migration"]
    assert migration["routing"] == {"EU": {"erp-cloud": 4}, "US": {"erp": 6}}
    assert migration["shadow"] == {"US": {"match": 5, "mismatch": 1}}
    assert migration["mismatches"] == {
        "tax_amount": {"count": 1, "largest": 0.01, "words": "tax rounding"}}
    # the cloud ERP's tokens were revoked mid-day: Syncline's next call got a 401, and it
    # fetched a new token and went on
    assert report["day"]["cloud ERP tokens revoked"] == 1
    assert migration["oauth"]["issued"] >= 2 and migration["oauth"]["refused"] >= 1

    # the day: each business event happened, and each injected failure hit real requests
    day = report["day"]
    assert day["deals"] == 10 and day["amendments"] >= 1 and day["renewals"] >= 1
    assert day["invoices paid"] >= 1 and day["payments failed"] >= 2
    # the ERP's maintenance window: renewals waited for it, and it received nothing meanwhile
    assert day["runs held in the ERP maintenance window"] >= 1
    assert day["ERP calls during it"] == 0
    for flow in ("subscription-amended", "renewal", "invoice-paid", "payment-failed"):
        assert by_flow[flow].get("succeeded", 0) >= 1, flow
    assert checked["CRM amendment"] >= 1 and checked["CRM renewal status"] >= 1
    faults = {f["fault"]: f["hits"] for f in day["faults"]}
    kinds = {
        (label.split()[0], status)
        for label in faults
        for status in ("429", "500", "502", "503")
        if f" {status} " in label
    }
    # ERP outages (503; 502 after the write), a CRM outage and an ERP rate-limit storm
    assert kinds == {("ERP", "503"), ("ERP", "502"), ("CRM", "500"), ("ERP", "429")}, faults
    assert all(hits >= 1 for hits in faults.values()), faults
    # no sync loop: Syncline's own CRM account writes came back as webhooks and were filtered as
    # echoes; the round-trip flows ran once per person's change
    echoes = report["echoes"]
    assert not echoes["loop"], echoes
    assert echoes["by_flow"]["crm-opportunity-events"] >= 10 + day["renewals"], echoes
    assert by_flow["account-changed"]["succeeded"] == day["account moves"] >= 1

    # the business events went to the event backbone (a real JetStream: the demo's own
    # nats-server, or NATS_URL), and a subscriber found each there exactly once
    backbone = report["backbone"]
    if shutil.which("nats-server") or os.environ.get("SYNCLINE_REQUIRE_NATS") == "1":
        assert backbone["kind"] in ("nats-server", "NATS_URL"), backbone
    assert backbone["by_subject"] == {
        "revops.order.activated": 10,
        "revops.invoice.paid": day["invoices paid"] + day["payments recovered"],
        "revops.invoice.payment-failed": day["payments failed"],
        "revops.subscription.amended": day["amendments"],
        "revops.renewal.accepted": day["renewals"],
    }, backbone
    assert backbone["arrived"] == backbone["by_subject"]
    assert (backbone["duplicates"], backbone["missing"], backbone["unfinished"]) == (0, 0, 0)
    assert checked["business event on the backbone once"] == backbone["published"] == sum(
        backbone["by_subject"].values())

    # the one alert: finance told once, in its chat channel, of both master-data exceptions
    # before the operator fixed them (the revops objective alert stays quiet: it is met)
    [alert] = report["alerts"]
    assert (alert["team"], alert["messages"]) == ("finance", 1), report["alerts"]
    assert alert["texts"][0].startswith("2 orders blocked by master data (deals 006")
    assert day["alerts to finance"] == 1

    # the revenue: amendments prorated and scheduled, overages billed once, AR, forecasts
    for name in ("revenue-schedules-vs-orders", "overages-billed-once", "overages-booked-once",
                 "ar-invoices-vs-billing-invoices", "renewal-forecasts-vs-subscriptions",
                 "cloud-revenue-schedules-vs-orders", "cloud-ar-invoices-vs-billing-invoices"):
        assert checked[f"reconciliation {name}"] >= 1, name
    assert checked["amendment prorated"] >= 1 and checked["overage rated"] >= 1
    assert day["usage months over the plan (billed)"] >= 1
    assert day["usage months read again (nothing billed twice)"] == day[
        "usage months over the plan (billed)"]
    revenue = report["revenue"]
    # every live order's schedule sums to its total: the 7 in the old ERP, the EU entity's in
    # the cloud ERP
    assert revenue["schedules_balanced"][0] == revenue["schedules_balanced"][1]
    assert revenue["schedules_balanced_by_erp"]["erp"] == [7, 7]
    cloud_balanced, cloud_schedules = revenue["schedules_balanced_by_erp"]["erp-cloud"]
    assert cloud_balanced == cloud_schedules >= 1
    assert checked["reconciliation cloud-revenue-schedules-vs-orders"] == cloud_schedules
    assert {"USD", "EUR"} <= set(revenue["bookings"]) <= {"USD", "EUR", "GBP"}
    assert revenue["overage_months"] == day["usage months over the plan (billed)"]
    assert revenue["renewals_forecast"] == 10
    for currency, prorated in revenue["amendments_prorated"].items():  # about half a year's
        assert 0.4 < prorated / revenue["amendments_full_price"][currency] < 0.6


def test_text_report_on_a_pipe_has_plain_progress_lines(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "demo", "--events", "4", "--seed", "3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[demo] deals closing" in done.stderr and "\r" not in done.stderr
    assert "Reconciliation across CRM, ERP, billing and support: OK" in done.stdout
    assert "tax_registration_missing" in done.stdout and "sync latency" in done.stdout
    # the ERP migration in plain words (seed 3: 1 EU and 3 US deals, one EU deal an exception)
    assert "ERP migration (EU entity on the cloud ERP, US entity shadowed onto it)" in done.stdout
    assert re.search(r"  EU orders: \d+ routed to the cloud ERP\n", done.stdout), done.stdout
    assert re.search(r"  US orders: (\d+) of \1 matched the cloud ERP|  US orders: \d+ of \d+ "
                     r"matched the cloud ERP; \d+ mismatch(es)?: tax rounding", done.stdout)
    # the business metrics, in a finance reader's words, with the money the ERP holds
    assert "Business metrics" in done.stdout
    assert re.search(r"\d+ echoes of Syncline's own writes suppressed; no sync loop",
                     done.stdout), done.stdout
    assert "Closed-won deals the ERP has not accepted as a sales order yet" in done.stdout
    assert re.search(r"Paid invoices whose payment the ERP posted: \d+; all payments posted in "
                     r"the ERP: [A-Z]{3} [\d,]+\.\d\d", done.stdout), done.stdout


def _sabotaged_checkout(tmp_path: Path) -> Path:
    """A copy of the reference project whose ERP orders are always in USD: a mapping bug of the
    kind the reconciliation is there to catch."""
    copy = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("flows", "mappings", "policies", "metrics"):
        shutil.copytree(ROOT / name, copy / name, ignore=ignore)
    shutil.copy(ROOT / "syncline.yaml", copy / "syncline.yaml")
    mapping = copy / "mappings" / "order-to-sales-order.yaml"
    text = mapping.read_text()
    assert "    currency: currency\n" in text
    mapping.write_text(text.replace("    currency: currency\n", "    currency: \"'USD'\"\n"))
    return copy


def test_demo_exits_non_zero_when_the_systems_do_not_reconcile(tmp_path: Path) -> None:
    project = _sabotaged_checkout(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "demo", "--events", "4", "--project", str(project),
         "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)  # the day was played and reported: no crash, no usage error
    assert not report["reconciliation"]["ok"]
    problems = report["reconciliation"]["problems"]
    # the EU deals' orders go to the cloud ERP, which refuses a currency its EU entity does not
    # book in: those deals have no order at all, and the reconciliation says so
    assert any(p.startswith("reconciliation cloud-orders-vs-deals: ") and
               p.endswith(": missing-left") for p in problems), problems
    # the refused orders park, and are reported as exceptions nobody resolved (no operator fix
    # exists for a mapping bug; the day ends instead of waiting for one)
    # (the Austrian deal first parks for its tax registration: fixed and resumed, the cloud ERP
    # then refuses its currency too)
    unresolved = [e for e in report["exceptions"] if e["resolution_s"] is None]
    assert unresolved and all(
        (e["flow"], e["state"]) == ("closed-won-to-order", "parked") for e in unresolved
    ), report["exceptions"]
    assert "currency_not_allowed" in {e["erp_code"] for e in unresolved}, report["exceptions"]


# -- one day played in-process, then its states broken in the ways a sync can go wrong ----------
@dataclass
class Day:
    log: DayLog
    states: dict[str, Any]
    reports: list[dict[str, Any]]  # the product's Reconciliations after the day
    progress: str
    scenario: Scenario
    broken: dict[str, Any]  # breaker name -> the verdict on the systems it broke


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Day:
    async def play() -> Day:
        stack = Stack(locate_project(), tmp_path_factory.mktemp("day"))
        scenario = build_scenario(6, seed=11)
        stream = io.StringIO()
        await stack.start()
        try:
            log, _, states, reports = await play_day(
                stack, scenario, Progress(stream, interval=0.1)
            )
            broken = {b.__name__: await _break_live(stack, states, b) for b in BREAKERS}
        finally:
            await stack.stop()
        return Day(log, states, reports, stream.getvalue(), scenario, broken)

    return asyncio.run(play())


async def _break_live(stack: Stack, states: dict[str, Any], break_it: Any) -> tuple[Any, Any]:
    """Break a copy of the states and, the same way, the live sandbox systems; the verdict of the
    product's Reconciliations (which read the systems) and the extra checks (which read the
    states), and what `break_it` says the verdict must mention. The systems are restored."""
    broken = copy.deepcopy(states)
    expected = break_it(broken)
    systems = dict(stack.sandbox.systems)
    saved = {name: copy.deepcopy(system.data) for name, system in systems.items()}
    for name, system in systems.items():
        for collection, records in broken[name]["data"].items():
            system.data[collection] = {_record_key(r, i): r for i, r in enumerate(records)}
    try:
        names = sorted(stack.runtime.plan.reconciliations)
        reports = [await stack.runtime.reconciler.run(n) for n in names]
    finally:
        for name, system in systems.items():
            system.data.update(saved[name])
    return reconcile(broken, reports), expected


def _record_key(record: Any, index: int) -> str:
    for field in ("id", "Id", "account_id"):
        if isinstance(record, dict) and field in record:
            return str(record[field])
    return f"record-{index}"


def test_progress_shows_each_phase_and_the_runs_while_they_happen(day: Day) -> None:
    lines = day.progress.splitlines()
    phases = [line for line in lines if ":" not in line]
    assert phases[:4] == ["[demo] accounts and pipeline", "[demo] deals closing",
                          "[demo] owners alerted", "[demo] operator resolves exceptions"]
    assert phases[-1] == "[demo] reconciling"
    status = [re.fullmatch(r"\[demo\] (.+): (\d+) runs \((.*)\), queue (\d+)", line)
              for line in lines if ":" in line]
    assert status and all(status), lines
    assert max(int(m[2]) for m in status if m) > 0


def test_failed_payments_suspend_entitlements_until_paid(day: Day) -> None:
    scenario, states = day.scenario, day.states
    still_failed = set(scenario.failed_payments) - set(scenario.recovered)
    assert still_failed and scenario.recovered  # the day has both kinds
    entitlements = {e["account_id"]: e for e in states["support"]["data"]["entitlements"]}
    accounts = {a["Name"]: a for a in states["crm"]["data"]["accounts"]}
    names = {d.key: d.name for d in scenario.deals}
    for key in scenario.failed_payments:
        account = accounts[names[key]]
        entitlement = entitlements[account["Id"]]
        history = [h["status"] for h in entitlement["history"] if "status" in h]
        assert "suspended" in history, (key, history)
        expected = ("suspended", "Past Due") if key in still_failed else ("active", "Active")
        assert (entitlement["status"], account["Status__c"]) == expected, key
    assert reconcile(states, day.reports).ok


def _first(records: list[Any], **match: Any) -> Any:
    return next(r for r in records if all(r.get(k) == v for k, v in match.items()))


def _lose_an_order(states: dict[str, Any]) -> tuple[str, str]:
    orders = states["erp"]["data"]["sales_orders"]
    lost = orders.pop(0)
    return f"reconciliation orders-vs-deals: {lost['external_id']}: missing-left"


def _order_in_another_currency(states: dict[str, Any]) -> str:
    order = _first(states["erp-cloud"]["data"]["orders"], entity="EU", currencyCode="EUR")
    order["currencyCode"] = "USD"
    return f"cloud-orders-vs-deals: {order['externalReference']}: currency: 'USD' != 'EUR'"


def _eu_order_left_in_the_old_erp(states: dict[str, Any]) -> tuple[str, str]:
    """A migration bug: an EU deal's order booked in the old ERP besides the cloud one."""
    cloud = _first(states["erp-cloud"]["data"]["orders"], entity="EU")
    orders = states["erp"]["data"]["sales_orders"]
    orders.append({**copy.deepcopy(orders[0]), "id": "SO-9999",
                   "external_id": cloud["externalReference"], "currency": cloud["currencyCode"]})
    return cloud["externalReference"], "must be in the cloud ERP only"


def _subscription_billing_less(states: dict[str, Any]) -> str:
    subscription = states["billing"]["data"]["subscriptions"][0]
    subscription["items"]["data"][0]["quantity"] += 1
    return f"subscription {subscription['id']} "


def _duplicate_subscription(states: dict[str, Any]) -> str:
    subscriptions = states["billing"]["data"]["subscriptions"]
    subscriptions.append({**copy.deepcopy(subscriptions[0]), "id": "sub_duplicate"})
    return f"subscriptions-vs-deals: {subscriptions[0]['metadata']['order_id']}: duplicate-left"


def _cancelled_order(states: dict[str, Any]) -> str:
    order = states["erp"]["data"]["sales_orders"][0]
    order["status"] = "cancelled"
    return f"orders-vs-deals: {order['external_id']}: status: 'cancelled' != 'open'"


def _entitlement_left_active(states: dict[str, Any]) -> str:
    suspended = _first(states["support"]["data"]["entitlements"], status="suspended")
    suspended["status"] = "active"
    return (f"entitlements-vs-subscriptions: {suspended['account_id']}: "
            "status: 'suspended' != 'active'")


def _payment_short(states: dict[str, Any]) -> str:
    payment = states["erp"]["data"]["payments"][0]
    payment["amount"] -= 1
    return f"ERP payment {payment['id']} is"


def _payment_in_another_currency(states: dict[str, Any]) -> tuple[str, str]:
    payment = states["erp"]["data"]["payments"][0]
    payment["currency"] = "XXX"
    return f"paid-invoices-vs-payments: {payment['external_id']}: currency: ", "!= 'XXX'"


def _payment_applied_twice(states: dict[str, Any]) -> str:
    payments = states["erp"]["data"]["payments"]
    payments.append({**payments[0], "id": "PAY-9999"})
    return f"paid-invoices-vs-payments: {payments[0]['external_id']}: duplicate-right"


def _amendment_not_in_crm(states: dict[str, Any]) -> str:
    account = next(a for a in states["crm"]["data"]["accounts"] if a.get("Last_Amendment__c"))
    account["Contract_Value__c"] = None
    return "CRM account shows amendment"


def _renewal_not_in_crm(states: dict[str, Any]) -> str:
    account = _first(states["crm"]["data"]["accounts"], Renewal_Status__c="Renewed")
    account["Renewal_Status__c"] = None
    return "CRM account renewal status is None"


def _key_written_twice(states: dict[str, Any]) -> str:
    entry = next(iter(states["support"]["idempotency"].values()))
    entry["writes"] = 2
    return "wrote 2 times"


def _overage_billed_twice(states: dict[str, Any]) -> tuple[str, str]:
    items = states["billing"]["data"]["invoiceitems"]
    item = next(i for i in items if i["metadata"].get("usage_id"))
    items.append({**item, "id": f"{item['id']}_again"})
    return (f"overages-billed-once: {item['metadata']['usage_id']}: duplicate-right", "")


def _schedule_short(states: dict[str, Any]) -> tuple[str, str]:
    # (any schedule: in a small day the amendments may all be EU ones, in the cloud ERP)
    schedule = next(s for s in states["erp"]["data"]["revenue_schedules"] if s["entries"])
    schedule["entries"][-1]["amount"] -= 100
    return (f"revenue-schedules-vs-orders: {schedule['sales_order_id']}: total", "")


def _cloud(states: dict[str, Any], kind: str) -> list[Any]:
    """The EU entity's records of `kind` in the cloud ERP."""
    return [r for r in states["erp-cloud"]["data"][kind] if r["entity"] == "EU"]


def _cloud_schedule_short(states: dict[str, Any]) -> tuple[str, str]:
    schedule = _cloud(states, "revenue_schedules")[0]
    schedule["lines"][-1]["amount"] -= 100
    return (f"cloud-revenue-schedules-vs-orders: {schedule['orderId']}: total", "")


def _cloud_ar_amount_wrong(states: dict[str, Any]) -> tuple[str, str]:
    receivable = _cloud(states, "receivables")[0]
    receivable["amount"]["value"] += 1
    return (f"AR invoice {receivable['id']} is", "billing invoice")


def _cloud_ar_left_open(states: dict[str, Any]) -> str:
    receivable = next(r for r in _cloud(states, "receivables") if r["state"] == "Paid")
    receivable["state"] = "Open"
    return (f"cloud-ar-invoices-vs-billing-invoices: {receivable['externalReference']}: "
            "status: 'paid' != 'open'")


def _cloud_overage_booked_twice(states: dict[str, Any]) -> str:
    amendments = states["erp-cloud"]["data"]["amendments"]
    overage = next((a for a in _cloud(states, "amendments")
                    if a["lineChanges"][0]["itemNumber"] == "API-OVERAGE"), None)
    if overage is None:  # a small day's overages may all be the US entity's (in the old ERP)
        order = _cloud(states, "orders")[0]
        change = {"itemNumber": "API-OVERAGE", "quantityDelta": 1, "unitPrice": 4.6,
                  "netAmount": 4.6}
        amendments.append({"id": "AMD-EU-09999", "entity": "EU", "orderId": order["id"],
                           "externalReference": "usum_unmetered", "lineChanges": [change],
                           "netAmount": 4.6})
        return "cloud-overages-booked-once: usum_unmetered: missing-left"
    amendments.append({**copy.deepcopy(overage), "id": "AMD-EU-09998"})
    return f"cloud-overages-booked-once: {overage['externalReference']}: duplicate-right"


def _ar_amount_wrong(states: dict[str, Any]) -> tuple[str, str]:
    ar = states["erp"]["data"]["receivables"][0]
    ar["amount"] += 1
    return (f"AR invoice {ar['id']} is", "billing invoice")


def _amendment_not_prorated(states: dict[str, Any]) -> str:
    erp = states["erp"]["data"]
    adjustment = next((a for a in erp["adjustments"] if a["lines"][0]["sku"] != "API-OVERAGE"),
                      None)
    if adjustment is None:  # a small day's amendments may all be EU ones (in the cloud ERP)
        line = {"sku": "SEAT-STD", "quantity": 1, "unit_price": 600.0, "amount": 600.0}
        adjustment = {"id": "ADJ-9999", "sales_order_id": erp["sales_orders"][0]["id"],
                      "external_id": "evt_full_price", "lines": [line]}
        erp["adjustments"].append(adjustment)
    adjustment["amount"] = sum(li["quantity"] * li["unit_price"] for li in adjustment["lines"])
    return "(not prorated)"


def _overage_misrated(states: dict[str, Any]) -> str:
    item = next(i for i in states["billing"]["data"]["invoiceitems"]
                if i["metadata"].get("usage_id"))
    item["amount"] += 100
    return f"{item['metadata']['usage_id']}: "


def _payment_status_not_in_crm(states: dict[str, Any]) -> str:
    account = _first(states["crm"]["data"]["accounts"], Invoice_Status__c="paid")
    account["Invoice_Status__c"] = "open"
    return "CRM shows invoice status 'open', billing says 'paid'"


def _renewal_forecast_lost(states: dict[str, Any]) -> str:
    deals = states["crm"]["data"]["opportunities"]
    lost = next(o for o in deals if o.get("Renewal_Key__c"))
    deals.remove(lost)
    return f"renewal-forecasts-vs-subscriptions: {lost['Renewal_Key__c']}: missing-right"


BREAKERS = [
    _overage_billed_twice,
    _schedule_short,
    _ar_amount_wrong,
    _cloud_schedule_short,
    _cloud_ar_amount_wrong,
    _cloud_ar_left_open,
    _cloud_overage_booked_twice,
    _amendment_not_prorated,
    _overage_misrated,
    _payment_status_not_in_crm,
    _renewal_forecast_lost,
    _lose_an_order,
    _order_in_another_currency,
    _eu_order_left_in_the_old_erp,
    _subscription_billing_less,
    _duplicate_subscription,
    _cancelled_order,
    _entitlement_left_active,
    _payment_short,
    _payment_in_another_currency,
    _payment_applied_twice,
    _amendment_not_in_crm,
    _renewal_not_in_crm,
    _key_written_twice,
]


def test_the_day_reconciles_with_the_product_reconciliations(day: Day) -> None:
    names = sorted(r["name"] for r in day.reports)
    assert names == ["ar-invoices-vs-billing-invoices", "cloud-ar-invoices-vs-billing-invoices",
                     "cloud-orders-vs-deals", "cloud-overages-booked-once",
                     "cloud-revenue-schedules-vs-orders", "entitlements-vs-subscriptions",
                     "orders-vs-deals", "overages-billed-once", "overages-booked-once",
                     "paid-invoices-vs-cloud-payments", "paid-invoices-vs-payments",
                     "renewal-forecasts-vs-subscriptions", "revenue-schedules-vs-orders",
                     "subscriptions-vs-deals"]
    assert all(r["state"] == "ok" for r in day.reports), day.reports
    # every one pairs something (a small day's overages may all be one entity's: booked in
    # one ERP only)
    empty = [r["name"] for r in day.reports if r["matched"] == 0]
    assert len(set(empty) & {"overages-booked-once", "cloud-overages-booked-once"}) <= 1
    assert set(empty) <= {"overages-booked-once", "cloud-overages-booked-once"}, day.reports
    verdict = reconcile(day.states, day.reports)
    assert verdict.ok, verdict.problems
    assert verdict.checked["reconciliation orders-vs-deals"] > 0


@pytest.mark.parametrize("break_it", [b.__name__ for b in BREAKERS])
def test_reconciliation_finds_what_went_wrong(day: Day, break_it: str) -> None:
    after, expected = day.broken[break_it]
    parts = expected if isinstance(expected, tuple) else (expected,)
    assert not after.ok
    assert any(all(p in problem for p in parts) for problem in after.problems), (
        parts, after.problems
    )


def test_locate_project_defaults_to_the_reference_project(tmp_path: Path) -> None:
    from engine.errors import UsageError

    assert locate_project() == ROOT  # an editable install: the checkout's root
    with pytest.raises(UsageError, match="is not a Syncline project"):
        locate_project(tmp_path)
