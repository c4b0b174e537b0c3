"""The reference quote-to-cash project at the repository root (syncline.yaml, flows/, mappings/,
policies/): it validates in every environment, all its Mapping and Flow tests pass, its canonical
schemas each name their owning system, and its governed exception behaves as promised against the
real sandbox systems and the real server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine import compile_project
from engine.cli import main
from engine.demo import reconcile
from engine.demo.driver import CRM_API, Driver
from engine.demo.scenario import build_scenario
from engine.demo.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
BUSINESS_FLOWS = (
    "closed-won-to-order",
    "subscription-amended",
    "renewal",
    "invoice-paid",
    "payment-failed",
)
CANONICAL_OWNERS = {
    "customer": "crm",
    "order": "erp",
    "subscription": "billing",
    "invoice": "billing",
    "payment": "billing",       # billing collects; the ERP applies a copy to the order
    "entitlement": "billing",   # the subscription decides; the support tool enforces a copy
}
DEMO_URLS = {
    f"{name}_URL": "http://127.0.0.1:9"
    for name in ("CRM", "ERP", "BILLING", "SUPPORT", "CHAT", "ERP_CLOUD")
} | {"NATS_URL": "nats://127.0.0.1:9"}


@pytest.mark.parametrize("env", ["dev", "demo", "staging", "prod"])
def test_validate_passes_in_every_environment(env: str) -> None:
    # `demo` takes its URLs from the process environment (`syncline demo` passes them)
    result = CliRunner().invoke(
        main, ["validate", str(ROOT), "--env", env], env=DEMO_URLS if env == "demo" else {}
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: 15 flows, 27 mappings") and f"[{env}]" in result.output


def test_every_mapping_and_flow_has_tests_and_they_all_pass() -> None:
    result = CliRunner().invoke(main, ["test", str(ROOT), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    failed = [r for r in report if not r["passed"]]
    assert not failed, failed
    tested = {r["id"].split("::")[0] for r in report}
    plan = compile_project(ROOT, environ={})
    assert {f"mapping:{name}@{version}" for name, version in plan.mappings} <= tested
    assert {f"flow:{name}@{flow.version}" for name, flow in plan.flows.items()} <= tested
    per_flow = {
        flow: sum(r["id"].startswith(f"flow:{flow}@") for r in report) for flow in BUSINESS_FLOWS
    }
    assert all(count >= 1 for count in per_flow.values()), per_flow


def test_canonical_schemas_each_have_an_owning_system() -> None:
    plan = compile_project(ROOT, environ={})
    systems = {name for name, _ in plan.systems}
    for name, owner in CANONICAL_OWNERS.items():
        latest = max(version for schema, version in plan.schemas if schema == name)
        schema = plan.schemas[(name, latest)]
        assert (name, schema.owner) == (name, owner)
        assert schema.owner in systems
        assert schema.key in schema.json_schema["properties"], name


# -- the governed exception, end to end ---------------------------------------------------------
ACCOUNT = {
    "Name": "Wiener Werkstaetten AG",
    "BillingStreet": "Stephansplatz 1",
    "BillingCity": "Vienna",
    "BillingPostalCode": "1010",
    "BillingCountry": "AT",  # the EU entity has no tax nexus in Austria yet
    "CurrencyIsoCode": "EUR",
}
LINES = [
    {"ProductCode": "PLAT-PRO", "Quantity": 1, "UnitPrice": 11040},
    {"ProductCode": "SEAT-STD", "Quantity": 12, "UnitPrice": 552},
]


async def _governed_exception(workdir: Path) -> dict[str, Any]:
    stack = Stack(ROOT, workdir)
    await stack.start()
    seen: dict[str, Any] = {}
    try:
        async with Driver(stack, build_scenario(4)) as driver:
            call, sandbox = driver.call, stack.sandbox
            account = await call("crm", "POST", f"{CRM_API}/sobjects/Account", ACCOUNT)
            opportunity = await call(
                "crm",
                "POST",
                f"{CRM_API}/sobjects/Opportunity",
                {
                    "AccountId": account["id"],
                    "Name": "Wiener Werkstaetten - New Business",
                    "StageName": "Negotiation",
                    "CloseDate": "2025-03-01",
                    "CurrencyIsoCode": "EUR",
                    "Term__c": 1,
                    "OpportunityLineItems": LINES,
                },
            )
            closed = await call("crm", "POST", f"/sandbox/opportunities/{opportunity['id']}/close")
            await driver.settle()

            async def parked() -> list[dict[str, Any]]:
                listing = await call("syncline", "GET", "/api/v1/runs?flow=closed-won-to-order")
                return listing["runs"]

            async def business() -> dict[str, Any]:
                found = await call("syncline", "GET", "/api/v1/metrics")
                return {m["name"]: m for m in found["metrics"]}

            seen["parked"] = await parked()
            seen["parked_state"] = sandbox.snapshot()
            seen["parked_metrics"] = await business()

            # resumed before the master data is fixed: the ERP refuses again, still nothing written
            run_id = seen["parked"][0]["id"]
            await call("syncline", "POST", f"/api/v1/runs/{run_id}/resume")
            await driver.settle()
            seen["resumed_unfixed"] = await call("syncline", "GET", f"/api/v1/runs/{run_id}")
            seen["unfixed_state"] = sandbox.snapshot()

            # the operator registers the EU entity for tax in Austria, in the cloud ERP the EU
            # entity books in, and resumes: the run completes
            await call("erp-cloud", "POST", "/sandbox/tax-registrations",
                       {"entity": "EU", "countryCode": "AT"})
            await call("syncline", "POST", f"/api/v1/runs/{run_id}/resume")
            await driver.settle()
            # ... and the CRM delivering the closed-won webhook again changes nothing
            delivery = closed["webhook"]["delivery_id"]
            await call("crm", "POST", f"/sandbox/webhooks/{delivery}/redeliver")
            await driver.settle()
            seen["done"] = await call("syncline", "GET", f"/api/v1/runs/{run_id}")
            seen["runs"] = await parked()
            seen["final_state"] = sandbox.snapshot()
            seen["final_metrics"] = await business()
            seen["erp_requests"] = list(sandbox.erp_cloud.requests)
            seen["ids"] = (account["id"], opportunity["id"])
            seen["reports"] = [
                await stack.runtime.reconciler.run(name)
                for name in sorted(stack.runtime.plan.reconciliations)
            ]
    finally:
        await stack.stop()
    return seen


def _value(metric: dict[str, Any], **labels: str) -> int:
    return sum(s["value"] for s in metric["series"] if labels.items() <= s["labels"].items())


def _business_metrics_moved(parked: dict[str, Any], final: dict[str, Any]) -> None:
    """The reference project's business metrics while the order is parked, and after resume."""
    assert _value(parked["orders-awaiting-erp"], reason="HTTP_422") == 1
    assert parked["orders-awaiting-erp"]["value"] == 1
    assert parked["orders-awaiting-erp"]["owner"] == "finance"
    assert parked["subscriptions-pending-activation"]["value"] == 1
    assert _value(parked["exceptions-open"], flow="closed-won-to-order", state="parked") == 1
    assert parked["orders-activated"]["value"] == 0
    assert parked["order-cycle-time"]["count"] == 0
    assert final["orders-awaiting-erp"]["value"] == 0
    assert final["subscriptions-pending-activation"]["value"] == 0
    assert final["exceptions-open"]["value"] == 0
    assert _value(final["manual-interventions"], flow="closed-won-to-order", action="resume") == 2
    assert final["orders-activated"]["value"] == 1
    assert final["order-cycle-time"]["count"] == 1
    assert final["order-cycle-time"]["objective"]["met"] is True
    assert final["order-exception-resolution-time"]["count"] == 1


