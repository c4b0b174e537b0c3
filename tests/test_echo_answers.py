"""Echo fingerprints taken from a write's answer (`record: {fields: response.body}`, a create's
`id: response.body.id`), on both stores: the reference project's renewal re-prices a billing
subscription in Stripe's request shape (`items: [{id, price_data}]`), and its webhook, which
shows `items.data`, is still recognised as the echo, while a real quantity change runs; a
create's webhook is an echo too; a delivery that overtakes the answer waits for it; a field of
the answer the request did not set is not Syncline's. Then the whole reference project against
the sandbox systems: the renewal's and the new subscription's webhooks come back as ECHO, a
person's seat change in billing becomes an amendment."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.commands.flowtests import run_flow_tests
from engine.compiler import compile_project
from engine.compiler.compiled import EchoCheck
from engine.compiler.plan import Plan
from engine.demo.driver import CRM_API, Driver
from engine.demo.scenario import build_scenario
from engine.demo.stack import Stack
from engine.errors import DefinitionErrors
from engine.runtime.calls import OutboundRequest
from engine.runtime.echo import EchoGuard, Fingerprints, WriteFingerprint, flatten, written
from engine.store.base import Store
from engine.store.echoes import Echoes

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plan() -> Plan:
    """The reference project: its billing System's records and its billing-events trigger."""
    return compile_project(ROOT, environment="dev")


def _price(ident: str, amount: int) -> dict[str, Any]:
    return {"id": ident, "object": "price", "product": "SEAT-STD", "unit_amount": amount,
            "currency": "usd", "recurring": {"interval": "year", "interval_count": 1}}


BEFORE = {
    "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active",
    "currency": "usd", "quantity": 18, "cancel_at_period_end": False,
    "items": {"object": "list", "has_more": False, "data": [
        {"id": "si_1", "object": "subscription_item", "quantity": 18, "metadata": {},
         "price": _price("price_old", 57000)}]},
    "metadata": {"account_id": "001A", "current_order_id": "006A"},
}
# the renewal's request, as flows/renewal.yaml's flow test expects it
RENEWAL = {
    "cancel_at_period_end": False, "proration_behavior": "none",
    "items": [{"id": "si_1", "quantity": 20, "price_data": {
        "product": "SEAT-STD", "unit_amount": 60000, "recurring": {"interval": "year"}}}],
    "metadata": {"current_order_id": "006R", "current_erp_order_id": "SO-1009",
                 "current_term_start": "2026-01-31", "current_term_end": "2027-01-30"},
}
# billing's answer: the items as it holds them (a new price), the derived quantity, and a status
# someone else changed just before (past_due), which the renewal did not set
RENEWED = {
    **BEFORE, "quantity": 20, "status": "past_due",
    "items": {**BEFORE["items"], "data": [
        {**BEFORE["items"]["data"][0], "quantity": 20, "price": _price("price_new", 60000)}]},
    "metadata": {"account_id": "001A", **RENEWAL["metadata"]},
}


def _updated(after: dict[str, Any], previous: dict[str, Any], n: int) -> dict[str, Any]:
    """A customer.subscription.updated delivery's context."""
    data = {"id": f"evt_{n}", "type": "customer.subscription.updated", "created": 1767225600,
            "data": {"object": after, "previous_attributes": previous}}
    return {"data": data, "event": {"id": f"evt_{n}"}}


def _request(plan: Plan, operation: str, body: Any, **params: str) -> OutboundRequest:
    return OutboundRequest(
        system=plan.system("billing"), operation=operation, method="POST",
        path="/v1/subscriptions" + "".join(f"/{v}" for v in params.values()), query={},
        headers={}, body=body, idempotency_key=None, correlation_id="c", traceparent=None,
        params=params)


def _check(plan: Plan) -> EchoCheck:
    echo = plan.flows["billing-events"].trigger.echo
    assert echo is not None
    return echo


