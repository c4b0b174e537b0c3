"""The revenue half of the sandbox ERP and billing, over real sockets: prorated adjustments and
revenue schedules that must sum to the order total, AR invoices settled by payments, usage
summaries, invoice items and invoices made of them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from engine.sandbox import Sandbox
from engine.tls import tls_context

TLS = tls_context()  # one CA load for the module, not one per client (50-80 ms each)



@pytest.fixture(scope="module")
def sandbox_all() -> Iterator[Sandbox]:
    with Sandbox(erp={"rate_limit": None}) as sandbox:
        yield sandbox


@pytest.fixture
def sb(sandbox_all: Sandbox) -> Sandbox:
    sandbox_all.reset()
    return sandbox_all


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(verify=TLS, timeout=5) as c:
        yield c


def order_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "external_id": "006A",
        "customer": {
            "account_id": "001A",
            "name": "Acme GmbH",
            "bill_to": {"street": "Dam 1", "city": "Amsterdam", "postal_code": "1012 JS",
                        "country": "NL"},
        },
        "subsidiary": "EU",
        "currency": "EUR",
        "tax_nexus": "NL",
        "lines": [
            {"sku": "PLAT-ENT", "quantity": 1, "unit_price": 24000},
            {"sku": "SEAT-STD", "quantity": 25, "unit_price": 550.5},
        ],
        "start_date": "2026-01-01",
    }
    return body | changes


def code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def schedule_of(client: httpx.Client, erp: str, order_id: str) -> dict[str, Any]:
    listing = client.get(f"{erp}/revenue-schedules", params={"sales_order_id": order_id}).json()
    (schedule,) = listing["data"]
    return dict(schedule)


def test_a_prorated_adjustment_moves_the_total_and_the_schedule_must_follow(
    sb: Sandbox, client: httpx.Client
) -> None:
    erp = sb.urls["erp"]
    order = client.post(f"{erp}/sales-orders", json=order_body()).json()
    schedule = schedule_of(client, erp, order["id"])
    assert (schedule["order_total"], schedule["scheduled"]) == (37762.5, 37762.5)
    assert schedule["entries"][0]["start_date"] == "2026-01-01"

    # 5 seats for half the term: 1,376.25 instead of 2,752.50
    adjust = f"{erp}/sales-orders/{order['id']}/adjustments"
    line = {"sku": "SEAT-STD", "quantity": 5, "unit_price": 550.5}
    too_much = client.post(adjust, json={"lines": [{**line, "amount": 2752.51}]})
    wrong_sign = client.post(adjust, json={"lines": [{**line, "amount": -10}]})
    assert code(too_much) == code(wrong_sign) == "INVALID_AMOUNT"
    adjusted = client.post(adjust, json={"external_id": "evt_1",
                                         "lines": [{**line, "amount": 1376.25}]})
    assert adjusted.status_code == 201, adjusted.text
    body = adjusted.json()
    assert body["amount"] == 1376.25 and body["lines"][0]["prorated"] is True
    assert body["sales_order"]["total"] == 39138.75
    assert body["sales_order"]["lines"][1] == {**body["sales_order"]["lines"][1],
                                               "quantity": 30, "amount": 16515}
    invoice = client.get(f"{erp}/invoices/{body['invoice_id']}").json()
    assert invoice["amount"] == 1376.25

    # the schedule lags until it is updated, and only an update that sums to the total is taken
    assert schedule_of(client, erp, order["id"])["scheduled"] == 37762.5
    update = f"{erp}/sales-orders/{order['id']}/revenue-schedule"
    wrong = client.post(update, json={"external_id": "evt_1", "amount": 2752.5})
    assert (wrong.status_code, code(wrong)) == (400, "SCHEDULE_TOTAL_MISMATCH")
    assert wrong.json()["error"]["difference"] == -1376.25
    assert len(schedule_of(client, erp, order["id"])["entries"]) == 1
    right = client.post(update, json={"external_id": "evt_1", "source": body["id"],
                                      "start_date": "2026-07-01", "amount": 1376.25})
    assert right.status_code == 201, right.text
    assert (right.json()["scheduled"], right.json()["order_total"]) == (39138.75, 39138.75)
    assert right.json()["entries"][1]["end_date"] == order["end_date"]
    again = client.post(update, json={"external_id": "evt_1", "amount": 0})
    assert (again.status_code, code(again)) == (409, "DUPLICATE_EXTERNAL_ID")

    other = client.post(f"{erp}/sales-orders", json=order_body(external_id="006B")).json()
    client.post(f"{erp}/sales-orders/{other['id']}/cancel", json={"reason": "lost"})
    cancelled = client.post(f"{erp}/sales-orders/{other['id']}/revenue-schedule",
                            json={"external_id": "x", "amount": 0})
    assert (cancelled.status_code, code(cancelled)) == (409, "ORDER_CANCELLED")
    assert schedule_of(client, erp, other["id"])["status"] == "cancelled"


def test_ar_invoices_are_posted_once_and_settled_by_their_payment(
    sb: Sandbox, client: httpx.Client
) -> None:
    erp = sb.urls["erp"]
    ar = {"external_id": "in_1", "account_id": "001A", "number": "SBX-0001",
          "currency": "EUR", "amount": 37762.5}
    unknown = client.post(f"{erp}/receivables", json=ar)
    assert (unknown.status_code, code(unknown)) == (400, "UNKNOWN_CUSTOMER")
    order = client.post(f"{erp}/sales-orders", json=order_body()).json()
    wrong_order = client.post(f"{erp}/receivables", json={**ar, "sales_order_id": "SO-9"})
    assert code(wrong_order) == "UNKNOWN_SALES_ORDER"
    posted = client.post(f"{erp}/receivables", json={**ar, "sales_order_id": order["id"]})
    assert posted.status_code == 201, posted.text
    record = posted.json()
    assert (record["status"], record["amount_due"], record["customer_id"]) == (
        "open", 37762.5, order["customer_id"])
    twice = client.post(f"{erp}/receivables", json=ar)
    assert (twice.status_code, twice.json()["error"]["existing_id"]) == (409, record["id"])

    paid = client.post(f"{erp}/payments", json={"external_id": "in_1", "amount": 37762.5,
                                                "sales_order_id": order["id"]})
    assert paid.status_code == 201, paid.text
    settled = client.get(f"{erp}/receivables/{record['id']}").json()
    assert (settled["status"], settled["amount_due"], settled["payment_id"]) == (
        "paid", 0, paid.json()["id"])
    refused = client.post(f"{erp}/receivables/{record['id']}/void")
    assert (refused.status_code, code(refused)) == (409, "RECEIVABLE_PAID")
    other = client.post(f"{erp}/receivables", json={**ar, "external_id": "in_2"}).json()
    assert client.post(f"{erp}/receivables/{other['id']}/void").json()["status"] == "void"
    open_ = client.get(f"{erp}/receivables", params={"status": "open"}).json()
    assert open_["count"] == 0


def subscription(client: httpx.Client, billing: str) -> dict[str, Any]:
    customer = client.post(f"{billing}/v1/customers", json={"name": "Acme"}).json()
    items = [
        {"quantity": 1, "price_data": {"product": "PLAT-PRO", "unit_amount": 1200000}},
        {"quantity": 20, "price_data": {"product": "SEAT-STD", "unit_amount": 60000}},
    ]
    created = client.post(f"{billing}/v1/subscriptions", json={
        "customer": customer["id"], "items": items, "metadata": {"account_id": "001A"}})
    assert created.status_code == 200, created.text
    return dict(created.json())


def test_usage_is_summarized_per_subscription_and_month_against_the_plan(
    sb: Sandbox, client: httpx.Client
) -> None:
    billing = sb.urls["billing"]
    sub = subscription(client, billing)
    plan_item = sub["items"]["data"][0]["id"]
    records = f"{billing}/v1/subscription_items/{plan_item}/usage_records"
    last_month = int(time.time()) - 40 * 86400
    period = time.strftime("%Y-%m", time.gmtime(last_month))
    for quantity in (60_000, 70_000):
        assert client.post(records, json={"quantity": quantity}).status_code == 200
    client.post(records, json={"quantity": 5, "timestamp": last_month})
    client.post(records, json={"quantity": 120_000, "timestamp": last_month, "action": "set"})
    assert code(client.post(records, json={"quantity": -1})) == "parameter_invalid"
    missing = client.post(f"{billing}/v1/subscription_items/si_nope/usage_records",
                          json={"quantity": 1})
    assert missing.status_code == 404

    summaries = client.get(f"{billing}/v1/usage_summaries").json()["data"]
    by_period = {s["period"]: s for s in summaries}
    current = by_period[time.strftime("%Y-%m", time.gmtime())]
    assert (current["total_usage"], current["included_quantity"], current["closed"]) == (
        130_000, 100_000, False)
    assert current["plan"] == "PLAT-PRO" and current["metadata"] == {"account_id": "001A"}
    assert by_period[period]["closed"] is True  # last month is over
    assert by_period[period]["total_usage"] == 120_000
    closed = client.get(f"{billing}/v1/usage_summaries", params={"closed": "true"}).json()
    assert [s["period"] for s in closed["data"]] == [period]

    client.post(f"{billing}/sandbox/usage/close", json={"period": current["period"]})
    assert client.get(f"{billing}/v1/usage_summaries",
                      params={"closed": "true"}).json()["data"].__len__() == 2
    late = client.post(records, json={"quantity": 1})
    assert (late.status_code, code(late)) == (400, "usage_period_closed")


def test_invoice_items_are_invoiced_once(sb: Sandbox, client: httpx.Client) -> None:
    billing = sb.urls["billing"]
    sub = subscription(client, billing)
    customer = sub["customer"]
    nothing = client.post(f"{billing}/v1/invoices", json={"customer": customer})
    assert code(nothing) == "invoice_no_customer_line_items"
    item = client.post(f"{billing}/v1/invoiceitems", json={
        "customer": customer, "subscription": sub["id"], "amount": 15000, "currency": "usd",
        "description": "API overage", "metadata": {"usage_id": "usum_1"}})
    assert item.status_code == 200, item.text
    assert code(client.post(f"{billing}/v1/invoiceitems", json={
        "customer": customer, "amount": 1.5, "currency": "usd"})) == "parameter_invalid"
    invoice = client.post(f"{billing}/v1/invoices",
                          json={"customer": customer, "subscription": sub["id"]}).json()
    assert (invoice["status"], invoice["amount_due"], invoice["billing_reason"]) == (
        "open", 15000, "manual")
    assert invoice["subscription_details"]["metadata"] == {"account_id": "001A"}
    assert invoice["lines"]["data"][0]["metadata"] == {"usage_id": "usum_1"}
    items = client.get(f"{billing}/v1/invoiceitems", params={"customer": customer}).json()
    assert [i["invoice"] for i in items["data"]] == [invoice["id"]]
    again = client.post(f"{billing}/v1/invoices", json={"customer": customer})
    assert code(again) == "invoice_no_customer_line_items"


def test_billing_clock_expand_reprice_void_and_delete(sb: Sandbox, client: httpx.Client) -> None:
    billing = sb.urls["billing"]
    customer = client.post(f"{billing}/v1/customers", json={"name": "Acme"}).json()
    created = client.post(f"{billing}/v1/subscriptions", json={
        "customer": customer["id"], "expand": ["latest_invoice"],
        "items": [{"quantity": 2, "price_data": {"product": "SEAT-STD", "unit_amount": 60000}}],
    }).json()
    invoice = created["latest_invoice"]  # expanded: the invoice itself
    assert (invoice["amount_due"], invoice["status"]) == (120000, "open")
    plain = client.get(f"{billing}/v1/subscriptions/{created['id']}").json()
    assert plain["latest_invoice"] == invoice["id"]

    # the test clock moves billing's time: events and usage months follow it
    moved = client.post(f"{billing}/sandbox/clock", json={"days": 40}).json()
    assert moved["now"] >= created["created"] + 40 * 86400 - 5
    assert code(client.post(f"{billing}/sandbox/clock", json={"days": -1})) == "parameter_invalid"
    item = created["items"]["data"][0]
    repriced = client.post(f"{billing}/v1/subscriptions/{created['id']}", json={
        "items": [{"id": item["id"], "quantity": 3,
                   "price_data": {"product": "SEAT-STD", "unit_amount": 63000}}]}).json()
    assert (repriced["items"]["data"][0]["price"]["unit_amount"],
            repriced["items"]["data"][0]["quantity"]) == (63000, 3)
    (event,) = [e for e in sb.billing.records("events")
                if e["type"] == "customer.subscription.updated"]
    assert event["created"] >= moved["now"] - 5

    assert client.post(f"{billing}/v1/invoices/{invoice['id']}/void").json()["status"] == "void"
    again = client.post(f"{billing}/v1/invoices/{invoice['id']}/void")
    assert code(again) == "invoice_not_open"
    pending = client.post(f"{billing}/v1/invoiceitems", json={
        "customer": customer["id"], "amount": 100, "currency": "usd"}).json()
    deleted = client.delete(f"{billing}/v1/invoiceitems/{pending['id']}").json()
    assert deleted["deleted"] is True
    billed = client.post(f"{billing}/v1/invoiceitems", json={
        "customer": customer["id"], "amount": 100, "currency": "usd"}).json()
    client.post(f"{billing}/v1/invoices", json={"customer": customer["id"]})
    refused = client.delete(f"{billing}/v1/invoiceitems/{billed['id']}")
    assert code(refused) == "invoice_item_invoiced"