def _writes(state: dict[str, Any]) -> dict[str, int]:
    """Records per collection of a sandbox state."""
    return {name: len(records) for name, records in state["data"].items()}


def test_erp_master_data_rejection_parks_then_resume_completes_without_duplicates(
    tmp_path: Path,
) -> None:
    seen = asyncio.run(_governed_exception(tmp_path))
    account_id, opportunity_id = seen["ids"]

    # an EU deal: parked at the cloud ERP's tax-registration check with its reason code, before
    # any write (in either ERP)
    (run,) = seen["parked"]
    assert run["state"] == "parked"
    assert (run["reason"]["code"], run["reason"]["step"]) == ("HTTP_422", "nexus")
    assert "tax_registration_missing" in run["reason"]["message"]
    for key in ("parked_state", "unfixed_state"):
        state = seen[key]
        assert set(_writes(state["erp"]).values()) == {0}, key
        assert set(_writes(state["erp-cloud"]).values()) == {0}, key
        assert set(_writes(state["billing"]).values()) == {0}, key
        assert state["support"]["data"]["entitlements"] == [], key
        (crm_account,) = state["crm"]["data"]["accounts"]
        assert crm_account.get("Subscription_Id__c") is None, key
        assert crm_account.get("Status__c") is None, key
    _business_metrics_moved(seen["parked_metrics"], seen["final_metrics"])
    unfixed = seen["resumed_unfixed"]
    assert unfixed["state"] == "parked"
    assert "tax_registration_missing" in unfixed["reason"]["message"]

    # resumed after the fix: succeeded, one of everything, the ERP written once under one key
    done = seen["done"]
    assert done["state"] == "succeeded", done["reason"]
    assert [r["id"] for r in seen["runs"]] == [run["id"]]  # the redelivery made no second run
    final = seen["final_state"]
    assert final["erp"]["data"]["sales_orders"] == []  # the EU entity is on the cloud ERP
    (order,) = final["erp-cloud"]["data"]["orders"]
    assert (order["externalReference"], order["entity"], order["taxCountry"]) == (
        opportunity_id, "EU", "AT"
    )
    assert (order["currencyCode"], order["totals"]["net"]) == ("EUR", 11040 + 12 * 552)
    (subscription,) = final["billing"]["data"]["subscriptions"]
    assert subscription["metadata"]["erp_order_id"] == order["id"]
    assert len(final["billing"]["data"]["customers"]) == 1
    (entitlement,) = final["support"]["data"]["entitlements"]
    assert (entitlement["account_id"], entitlement["seats"]) == (account_id, 12)
    posts = [
        r for r in seen["erp_requests"] if (r["method"], r["path"]) == ("POST", "/api/v2/orders")
    ]
    assert [r["status"] for r in posts] == [201]  # the order was written once, after the fix
    checks = [r for r in seen["erp_requests"] if r["path"] == "/api/v2/tax/validate"]
    assert [r["status"] for r in checks] == [422, 422, 200]
    for system, state in final.items():
        assert all(e["writes"] <= 1 for e in state["idempotency"].values()), system
    verdict = reconcile(final, seen["reports"])
    assert verdict.ok, verdict.problems
    assert verdict.checked["reconciliation cloud-orders-vs-deals"] == 1
    assert verdict.checked["reconciliation subscriptions-vs-deals"] == 1
    assert verdict.checked["order amount"] == 1 and verdict.checked["ERP of record"] == 1