def _write(plan: Plan, store: Store, operation: str, body: Any,
           **params: str) -> WriteFingerprint:
    fingerprint = Fingerprints(Echoes(store), time.time).write(
        _request(plan, operation, body, **params), "run-renewal", "billing")
    assert fingerprint is not None
    return fingerprint




@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_renewal_s_answer_makes_its_webhook_an_echo(plan: Plan, any_store: Store) -> None:
    write = _write(plan, any_store, "update-subscription", RENEWAL, id="sub_1")
    await write.before()
    await write.answered(200, RENEWED)
    guard, echo = EchoGuard(Echoes(any_store), time.time), _check(plan)
    previous = {"items": BEFORE["items"], "quantity": 18, "metadata": BEFORE["metadata"]}
    echoed = await guard.check(echo, _updated(RENEWED, previous, 1))
    assert echoed is not None and (echoed.run_id, echoed.record_id) == ("run-renewal", "sub_1")

    # a person sets 25 seats in billing: a real change, it runs
    seats = copy.deepcopy(RENEWED)
    seats["quantity"] = seats["items"]["data"][0]["quantity"] = 25
    assert await guard.check(echo, _updated(seats, {"items": RENEWED["items"]}, 2)) is None


@pytest.mark.anyio
async def test_the_request_alone_could_not_tell_the_echo(plan: Plan, any_store: Store) -> None:
    """Without the answer (lost), the fingerprint is the request's: Stripe's request shape is no
    match for the subscription's items.data, so the delivery runs (never swallowed)."""
    write = _write(plan, any_store, "update-subscription", RENEWAL, id="sub_1")
    await write.before()
    await write.answered(None, None)
    guard = EchoGuard(Echoes(any_store), time.time)
    previous = {"items": BEFORE["items"], "metadata": BEFORE["metadata"]}
    assert await guard.check(_check(plan), _updated(RENEWED, previous, 1)) is None


@pytest.mark.anyio
async def test_someone_else_s_earlier_change_in_the_answer_is_not_syncline_s(
        plan: Plan, any_store: Store) -> None:
    """The answer shows a status someone set just before the renewal; their webhook arriving
    after Syncline's write is theirs: it runs."""
    write = _write(plan, any_store, "update-subscription", RENEWAL, id="sub_1")
    await write.before()
    await write.answered(200, RENEWED)
    guard = EchoGuard(Echoes(any_store), time.time)
    theirs = {**BEFORE, "status": "past_due"}
    assert await guard.check(_check(plan), _updated(theirs, {"status": "active"}, 1)) is None


@pytest.mark.anyio
async def test_a_create_is_an_echo_once_its_answer_names_the_record(
        plan: Plan, any_store: Store) -> None:
    request = {"customer": "cus_1", "items": [{"price_data": {"product": "SEAT-STD",
               "unit_amount": 57000}, "quantity": 18}], "expand": ["latest_invoice"]}
    write = _write(plan, any_store, "create-subscription", request)
    await write.before()  # no id yet: a delivery about any subscription waits for the answer
    guard, echo = EchoGuard(Echoes(any_store), time.time), _check(plan)
    created = {"data": {"id": "evt_c", "type": "customer.subscription.created",
                        "data": {"object": BEFORE}}, "event": {"id": "evt_c"}}
    checking = asyncio.create_task(guard.check(echo, created))
    await asyncio.sleep(0.15)
    assert not checking.done()  # the webhook overtook the create's answer: it waits
    await write.answered(200, {**BEFORE, "latest_invoice": {"id": "in_1", "amount_due": 1}})
    echoed = await asyncio.wait_for(checking, 5)
    assert echoed is not None and echoed.record_id == "sub_1"
    # another subscription's delivery is no echo of it
    other = copy.deepcopy(created)
    other["data"]["data"]["object"] = {**BEFORE, "id": "sub_2"}
    assert await guard.check(echo, other) is None


@pytest.mark.anyio
@pytest.mark.parametrize("answer", [(None, None), (200, {"object": "subscription"}),
                                    (200, "not an object")])
