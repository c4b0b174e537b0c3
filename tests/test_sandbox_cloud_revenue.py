"""The cloud ERP sandbox's revenue module over real sockets, in its own API style: each order's
revenue schedule sums to its net total (prorated amendments and overages re-spread by a line the
integration adds, refused otherwise), AR invoices of the order's entity settled by payments, and
the listings the Reconciliations read."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from engine.sandbox import ErpCloudSandbox
from engine.sandbox.erp_cloud_revenue import monthly
from engine.sandbox.serving import ServerThread
from engine.tls import tls_context

TLS = tls_context()  # one CA load for the module, not one per client (50-80 ms each)



@pytest.fixture
def client() -> Iterator[httpx.Client]:
    system = ErpCloudSandbox(rate_limit=None, clients={})
    server: ServerThread = system.serve()
    try:
        with httpx.Client(verify=TLS, base_url=server.url, timeout=5) as c:
            yield c
    finally:
        server.stop()


def _order(client: httpx.Client, ref: str = "006EU1", entity: str = "EU") -> dict[str, Any]:
    country, currency = ("DE", "EUR") if entity == "EU" else ("US", "USD")
    answer = client.post("/api/v2/orders", json={
        "entity": entity, "externalReference": ref, "currencyCode": currency,
        "taxCountry": country, "orderDate": "2026-01-01", "servicePeriod": {"months": 12},
        "customer": {"externalReference": "001" + ref[3:], "legalName": "Globex",
                     "billingAddress": {"line1": "Dam 1", "city": "Berlin", "postcode": "10115",
                                        "countryCode": country}},
        "orderLines": [{"itemNumber": "SEAT-STD", "quantity": 20, "unitPrice": 600}]})
    assert answer.status_code == 201, answer.text
    order: dict[str, Any] = answer.json()
    return order


def _schedule(client: httpx.Client, order_id: str) -> dict[str, Any]:
    answer = client.get(f"/api/v2/orders/{order_id}/revenue-schedule")
    assert answer.status_code == 200, answer.text
    schedule: dict[str, Any] = answer.json()
    return schedule


def _codes(answer: httpx.Response) -> list[str]:
    return [e["code"] for e in answer.json()["errors"]]


def test_an_order_opens_its_schedule_ratably_over_the_service_period(
        client: httpx.Client) -> None:
    order = _order(client)
    schedule = _schedule(client, order["id"])
    assert (schedule["id"], schedule["entity"], schedule["currencyCode"], schedule["state"]) == (
        "RS-EU-00001", "EU", "EUR", "Active")
    assert schedule["orderTotal"] == schedule["scheduledTotal"] == 12000
    [line] = schedule["lines"]
    assert (line["recognition"], line["periodStart"], line["periodEnd"]) == (
        "Ratable", "2026-01-01", "2026-12-31")
    assert [p["period"] for p in line["periods"]][::11] == ["2026-01", "2026-12"]
    assert round(sum(p["amount"] for p in line["periods"]), 2) == 12000
    # January has 31 of the year's 365 days
    assert line["periods"][0]["amount"] == round(12000 * 31 / 365, 2)


def test_a_prorated_amendment_is_re_spread_and_the_schedule_must_sum_to_the_order(
        client: httpx.Client) -> None:
    order = _order(client)
    # ten more seats for the second half of the year: 3,000 instead of a year's 6,000
    amended = client.post(f"/api/v2/orders/{order['id']}/amendments", json={
        "externalReference": "evt_1", "lineChanges": [
            {"itemNumber": "SEAT-STD", "quantityDelta": 10, "unitPrice": 600,
             "netAmount": 3000}]})
    assert amended.status_code == 201, amended.text
    assert (amended.json()["netAmount"], amended.json()["order"]["totals"]["net"]) == (3000, 15000)
    assert amended.json()["lineChanges"][0]["prorated"] is True
    # the schedule has not moved yet: a line that would not make it sum is refused, unchanged
    short = client.post(f"/api/v2/orders/{order['id']}/revenue-schedule/lines",
                        json={"externalReference": "evt_1", "amount": 2999})
    assert short.status_code == 422 and _codes(short) == ["schedule_total_mismatch"]
    assert short.json()["errors"][0]["meta"] == {"orderTotal": 15000, "scheduled": 14999,
                                                 "difference": 1}
    assert _schedule(client, order["id"])["scheduledTotal"] == 12000
    line = {"externalReference": "evt_1", "sourceId": amended.json()["id"],
            "periodStart": "2026-07-01", "amount": 3000}
    added = client.post(f"/api/v2/orders/{order['id']}/revenue-schedule/lines", json=line)
    assert added.status_code == 201, added.text
    schedule = added.json()
    assert schedule["scheduledTotal"] == schedule["orderTotal"] == 15000
    spread = schedule["lines"][1]
    assert (spread["sourceId"], spread["periodStart"], spread["periodEnd"]) == (
        "AMD-EU-00001", "2026-07-01", "2026-12-31")  # to the end of the term
    assert [p["period"] for p in spread["periods"]] == [f"2026-{m:02d}" for m in range(7, 13)]
    again = client.post(f"/api/v2/orders/{order['id']}/revenue-schedule/lines", json=line)
    assert (again.status_code, len(again.json()["lines"])) == (200, 2)  # once per reference


def test_a_prorated_amount_beyond_the_full_price_or_of_the_wrong_sign_is_refused(
        client: httpx.Client) -> None:
    order = _order(client)
    for amount in (6000.01, -10, "3000"):
        answer = client.post(f"/api/v2/orders/{order['id']}/amendments", json={
            "externalReference": f"evt_{amount}", "lineChanges": [
                {"itemNumber": "SEAT-STD", "quantityDelta": 10, "unitPrice": 600,
                 "netAmount": amount}]})
        assert answer.status_code == 422 and _codes(answer) == ["invalid_amount"], amount
        assert answer.json()["errors"][0]["source"]["pointer"] == "/lineChanges/0/netAmount"
    assert client.get(f"/api/v2/orders/{order['id']}").json()["totals"]["net"] == 12000


def test_an_overage_line_is_booked_and_recognized_in_its_month(client: httpx.Client) -> None:
    order = _order(client)
    overage = client.post(f"/api/v2/orders/{order['id']}/amendments", json={
        "externalReference": "usum_sub_1_2026-11", "reason": "API overage 2026-11",
        "lineChanges": [{"itemNumber": "API-OVERAGE", "quantityDelta": 3, "unitPrice": 4.6}]})
    assert overage.status_code == 201, overage.text
    assert overage.json()["order"]["totals"]["net"] == 12013.8
    added = client.post(f"/api/v2/orders/{order['id']}/revenue-schedule/lines", json={
        "externalReference": "usum_sub_1_2026-11", "sourceId": overage.json()["id"],
        "periodStart": "2026-11-01", "periodEnd": "2026-11-01", "amount": 13.8})
    assert added.status_code == 201, added.text
    line = added.json()["lines"][-1]
    assert (line["recognition"], line["periods"]) == (
        "PointInTime", [{"period": "2026-11", "amount": 13.8}])
    listed = client.get("/api/v2/amendments", params={"entity": "EU"}).json()
    assert [a["externalReference"] for a in listed["items"]] == ["usum_sub_1_2026-11"]


def test_receivables_belong_to_the_orders_entity_and_a_payment_settles_them(
        client: httpx.Client) -> None:
    order = _order(client)
    body = {"externalReference": "in_1", "orderId": order["id"], "customerReference": "001EU1",
            "documentNumber": "SBX-0001", "amount": {"value": 12000, "currencyCode": "EUR"},
            "state": "Open", "invoiceDate": "2026-01-01"}
    posted = client.post("/api/v2/receivables", json=body)
    assert posted.status_code == 201, posted.text
    receivable = posted.json()
    assert (receivable["id"], receivable["state"], receivable["balanceDue"],
            receivable["dueDate"]) == ("AR-EU-00001", "Open", 12000, "2026-01-31")
    again = client.post("/api/v2/receivables", json=body)
    assert (again.status_code, again.json()["id"]) == (200, "AR-EU-00001")
    paid = client.post("/api/v2/payments", json={
        "externalReference": "in_1", "orderId": order["id"],
        "amount": {"value": 12000, "currencyCode": "EUR"}, "paymentMethod": "card"})
    assert paid.status_code == 201, paid.text
    settled = client.get("/api/v2/receivables/AR-EU-00001").json()
    assert (settled["state"], settled["balanceDue"], settled["paymentId"]) == (
        "Paid", 0, paid.json()["id"])
    voided = client.patch("/api/v2/receivables/AR-EU-00001", json={"state": "Voided"})
    assert voided.status_code == 409 and _codes(voided) == ["receivable_paid"]
    listed = client.get("/api/v2/receivables", params={"entity": "EU", "state": "Paid"}).json()
    assert [r["externalReference"] for r in listed["items"]] == ["in_1"]


def test_a_receivable_that_is_not_the_orders_is_refused_with_every_problem(
        client: httpx.Client) -> None:
    order = _order(client)
    wrong = client.post("/api/v2/receivables", json={
        "externalReference": "in_2", "orderId": order["id"], "customerReference": "001OTHER",
        "amount": {"value": -1, "currencyCode": "USD"}, "state": "Sent"})
    assert wrong.status_code == 422
    assert _codes(wrong) == ["invalid_amount", "currency_mismatch", "customer_mismatch",
                             "invalid_state"]
    missing = client.post("/api/v2/receivables", json={"externalReference": "in_3",
                                                       "orderId": "ORD-EU-09999"})
    assert missing.status_code == 404 and _codes(missing) == ["order_not_found"]
    opened = client.post("/api/v2/receivables", json={
        "externalReference": "in_4", "orderId": order["id"],
        "amount": {"value": 10, "currencyCode": "EUR"}}).json()
    voided = client.patch(f"/api/v2/receivables/{opened['id']}", json={"state": "Voided"})
    assert (voided.status_code, voided.json()["state"], voided.json()["balanceDue"]) == (
        200, "Voided", 0)


def test_schedules_list_per_entity_and_follow_a_cancelled_order(client: httpx.Client) -> None:
    eu, us = _order(client), _order(client, "006US1", "US")
    client.patch(f"/api/v2/orders/{eu['id']}", json={"state": "Cancelled"})
    listed = client.get("/api/v2/revenue-schedules", params={"entity": "EU"}).json()
    assert [(s["orderId"], s["state"]) for s in listed["items"]] == [(eu["id"], "Cancelled")]
    refused = client.post(f"/api/v2/orders/{eu['id']}/revenue-schedule/lines",
                          json={"externalReference": "x", "amount": 0})
    assert refused.status_code == 409 and _codes(refused) == ["order_cancelled"]
    assert client.get("/api/v2/revenue-schedules", params={"orderId": us["id"]}).json()[
        "items"][0]["id"] == "RS-US-00001"


def test_monthly_recognition_sums_to_the_amount_to_the_cent() -> None:
    periods = monthly(dt.date(2026, 2, 15), dt.date(2027, 2, 14), 1000.01)
    assert len(periods) == 13 and round(sum(p["amount"] for p in periods), 2) == 1000.01
    assert monthly(dt.date(2026, 3, 1), dt.date(2026, 3, 1), 5) == [
        {"period": "2026-03", "amount": 5}]