# -- cancel compensates every write; a replay after it parks ------------------------------------
US_ACCOUNT = {
    "Name": "Initech Austin",
    "BillingStreet": "100 Congress Ave",
    "BillingCity": "Austin",
    "BillingPostalCode": "78701",
    "BillingCountry": "US",
    "CurrencyIsoCode": "USD",
}


async def _deal(call: Any, name: str) -> tuple[str, str]:
    account = await call("crm", "POST", f"{CRM_API}/sobjects/Account", {**US_ACCOUNT, "Name": name})
    opportunity = await call("crm", "POST", f"{CRM_API}/sobjects/Opportunity", {
        "AccountId": account["id"], "Name": f"{name} - New Business",
        "StageName": "Negotiation", "CloseDate": "2025-03-01", "CurrencyIsoCode": "USD",
        "Term__c": 1,
        "OpportunityLineItems": [{"ProductCode": "SEAT-STD", "Quantity": 10, "UnitPrice": 600}],
    })
    return account["id"], opportunity["id"]


async def _cancel_then_replay(workdir: Path) -> dict[str, Any]:
    """Two deals whose runs park after writing: A when the CRM refuses the account update (the
    entitlement is granted by then), B when the support tool refuses the entitlement (the CRM
    account is updated by then). Both are cancelled, then A is replayed."""
    stack = Stack(ROOT, workdir)
    await stack.start()
    seen: dict[str, Any] = {}
    try:
        async with Driver(stack, build_scenario(4)) as driver:
            call, sandbox = driver.call, stack.sandbox
            account_a, deal_a = await _deal(call, "Initech Austin")
            account_b, deal_b = await _deal(call, "Hooli Austin")
            await call("crm", "POST", "/sandbox/faults", {
                "status": 403, "count": 1, "method": "PATCH",
                "path_prefix": f"{CRM_API}/sobjects/Account/{account_a}"})
            await call("support", "POST", "/sandbox/faults", {
                "status": 403, "count": 1, "method": "PUT",
                "path_prefix": f"/entitlements/{account_b}"})
            for deal in (deal_a, deal_b):
                await call("crm", "POST", f"/sandbox/opportunities/{deal}/close")
            await driver.settle()
            listing = await call("syncline", "GET", "/api/v1/runs?flow=closed-won-to-order")
            runs = {r["key"]: r for r in listing["runs"]}
            seen["parked"] = [runs[deal_a], runs[deal_b]]
            seen["before_cancel"] = sandbox.snapshot()
            for run in seen["parked"]:
                await call("syncline", "POST", f"/api/v1/runs/{run['id']}/cancel")
            await driver.settle()
            seen["cancelled"] = [
                await call("syncline", "GET", f"/api/v1/runs/{run['id']}") for run in runs.values()
            ]
            seen["after_cancel"] = sandbox.snapshot()
            replay = await call("syncline", "POST", f"/api/v1/runs/{runs[deal_a]['id']}/replay")
            await driver.settle()
            seen["replay"] = await call("syncline", "GET", f"/api/v1/runs/{replay['id']}")
            seen["after_replay"] = sandbox.snapshot()
            seen["accounts"] = (account_a, account_b)
    finally:
        await stack.stop()
    return seen