async def test_a_create_without_an_answer_naming_a_record_leaves_nothing_to_wait_for(
        plan: Plan, any_store: Store, answer: tuple[int | None, Any]) -> None:
    """A create that failed (or was lost), or whose answer has no id: its fingerprint names no
    record, so no delivery waits for it or is its echo."""
    write = _write(plan, any_store, "create-subscription", {"customer": "cus_1"})
    await write.before()
    await write.answered(*answer)
    created = {"data": {"id": "evt_c", "type": "customer.subscription.created",
                        "data": {"object": BEFORE}}, "event": {"id": "evt_c"}}
    started = time.monotonic()
    assert await EchoGuard(Echoes(any_store), time.time).check(_check(plan), created) is None
    assert time.monotonic() - started < 1.0  # never waited for the System's timeout (10 s)


@pytest.mark.anyio
async def test_an_update_s_delivery_overtaking_its_answer_waits_for_it(
        plan: Plan, any_store: Store) -> None:
    write = _write(plan, any_store, "update-subscription", RENEWAL, id="sub_1")
    await write.before()
    guard = EchoGuard(Echoes(any_store), time.time)
    previous = {"items": BEFORE["items"], "metadata": BEFORE["metadata"]}
    checking = asyncio.create_task(guard.check(_check(plan), _updated(RENEWED, previous, 1)))
    await asyncio.sleep(0.15)
    assert not checking.done()
    await write.answered(200, RENEWED)
    assert await asyncio.wait_for(checking, 5) is not None


def test_an_update_s_answer_counts_only_where_its_request_set_fields() -> None:
    answer = written(flatten(RENEWED), flatten(RENEWAL))
    assert ("items", "data") in answer and ("metadata", "current_term_end") in answer
    assert ("status",) not in answer and ("quantity",) not in answer  # not set by the request
    assert ("metadata", "account_id") not in answer  # the request set other metadata keys
    assert written(flatten(RENEWED), {}) == {}


# -- the reference project against the sandbox systems ------------------------------------

ACCOUNT = {"Name": "Initech Austin", "BillingStreet": "100 Congress Ave",
           "BillingCity": "Austin", "BillingPostalCode": "78701", "BillingCountry": "US",
           "CurrencyIsoCode": "USD"}


def _deal(account: str, kind: str, price: int, **extra: Any) -> dict[str, Any]:
    lines = [{"ProductCode": "SEAT-STD", "Quantity": 10, "UnitPrice": price}]
    return {"AccountId": account, "Name": f"Initech - {kind}", "Type": kind,
            "StageName": "Negotiation", "CloseDate": time.strftime("%Y-%m-%d"),
            "CurrencyIsoCode": "USD", "Term__c": 1, "OpportunityLineItems": lines, **extra}


async def _billing_round_trips(workdir: Path) -> dict[str, Any]:
    stack = Stack(ROOT, workdir)
    await stack.start()
    seen: dict[str, Any] = {}
    try:
        async with Driver(stack, build_scenario(1)) as driver:
            call = driver.call
            account = await call("crm", "POST", f"{CRM_API}/sobjects/Account", ACCOUNT)
            deal = await call("crm", "POST", f"{CRM_API}/sobjects/Opportunity",
                              _deal(account["id"], "New Business", 600))
            await call("crm", "POST", f"/sandbox/opportunities/{deal['id']}/close")
            await driver.settle()
            crm = await call("crm", "GET", f"{CRM_API}/sobjects/Account/{account['id']}")
            start = dt.date.fromisoformat(crm["Contract_End__c"]) + dt.timedelta(days=1)
            renewal = await call("crm", "POST", f"{CRM_API}/sobjects/Opportunity", _deal(
                account["id"], "Renewal", 650, Original_Opportunity__c=deal["id"],
                Term_Start__c=start.isoformat()))
            await call("crm", "POST", f"/sandbox/opportunities/{renewal['id']}/close")
            await driver.settle()
            sub = await call("billing", "GET", f"/v1/subscriptions/{crm['Subscription_Id__c']}")
            seen["renewed"] = sub
            seat = sub["items"]["data"][0]
            await call("billing", "POST", f"/sandbox/subscriptions/{sub['id']}/update",
                       {"item": seat["id"], "quantity": 15})  # a person adds five seats
            await driver.settle()
            listing = await call("syncline", "GET", "/api/v1/runs?limit=500")
            seen["runs"] = listing["runs"]
    finally:
        await stack.stop()
    return seen


def test_the_reference_billing_round_trips_are_echoes_and_an_amendment_runs(
        tmp_path: Path) -> None:
    seen = asyncio.run(_billing_round_trips(tmp_path))
    runs = sorted(seen["runs"], key=lambda r: r["created_at"])
    by_id = {r["id"]: r for r in runs}
    echoes = [r for r in runs if r["flow"] == "billing-events"
              and (r["reason"] or {}).get("code") == "ECHO"]
    writers = {by_id[m]["flow"] for r in echoes
               for m in by_id if m in r["reason"]["message"]}
    # the new subscription (closed-won) and the renewal's re-pricing both came back as echoes
    assert writers == {"closed-won-to-order", "renewal"}, [r["reason"] for r in echoes]
    assert seen["renewed"]["items"]["data"][0]["price"]["unit_amount"] == 65000  # re-priced
    amended = [r for r in runs if r["flow"] == "subscription-amended"]
    assert len(amended) == 1 and amended[0]["state"] == "succeeded"  # the person's 5 seats
    last = [r for r in runs if r["flow"] == "billing-events"][-1]
    assert last["state"] == "succeeded" and last["reason"] is None


# -- flow tests' earlier writes ----------------------------------------------------------------

WRITTEN = """\
apiVersion: syncline/v1
kind: System
metadata: {name: crm, owner: qa}
spec:
  baseUrl: http://127.0.0.1:9
  webhooks: {scheme: none}
  operations:
    create-account: {method: POST, path: /a}
    update-account: {method: PATCH, path: "/a/{id}", record: {type: account, id: params.id}}
  echo: {window: 15m}
---
apiVersion: syncline/v1
kind: Flow
metadata: {name: hook, owner: qa}
spec:
  trigger:
    webhook: {path: /h, system: crm, record: {type: account, id: data.Id}}
  steps:
    - {id: s, set: {a: data.a}}
  tests:
    - name: echo
      written: [{system: crm, operation: OPERATION, params: {id: "001A"}, body: {a: 1}}]
      input: {Id: "001A", a: 1}
      expect: {state: STATE, reason: REASON}
"""


def test_a_flow_test_s_earlier_write_must_leave_a_fingerprint(
        project: Callable[[dict[str, str]], Path]) -> None:
    files = {"flows/x.yaml": WRITTEN.replace("OPERATION", "update-acount")}
    with pytest.raises(DefinitionErrors) as caught:
        compile_project(project(files))
    assert ("flows/x.yaml:22:31:" in str(caught.value) and "error[E_ECHO] test 'echo': operation "
            "'update-acount' of system 'crm' declares no record, so its write leaves no "
            "fingerprint (did you mean 'update-account'?)" in str(caught.value))


@pytest.mark.parametrize(("a", "state", "reason"), [(1, "filtered", "ECHO"),
                                                   (2, "succeeded", "null")])
def test_a_flow_test_shows_the_echo_of_its_earlier_write(
        project: Callable[[dict[str, str]], Path], a: int, state: str, reason: str) -> None:
    text = (WRITTEN.replace("OPERATION", "update-account").replace("STATE", state)
            .replace("REASON", reason).replace('input: {Id: "001A", a: 1}',
                                               f'input: {{Id: "001A", a: {a}}}'))
    root = project({"flows/x.yaml": text})
    [result] = run_flow_tests(compile_project(root), root)
    assert result.passed, result.detail