def test_cancel_leaves_nothing_active_and_a_replay_then_parks(tmp_path: Path) -> None:
    seen = asyncio.run(_cancel_then_replay(tmp_path))
    account_a, account_b = seen["accounts"]
    run_a, run_b = seen["parked"]
    assert (run_a["state"], run_a["reason"]["step"]) == ("parked", "crm")
    assert (run_b["state"], run_b["reason"]["step"]) == ("parked", "entitlement")
    before = seen["before_cancel"]
    entitlements = {e["account_id"]: e for e in before["support"]["data"]["entitlements"]}
    assert entitlements[account_a]["status"] == "active" and account_b not in entitlements
    accounts = {a["Id"]: a for a in before["crm"]["data"]["accounts"]}
    assert accounts[account_b]["Status__c"] == "Active"

    assert [r["state"] for r in seen["cancelled"]] == ["cancelled", "cancelled"], seen["cancelled"]
    state = seen["after_cancel"]
    assert {o["status"] for o in state["erp"]["data"]["sales_orders"]} == {"cancelled"}
    assert {s["status"] for s in state["billing"]["data"]["subscriptions"]} == {"canceled"}
    assert all(c.get("deleted") is True for c in state["billing"]["data"]["customers"])
    # the first invoices were posted to ERP receivables; cancelling voids them there
    assert len(before["erp"]["data"]["receivables"]) == 2
    assert {r["status"] for r in state["erp"]["data"]["receivables"]} == {"void"}
    entitlements = {e["account_id"]: e for e in state["support"]["data"]["entitlements"]}
    assert entitlements[account_a]["status"] == "revoked"  # no active entitlement is left
    assert all(e["status"] != "active" for e in entitlements.values())
    accounts = {a["Id"]: a for a in state["crm"]["data"]["accounts"]}
    assert (accounts[account_b]["Status__c"], accounts[account_b].get("Subscription_Id__c")) == (
        "Cancelled", None)

    replay = seen["replay"]
    assert replay["state"] == "parked"
    assert (replay["reason"]["code"], replay["reason"]["step"]) == ("ORDER_CANCELLED", "live")
    assert replay["links"]["replay_of"] == run_a["id"]
    after = seen["after_replay"]
    assert len(after["billing"]["data"]["subscriptions"]) == 2  # none resurrected
    assert {s["status"] for s in after["billing"]["data"]["subscriptions"]} == {"canceled"}
    assert {o["status"] for o in after["erp"]["data"]["sales_orders"]} == {"cancelled"}
