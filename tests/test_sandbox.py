"""The sandbox systems (engine/sandbox), exercised over real sockets on 127.0.0.1."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from engine.sandbox import ErpSandbox, Sandbox, ServerThread
from engine.sandbox.billing import DEFAULT_WEBHOOK_SECRET as BILLING_SECRET
from engine.sandbox.crm import DEFAULT_WEBHOOK_SECRET as CRM_SECRET
from engine.sandbox.erp import DEFAULT_WEBHOOK_SECRET as ERP_SECRET
from engine.sandbox.webhooks import LANES, WebhookSender
from engine.tls import tls_context

TLS = tls_context()  # one CA load for the module, not one per client (50-80 ms each)


REPO = Path(__file__).resolve().parent.parent
API = "/services/data/v60.0"


# --------------------------------------------------------------------------------------------
# fixtures


class Receiver:
    """A tiny webhook receiver on a real socket; records every request, can fail on demand."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.received: list[dict[str, Any]] = []
        self.fail_next = 0
        self.app = Starlette(routes=[Route("/{name}", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> JSONResponse:
        body = await request.body()
        with self.lock:
            failing = self.fail_next > 0
            if failing:
                self.fail_next -= 1
            self.received.append(
                {
                    "name": request.path_params["name"],
                    "headers": dict(request.headers),
                    "body": body,
                    "answered": 500 if failing else 200,
                }
            )
            self.lock.notify_all()
        return JSONResponse({"ok": not failing}, status_code=500 if failing else 200)

    def reset(self) -> None:
        with self.lock:
            self.received.clear()
            self.fail_next = 0

    def wait_for(self, count: int, name: str | None = None, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                got = [r for r in self.received if name is None or r["name"] == name]
                if len(got) >= count:
                    return got
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} webhooks, got {len(got)}")
                self.lock.wait(remaining)


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    recv = Receiver()
    with ServerThread(recv.app, name="receiver") as server:
        yield recv, server.url


@pytest.fixture(scope="module")
def sandbox_all(receiver: tuple[Receiver, str]) -> Iterator[Sandbox]:
    _, url = receiver
    fast = {"webhook_backoff": (0.02, 0.05), "webhook_max_attempts": 4}
    sandbox = Sandbox(
        crm={"webhook_url": f"{url}/crm", **fast},
        erp={"webhook_url": f"{url}/erp", "rate_limit": None, **fast},
        billing={"webhook_url": f"{url}/billing", **fast},
    )
    with sandbox:
        yield sandbox


@pytest.fixture
def sb(sandbox_all: Sandbox, receiver: tuple[Receiver, str]) -> Iterator[Sandbox]:
    sandbox_all.reset()
    sandbox_all.erp.set_rate_limit(None)
    receiver[0].reset()
    yield sandbox_all
    for system in sandbox_all.systems.values():
        assert system.wait_webhooks(5)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(verify=TLS, timeout=5) as c:
        yield c


def order_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "external_id": "006Dn0000000001IAA",
        "customer": {
            "account_id": "001Dn0000000001IAA",
            "name": "Acme GmbH",
            "bill_to": {
                "street": "Invalidenstr. 1",
                "city": "Berlin",
                "postal_code": "10115",
                "country": "DE",
            },
        },
        "subsidiary": "EU",
        "currency": "EUR",
        "tax_nexus": "DE",
        "lines": [
            {"sku": "PLAT-ENT", "quantity": 1, "unit_price": 24000},
            {"sku": "SEAT-STD", "quantity": 25, "unit_price": 550.5},
        ],
        "term_months": 12,
        "start_date": "2025-02-01",
    }
    body.update(changes)
    return body


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


# --------------------------------------------------------------------------------------------
# ERP


def test_erp_creates_order_with_customer_and_invoice(sb: Sandbox, client: httpx.Client) -> None:
    erp = sb.urls["erp"]
    created = client.post(f"{erp}/sales-orders", json=order_body())
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["id"].startswith("SO-")
    assert order["external_id"] == "006Dn0000000001IAA"
    assert order["status"] == "open"
    assert [line["amount"] for line in order["lines"]] == [24000, 13762.5]
    assert order["total"] == order["amount_due"] == 37762.5
    assert (order["start_date"], order["end_date"]) == ("2025-02-01", "2026-01-31")

    fetched = client.get(f"{erp}/sales-orders/{order['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == order

    customer = client.get(f"{erp}/customers/{order['customer_id']}").json()
    assert customer["account_id"] == "001Dn0000000001IAA"
    assert customer["bill_to"]["country"] == "DE"
    (invoice_id,) = order["invoice_ids"]
    invoice = client.get(f"{erp}/invoices/{invoice_id}").json()
    assert (invoice["amount"], invoice["status"]) == (37762.5, "open")

    listed = client.get(f"{erp}/sales-orders", params={"external_id": "006Dn0000000001IAA"})
    assert [o["id"] for o in listed.json()["data"]] == [order["id"]]
    missing = client.get(f"{erp}/sales-orders/SO-9")
    assert (missing.status_code, error_code(missing)) == (404, "NOT_FOUND")

    duplicate = client.post(f"{erp}/sales-orders", json=order_body())
    assert (duplicate.status_code, error_code(duplicate)) == (409, "DUPLICATE_EXTERNAL_ID")
    assert duplicate.json()["error"]["existing_id"] == order["id"]
    assert duplicate.json()["error"]["existing_status"] == "open"
    assert order["ship_to"] == order["customer"]["bill_to"]  # no ship-to: the bill-to


def test_erp_keeps_a_ship_to_and_checks_its_tax_nexus_before_an_order(
    sb: Sandbox, client: httpx.Client
) -> None:
    erp = sb.urls["erp"]
    ship_to = {"street": "1 Rue de Rivoli", "city": "Paris", "postal_code": "75001",
               "country": "FR"}
    customer = {**order_body()["customer"], "ship_to": ship_to}
    created = client.post(f"{erp}/sales-orders", json=order_body(customer=customer,
                                                                  tax_nexus="FR"))
    assert created.status_code == 201, created.text
    assert created.json()["ship_to"] == ship_to
    ok = client.post(f"{erp}/tax-nexus/check", json={"subsidiary": "EU", "tax_nexus": "FR"})
    assert ok.status_code == 200 and ok.json()["registered"] is True
    refused = client.post(f"{erp}/tax-nexus/check", json={"subsidiary": "EU", "tax_nexus": "AT"})
    assert (refused.status_code, error_code(refused)) == (400, "UNKNOWN_TAX_NEXUS")
    assert refused.json()["error"]["tax_nexus"] == "AT"
    cancelled = client.post(f"{erp}/sales-orders/{created.json()['id']}/cancel", json={})
    assert cancelled.status_code == 200
    again = client.post(f"{erp}/sales-orders", json=order_body(customer=customer,
                                                                tax_nexus="FR"))
    assert (again.status_code, again.json()["error"]["existing_status"]) == (409, "cancelled")


def test_erp_idempotency_key_returns_first_result_and_writes_once(
    sb: Sandbox, client: httpx.Client
) -> None:
    erp = sb.urls["erp"]
    headers = {"Idempotency-Key": "run-1:erp"}
    first = client.post(f"{erp}/sales-orders", json=order_body(), headers=headers)
    second = client.post(f"{erp}/sales-orders", json=order_body(), headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers

    assert len(sb.erp.records("sales_orders")) == 1
    assert len(sb.erp.records("invoices")) == 1
    keys = client.get(f"{erp}/sandbox/idempotency").json()["keys"]
    assert keys["run-1:erp"]["writes"] == 1
    assert keys["run-1:erp"]["replays"] == 1
    assert sb.erp.idempotency_writes("run-1:erp") == 1

    reused = client.post(
        f"{erp}/sales-orders", json=order_body(external_id="other"), headers=headers
    )
    assert (reused.status_code, error_code(reused)) == (422, "IDEMPOTENCY_KEY_REUSED")
    assert len(sb.erp.records("sales_orders")) == 1


def test_erp_idempotency_under_concurrency(sb: Sandbox, client: httpx.Client) -> None:
    erp = sb.urls["erp"]

    def post(i: int) -> httpx.Response:
        key = "same" if i % 2 else f"distinct-{i}"
        body = order_body() if i % 2 else order_body(external_id=f"opp-{i}")
        return client.post(f"{erp}/sales-orders", json=body, headers={"Idempotency-Key": key})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(16)))
    assert {r.status_code for r in responses} == {201}
    same = {r.content for i, r in enumerate(responses) if i % 2}
    assert len(same) == 1
    orders = sb.erp.records("sales_orders")
    assert len(orders) == 9
    assert len({o["id"] for o in orders}) == 9


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"tax_nexus": "AT"}, "UNKNOWN_TAX_NEXUS"),
        ({"subsidiary": "US", "currency": "USD", "tax_nexus": "DE"}, "UNKNOWN_TAX_NEXUS"),
        ({"customer": {"account_id": "001X", "name": "No Address Ltd"}}, "MISSING_BILL_TO"),
        (
            {
                "customer": {
                    "account_id": "001X",
                    "name": "Half Address Ltd",
                    "bill_to": {"street": "1 Main St", "city": "Dublin", "country": "IE"},
                }
            },
            "MISSING_BILL_TO",
        ),
        ({"lines": [{"sku": "ADDON-AI", "quantity": 1, "unit_price": 100}]}, "UNKNOWN_ITEM"),
    ],
)
def test_erp_rejects_master_data_problems(
    sb: Sandbox, client: httpx.Client, change: dict[str, Any], code: str
) -> None:
    response = client.post(f"{sb.urls['erp']}/sales-orders", json=order_body(**change))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    assert [e["code"] for e in error["errors"]] == [code]
    assert sb.erp.records("sales_orders") == []
    assert sb.erp.records("customers") == []


def test_erp_fixed_master_data_lets_the_same_key_succeed(sb: Sandbox, client: httpx.Client) -> None:
    erp = sb.urls["erp"]
    body = order_body(tax_nexus="AT", lines=[{"sku": "ADDON-AI", "quantity": 2, "unit_price": 99}])
    headers = {"Idempotency-Key": "run-7:erp"}
    rejected = client.post(f"{erp}/sales-orders", json=body, headers=headers)
    assert rejected.status_code == 400
    assert [e["code"] for e in rejected.json()["error"]["errors"]] == [
        "UNKNOWN_TAX_NEXUS",
        "UNKNOWN_ITEM",
    ]

    fix = client.post(f"{erp}/sandbox/tax-nexus", json={"subsidiary": "EU", "nexus": "AT"})
    assert fix.status_code == 201
    still = client.post(f"{erp}/sales-orders", json=body, headers=headers)
    assert error_code(still) == "UNKNOWN_ITEM"
    fix = client.post(f"{erp}/sandbox/items", json={"sku": "ADDON-AI", "name": "AI add-on"})
    assert fix.status_code == 201

    accepted = client.post(f"{erp}/sales-orders", json=body, headers=headers)
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["lines"][0]["description"] == "AI add-on"
    assert sb.erp.idempotency_writes("run-7:erp") == 1
    master = client.get(f"{erp}/sandbox/master-data").json()
    assert "AT" in master["tax_nexus"]["EU"] and "ADDON-AI" in master["items"]

    client.post(f"{erp}/sandbox/reset")
    assert "AT" not in client.get(f"{erp}/sandbox/master-data").json()["tax_nexus"]["EU"]


def test_erp_rate_limit_answers_429_with_retry_after(sb: Sandbox, client: httpx.Client) -> None:
    erp = sb.urls["erp"]
    limit = client.put(f"{erp}/sandbox/rate-limit", json={"per_second": 0.5, "burst": 2})
    assert limit.json()["rate_limit"] == {"per_second": 0.5, "burst": 2}
    statuses = [client.get(f"{erp}/customers").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = client.get(f"{erp}/customers")
    assert error_code(limited) == "RATE_LIMITED"
    assert int(limited.headers["retry-after"]) >= 1
    assert 0 < int(limited.headers["retry-after-ms"]) <= 2000
    # the sandbox control endpoints are never limited
    assert client.get(f"{erp}/sandbox/state").status_code == 200
    assert sb.erp.snapshot()["counters"]["rate_limited"] == 2

    client.put(f"{erp}/sandbox/rate-limit", json={"per_second": None})
    assert client.get(f"{erp}/customers").status_code == 200


def test_erp_default_rate_limit_is_a_token_bucket() -> None:
    system = ErpSandbox()
    try:
        assert system.snapshot()["rate_limit"] == {"per_second": 20.0, "burst": 40}
        assert system.bucket is not None
        waits = [system.bucket.take() for _ in range(41)]
        assert waits[:40] == [0.0] * 40
        assert 0 <= waits[40] <= 0.05
        system.bucket.stamp -= 10  # ten seconds later the bucket is full again, not fuller
        assert [system.bucket.take() for _ in range(40)] == [0.0] * 40
    finally:
        system.close()


def test_erp_fault_injection_fails_n_times_then_recovers(sb: Sandbox, client: httpx.Client) -> None:
    erp = sb.urls["erp"]
    fault = client.post(
        f"{erp}/sandbox/faults", json={"status": 503, "count": 3, "path_prefix": "/sales-orders"}
    )
    assert fault.status_code == 201
    headers = {"Idempotency-Key": "run-2:erp"}
    statuses = []
    for _ in range(3):
        response = client.post(f"{erp}/sales-orders", json=order_body(), headers=headers)
        statuses.append((response.status_code, error_code(response)))
        # other paths are not affected
        assert client.get(f"{erp}/customers").status_code == 200
    assert statuses == [(503, "SERVICE_UNAVAILABLE")] * 3
    assert sb.erp.records("sales_orders") == []
    recovered = client.post(f"{erp}/sales-orders", json=order_body(), headers=headers)
    assert recovered.status_code == 201
    assert client.get(f"{erp}/sandbox/faults").json() == {"faults": []}
    assert len(sb.erp.records("sales_orders")) == 1


def test_erp_fault_after_write_is_a_lost_response(sb: Sandbox, client: httpx.Client) -> None:
    erp = sb.urls["erp"]
    client.post(f"{erp}/sandbox/faults", json={"status": 502, "phase": "after"})
    headers = {"Idempotency-Key": "run-3:erp"}
    lost = client.post(f"{erp}/sales-orders", json=order_body(), headers=headers)
    assert lost.status_code == 502
    assert len(sb.erp.records("sales_orders")) == 1  # the write happened
    retried = client.post(f"{erp}/sales-orders", json=order_body(), headers=headers)
    assert retried.status_code == 201
    assert retried.headers["idempotent-replayed"] == "true"
    assert len(sb.erp.records("sales_orders")) == 1


def test_erp_delay_fault_provokes_a_client_timeout(sb: Sandbox, client: httpx.Client) -> None:
    erp = sb.urls["erp"]
    client.post(f"{erp}/sandbox/faults", json={"delay": 0.4, "path_prefix": "/sales-orders"})
    headers = {"Idempotency-Key": "run-4:erp"}
    with pytest.raises(httpx.ReadTimeout):
        client.post(f"{erp}/sales-orders", json=order_body(), headers=headers, timeout=0.1)
    retried = client.post(f"{erp}/sales-orders", json=order_body(), headers=headers)
    assert retried.status_code == 201
    deadline = time.monotonic() + 10
    while len([r for r in sb.erp.requests if r["path"] == "/sales-orders"]) < 2:
        assert time.monotonic() < deadline  # both requests answered, the delayed one included
        time.sleep(0.02)
    assert sb.erp.snapshot()["idempotency"]["run-4:erp"]["attempts"] == 2
    assert len(sb.erp.records("sales_orders")) == 1  # still one order
    assert sb.erp.idempotency_writes("run-4:erp") == 1


def test_erp_rate_limit_storm(sb: Sandbox, client: httpx.Client) -> None:
    erp = sb.urls["erp"]
    client.post(
        f"{erp}/sandbox/faults",
        json={"mode": "rate_limit_storm", "count": 2, "retry_after": 2, "method": "POST"},
    )
    assert client.get(f"{erp}/customers").status_code == 200  # method filter
    for _ in range(2):
        stormy = client.post(f"{erp}/sales-orders", json=order_body())
        assert (stormy.status_code, error_code(stormy)) == (429, "RATE_LIMITED")
        assert stormy.headers["retry-after"] == "2"
    assert client.post(f"{erp}/sales-orders", json=order_body()).status_code == 201

    bad = client.post(f"{erp}/sandbox/faults", json={"mode": "meteor"})
    assert (bad.status_code, error_code(bad)) == (400, "INVALID_FAULT")


def test_erp_adjustment_payment_and_cancel(
    sb: Sandbox, client: httpx.Client, receiver: tuple[Receiver, str]
) -> None:
    erp = sb.urls["erp"]
    order = client.post(f"{erp}/sales-orders", json=order_body()).json()
    adjusted = client.post(
        f"{erp}/sales-orders/{order['id']}/adjustments",
        json={
            "external_id": "amend-1",
            "lines": [{"sku": "SEAT-STD", "quantity": 5, "unit_price": 550.5}],
            "effective_date": "2025-06-01",
        },
    )
    assert adjusted.status_code == 201, adjusted.text
    adjustment = adjusted.json()
    assert adjustment["amount"] == 2752.5
    assert adjustment["sales_order"]["lines"][1]["quantity"] == 30
    assert adjustment["sales_order"]["amount_due"] == 37762.5 + 2752.5
    too_far = client.post(
        f"{erp}/sales-orders/{order['id']}/adjustments",
        json={"lines": [{"sku": "SEAT-STD", "quantity": -31}]},
    )
    assert error_code(too_far) == "INVALID_QUANTITY"

    over = client.post(f"{erp}/payments", json={"sales_order_id": order["id"], "amount": 1e6})
    assert error_code(over) == "AMOUNT_EXCEEDS_DUE"
    paid = client.post(
        f"{erp}/payments",
        json={"sales_order_id": order["id"], "amount": 40515, "external_id": "wire-1"},
    )
    assert paid.status_code == 201, paid.text
    assert [a["amount"] for a in paid.json()["applied"]] == [37762.5, 2752.5]
    now = client.get(f"{erp}/sales-orders/{order['id']}").json()
    assert (now["amount_paid"], now["amount_due"]) == (40515, 0)
    invoices = client.get(f"{erp}/invoices", params={"sales_order_id": order["id"]}).json()
    assert {i["status"] for i in invoices["data"]} == {"paid"}

    refused = client.post(f"{erp}/sales-orders/{order['id']}/cancel")
    assert (refused.status_code, error_code(refused)) == (409, "ORDER_HAS_PAYMENTS")

    other = client.post(f"{erp}/sales-orders", json=order_body(external_id="opp-2")).json()
    cancelled = client.post(f"{erp}/sales-orders/{other['id']}/cancel", json={"reason": "x"})
    assert cancelled.json()["status"] == "cancelled"
    again = client.post(f"{erp}/sales-orders/{other['id']}/cancel")
    assert (again.status_code, again.json()["status"]) == (200, "cancelled")
    voided = client.get(f"{erp}/invoices/{other['invoice_ids'][0]}").json()
    assert voided["status"] == "voided"

    # the ERP reports the payment with a Standard Webhooks signed event
    recv, _ = receiver
    (hook,) = recv.wait_for(1, "erp")
    event = standardwebhooks.Webhook(ERP_SECRET).verify(hook["body"], hook["headers"])
    assert event["type"] == "payment.applied"
    assert event["data"]["sales_order"]["amount_due"] == 0


# --------------------------------------------------------------------------------------------
# CRM


def create_account_and_opportunity(client: httpx.Client, crm: str) -> tuple[str, str]:
    account = client.post(
        f"{crm}{API}/sobjects/Account",
        json={
            "Name": "Acme GmbH",
            "BillingStreet": "Invalidenstr. 1",
            "BillingCity": "Berlin",
            "BillingPostalCode": "10115",
            "BillingCountry": "DE",
            "Status__c": "Prospect",
        },
    )
    assert account.status_code == 201, account.text
    assert account.json()["success"] is True
    account_id = account.json()["id"]
    opportunity = client.post(
        f"{crm}{API}/sobjects/Opportunity",
        json={
            "AccountId": account_id,
            "Name": "Acme - Enterprise",
            "StageName": "Negotiation/Review",
            "CloseDate": "2025-01-31",
            "CurrencyIsoCode": "EUR",
            "Term__c": 1,
            "Region__c": "EMEA",
            "Type": "New Business",
            "OpportunityLineItems": [
                {"ProductCode": "PLAT-ENT", "Quantity": 1, "UnitPrice": 24000},
                {"ProductCode": "SEAT-STD", "Quantity": 25, "UnitPrice": 550.5},
            ],
        },
    )
    assert opportunity.status_code == 201, opportunity.text
    return account_id, opportunity.json()["id"]


def test_crm_records_query_and_account_patch(sb: Sandbox, client: httpx.Client) -> None:
    crm = sb.urls["crm"]
    account_id, opp_id = create_account_and_opportunity(client, crm)
    assert account_id.startswith("001") and len(account_id) == 18
    assert opp_id.startswith("006") and len(opp_id) == 18

    opp = client.get(f"{crm}{API}/sobjects/Opportunity/{opp_id}").json()
    assert opp["attributes"]["type"] == "Opportunity"
    assert opp["Amount"] == 37762.5
    assert [i["TotalPrice"] for i in opp["OpportunityLineItems"]] == [24000, 13762.5]

    patched = client.patch(
        f"{crm}{API}/sobjects/Account/{account_id}",
        json={"Status__c": "Customer", "ERP_Customer_Id__c": "CUS-1001"},
    )
    assert (patched.status_code, patched.content) == (204, b"")
    account = client.get(f"{crm}{API}/sobjects/Account/{account_id}").json()
    assert (account["Status__c"], account["ERP_Customer_Id__c"]) == ("Customer", "CUS-1001")

    query = "SELECT Id, Status__c FROM Account WHERE BillingCountry = 'DE' AND Name != 'x'"
    result = client.get(f"{crm}{API}/query", params={"q": query}).json()
    assert result["totalSize"] == 1
    assert result["records"][0]["Status__c"] == "Customer"
    query = f"SELECT Name, Account.Name FROM Opportunity WHERE AccountId = '{account_id}'"
    (record,) = client.get(f"{crm}{API}/query", params={"q": query}).json()["records"]
    assert record["Account"]["Name"] == "Acme GmbH"

    helpers = client.get(f"{crm}/sandbox/opportunities", params={"AccountId": account_id})
    assert [r["Id"] for r in helpers.json()["records"]] == [opp_id]

    for method, path, body, status, code in [
        ("PATCH", f"/sobjects/Account/{account_id}", {"Bogus": 1}, 400, "INVALID_FIELD"),
        ("PATCH", f"/sobjects/Account/{account_id}", {"Id": "x"}, 400,
         "INVALID_FIELD_FOR_INSERT_UPDATE"),
        ("POST", "/sobjects/Opportunity", {"Name": "x"}, 400, "REQUIRED_FIELD_MISSING"),
        ("PATCH", f"/sobjects/Opportunity/{opp_id}", {"Type": "Upsell"}, 400,
         "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ("PATCH", f"/sobjects/Opportunity/{opp_id}", {"AccountId": "001nope"}, 400,
         "INVALID_CROSS_REFERENCE_KEY"),
        ("GET", "/sobjects/Account/001Dn0000000999AAA", None, 404, "NOT_FOUND"),
        ("GET", "/query?q=DELETE FROM Account", None, 400, "MALFORMED_QUERY"),
    ]:  # fmt: skip
        response = client.request(method, f"{crm}{API}{path}", json=body)
        assert (response.status_code, error_code(response)) == (status, code), path


def test_crm_close_sends_standard_webhook(
    sb: Sandbox, client: httpx.Client, receiver: tuple[Receiver, str]
) -> None:
    recv, _ = receiver
    crm = sb.urls["crm"]
    account_id, opp_id = create_account_and_opportunity(client, crm)
    closed = client.post(f"{crm}/sandbox/opportunities/{opp_id}/close")
    assert closed.status_code == 200
    assert closed.json()["opportunity"]["StageName"] == "Closed Won"

    (hook,) = recv.wait_for(1, "crm")
    headers = hook["headers"]
    assert headers["webhook-id"] == closed.json()["webhook"]["webhook_id"]
    payload = standardwebhooks.Webhook(CRM_SECRET).verify(hook["body"], headers)
    assert payload["event"] == "opportunity.closed_won"
    data = payload["data"]
    assert (data["Id"], data["AccountId"], data["StageName"]) == (opp_id, account_id, "Closed Won")
    assert data["Account"]["Id"] == account_id
    assert data["Account"]["BillingCountry"] == "DE"
    assert data["OpportunityLineItems"][1] | {"attributes": None, "Id": None} == {
        "attributes": None,
        "Id": None,
        "ProductCode": "SEAT-STD",
        "Name": "SEAT-STD",
        "Quantity": 25,
        "UnitPrice": 550.5,
        "TotalPrice": 13762.5,
        "Description": None,
    }
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(CRM_SECRET).verify(hook["body"] + b" ", headers)

    assert sb.crm.wait_webhooks(5)
    (delivery,) = client.get(f"{crm}/sandbox/webhooks").json()["deliveries"]
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [200]

    # closing again is not a new event; a PATCH to another opportunity is
    again = client.post(f"{crm}/sandbox/opportunities/{opp_id}/close")
    assert again.json()["webhook"] is None
    _, other = create_account_and_opportunity(client, crm)
    patched = client.patch(
        f"{crm}{API}/sobjects/Opportunity/{other}", json={"StageName": "Closed Won"}
    )
    assert patched.status_code == 204
    hooks = recv.wait_for(2, "crm")
    assert json.loads(hooks[1]["body"])["data"]["Id"] == other


def test_crm_webhook_retries_and_redelivery(
    sb: Sandbox, client: httpx.Client, receiver: tuple[Receiver, str]
) -> None:
    recv, _ = receiver
    recv.fail_next = 2
    crm = sb.urls["crm"]
    _, opp_id = create_account_and_opportunity(client, crm)
    client.post(f"{crm}/sandbox/opportunities/{opp_id}/close")
    hooks = recv.wait_for(3, "crm")
    assert [h["answered"] for h in hooks] == [500, 500, 200]
    assert len({h["headers"]["webhook-id"] for h in hooks}) == 1
    for hook in hooks:  # every attempt is signed afresh
        standardwebhooks.Webhook(CRM_SECRET).verify(hook["body"], hook["headers"])
    assert sb.crm.wait_webhooks(5)
    (delivery,) = sb.crm.snapshot()["webhooks"]["deliveries"]
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert delivery["status"] == "delivered"

    again = client.post(f"{crm}/sandbox/webhooks/{delivery['id']}/redeliver")
    assert again.status_code == 202
    hooks = recv.wait_for(4, "crm")
    assert hooks[3]["headers"]["webhook-id"] == hooks[0]["headers"]["webhook-id"]
    assert hooks[3]["body"] == hooks[0]["body"]


def test_crm_webhook_gives_up_after_max_attempts(
    sb: Sandbox, client: httpx.Client, receiver: tuple[Receiver, str]
) -> None:
    recv, url = receiver
    recv.fail_next = 10
    crm = sb.urls["crm"]
    _, opp_id = create_account_and_opportunity(client, crm)
    client.post(f"{crm}/sandbox/opportunities/{opp_id}/close")
    assert sb.crm.wait_webhooks(5)
    (delivery,) = sb.crm.snapshot()["webhooks"]["deliveries"]
    assert delivery["status"] == "failed"
    assert len(delivery["attempts"]) == 4


class FailsA1Once(Receiver):
    """Answers 500 to the first delivery of webhook `a1`, whichever delivery arrives first."""

    failed = False

    async def hook(self, request: Request) -> JSONResponse:
        if not self.failed and json.loads(await request.body())["n"] == "a1":
            self.failed, self.fail_next = True, 1  # no await until Receiver.hook takes it
        return await super().hook(request)


def test_a_record_s_webhooks_keep_their_order_while_other_records_pass_a_retrying_one() -> None:
    """A delivery backing off holds up only its own record's lane: the next webhook of that
    record waits for it, another record's webhook is delivered meanwhile."""
    keys = ["acct-a", *(f"acct-{i}" for i in range(50))]
    lane = {k: zlib.crc32(k.encode()) % LANES for k in keys}
    other = next(k for k in keys if lane[k] != lane["acct-a"])
    recv = FailsA1Once()
    with ServerThread(recv.app, name="lanes") as server:
        sender = WebhookSender(scheme="stripe", secret="whsec_x", url=f"{server.url}/lanes",
                               backoff=(0.4,), max_attempts=3)
        try:
            sender.send("e", {"n": "a1"}, "w1", key="acct-a")
            sender.send("e", {"n": "a2"}, "w2", key="acct-a")
            sender.send("e", {"n": "b1"}, "w3", key=other)
            assert sender.wait_idle(5)
        finally:
            sender.close()
        got = [(json.loads(h["body"])["n"], h["answered"]) for h in recv.wait_for(4, "lanes")]
    assert sorted(got) == [("a1", 200), ("a1", 500), ("a2", 200), ("b1", 200)]
    assert got.index(("a1", 500)) < got.index(("a1", 200))
    assert got.index(("b1", 200)) < got.index(("a1", 200)) < got.index(("a2", 200))


# --------------------------------------------------------------------------------------------
# billing


def test_billing_webhooks_verify_with_stripe(
    sb: Sandbox, client: httpx.Client, receiver: tuple[Receiver, str]
) -> None:
    recv, _ = receiver
    billing = sb.urls["billing"]
    customer = client.post(
        f"{billing}/v1/customers",
        json={"name": "Acme GmbH", "metadata": {"account_id": "001A"}},
        headers={"Idempotency-Key": "cus-1"},
    ).json()
    assert customer["id"].startswith("cus_")
    repeat = client.post(
        f"{billing}/v1/customers",
        json={"name": "Acme GmbH", "metadata": {"account_id": "001A"}},
        headers={"Idempotency-Key": "cus-1"},
    )
    assert repeat.json()["id"] == customer["id"]
    assert len(sb.billing.records("customers")) == 1

    created = client.post(
        f"{billing}/v1/subscriptions",
        json={
            "customer": customer["id"],
            "items": [{"price": "price_seat_std_yearly", "quantity": 10}],
            "metadata": {"account_id": "001A", "erp_order_id": "SO-1001"},
        },
    )
    assert created.status_code == 200, created.text
    sub = created.json()
    assert sub["id"].startswith("sub_") and sub["status"] == "active"
    assert sub["current_period_end"] > sub["current_period_start"]
    invoice_id = sub["latest_invoice"]
    invoice = client.get(f"{billing}/v1/invoices/{invoice_id}").json()
    assert (invoice["amount_due"], invoice["currency"], invoice["status"]) == (
        600000,
        "usd",
        "open",
    )

    updated = client.post(
        f"{billing}/sandbox/subscriptions/{sub['id']}/update", json={"quantity": 25}
    )
    assert updated.json()["items"]["data"][0]["quantity"] == 25
    assert client.post(f"{billing}/sandbox/invoices/{invoice_id}/fail").status_code == 200
    paid = client.post(f"{billing}/sandbox/invoices/{invoice_id}/pay")
    assert paid.json()["status"] == "paid"

    hooks = recv.wait_for(6, "billing")
    events = [
        stripe.Webhook.construct_event(h["body"], h["headers"]["stripe-signature"], BILLING_SECRET)
        for h in hooks
    ]
    assert [e["type"] for e in events] == [
        "customer.subscription.created",
        "customer.subscription.updated",
        "invoice.payment_failed",
        "customer.subscription.updated",
        "invoice.paid",
        "customer.subscription.updated",
    ]
    for event in events:
        assert event["object"] == "event" and event["id"].startswith("evt_")
    upgrade = events[1]["data"]
    assert upgrade["object"]["items"]["data"][0]["quantity"] == 25
    assert upgrade["previous_attributes"]["items"]["data"][0]["quantity"] == 10
    failed = events[2]["data"]["object"]
    assert (failed["id"], failed["attempt_count"], failed["status"]) == (invoice_id, 1, "open")
    assert failed["subscription_details"]["metadata"]["account_id"] == "001A"
    assert events[3]["data"]["object"]["status"] == "past_due"
    paid_invoice = events[4]["data"]["object"]
    assert (paid_invoice["amount_paid"], paid_invoice["status"]) == (600000, "paid")
    assert events[5]["data"]["object"]["status"] == "active"

    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(
            hooks[0]["body"], hooks[0]["headers"]["stripe-signature"], "whsec_wrong"
        )

    missing = client.post(
        f"{billing}/v1/subscriptions",
        json={"customer": customer["id"], "items": [{"price": "price_nope"}]},
    )
    assert missing.status_code == 404
    assert missing.json()["error"] | {"message": None} == {
        "code": "resource_missing",
        "type": "invalid_request_error",
        "param": "items[0][price]",
        "message": None,
    }


def test_billing_cancel_and_price_data(sb: Sandbox, client: httpx.Client) -> None:
    billing = sb.urls["billing"]
    customer = client.post(f"{billing}/v1/customers", json={"name": "Beta"}).json()
    sub = client.post(
        f"{billing}/v1/subscriptions",
        json={
            "customer": customer["id"],
            "currency": "eur",
            "items": [
                {
                    "price_data": {
                        "currency": "eur",
                        "unit_amount": 55050,
                        "product": "prod_seat_std",
                        "recurring": {"interval": "month"},
                    },
                    "quantity": 3,
                }
            ],
        },
    ).json()
    invoice = client.get(f"{billing}/v1/invoices", params={"subscription": sub["id"]}).json()
    assert invoice["object"] == "list"
    assert invoice["data"][0]["amount_due"] == 165150
    cancelled = client.delete(f"{billing}/v1/subscriptions/{sub['id']}")
    assert cancelled.json()["status"] == "canceled"
    assert client.get(f"{billing}/v1/invoices/{sub['latest_invoice']}").json()["status"] == "void"
    types = [e["type"] for e in sb.billing.records("events")]
    assert types == ["customer.subscription.created", "customer.subscription.deleted"]


# --------------------------------------------------------------------------------------------
# support


def test_support_entitlements(sb: Sandbox, client: httpx.Client) -> None:
    support = sb.urls["support"]
    body = {"plan": "enterprise", "seats": 25, "status": "active"}
    headers = {"Idempotency-Key": "ent-1"}
    created = client.put(f"{support}/entitlements/001A", json=body, headers=headers)
    assert created.status_code == 201
    replay = client.put(f"{support}/entitlements/001A", json=body, headers=headers)
    assert (replay.status_code, replay.content) == (201, created.content)
    same = client.put(f"{support}/entitlements/001A", json=body)
    assert (same.status_code, same.json()["version"]) == (200, 1)

    suspended = client.patch(f"{support}/entitlements/001A", json={"status": "suspended"})
    assert (suspended.json()["status"], suspended.json()["version"]) == ("suspended", 2)
    got = client.get(f"{support}/entitlements/001A").json()
    assert got["seats"] == 25 and got["history"][-1]["status"] == "suspended"

    posted = client.post(
        f"{support}/entitlements", json={"account_id": "001B", "plan": "pro", "seats": 5}
    )
    assert (posted.status_code, posted.json()["status"]) == (201, "active")
    listed = client.get(f"{support}/entitlements", params={"status": "active"}).json()
    assert [e["account_id"] for e in listed["data"]] == ["001B"]

    for method, path, payload, status, code in [
        ("GET", "/entitlements/001Z", None, 404, "NOT_FOUND"),
        ("PATCH", "/entitlements/001Z", {"seats": 1}, 404, "NOT_FOUND"),
        ("PATCH", "/entitlements/001A", {"status": "gone"}, 400, "INVALID_STATUS"),
        ("PUT", "/entitlements/001A", {"plan": "pro", "seats": -1}, 400, "INVALID_SEATS"),
        ("PUT", "/entitlements/001A", {"seats": 1}, 400, "INVALID_REQUEST"),
    ]:
        response = client.request(method, f"{support}{path}", json=payload)
        assert (response.status_code, error_code(response)) == (status, code)


# --------------------------------------------------------------------------------------------
# chat


def test_chat_records_messages_per_channel_and_never_deduplicates(
    sb: Sandbox, client: httpx.Client
) -> None:
    chat = sb.urls["chat"]
    first = client.post(f"{chat}/hooks/finance", json={"text": "2 orders blocked"})
    assert first.status_code == 200 and first.json()["ok"] is True
    client.post(f"{chat}/hooks/finance", json={"text": "2 orders blocked"})  # shown twice
    client.post(f"{chat}/hooks/revops", json={"text": "cycle time", "username": "syncline"})
    finance = client.get(f"{chat}/channels/finance/messages").json()
    assert [m["text"] for m in finance["messages"]] == ["2 orders blocked"] * 2
    everything = client.get(f"{chat}/messages").json()
    assert [m["channel"] for m in everything["messages"]] == ["finance", "finance", "revops"]
    assert sb.chat.messages("revops")[0]["username"] == "syncline"
    for payload, code in [({}, "no_text"), ({"text": "  "}, "no_text"),
                          ({"text": "x" * 40_001}, "msg_too_long")]:
        refused = client.post(f"{chat}/hooks/finance", json=payload)
        assert (refused.status_code, error_code(refused)) == (400, code)
    assert len(sb.chat.messages("finance")) == 2


# --------------------------------------------------------------------------------------------
# inspection, lifecycle


def test_state_inspection_and_reset(sb: Sandbox, client: httpx.Client) -> None:
    erp, crm = sb.urls["erp"], sb.urls["crm"]
    client.post(
        f"{erp}/sales-orders",
        json=order_body(),
        headers={"Idempotency-Key": "k", "X-Correlation-ID": "corr-1"},
    )
    create_account_and_opportunity(client, crm)
    state = client.get(f"{erp}/sandbox/state").json()
    assert state["system"] == "erp"
    assert [o["external_id"] for o in state["data"]["sales_orders"]] == ["006Dn0000000001IAA"]
    assert len(state["data"]["customers"]) == len(state["data"]["invoices"]) == 1
    assert state["idempotency"]["k"]["writes"] == 1
    assert "SEAT-STD" in state["master_data"]["items"]
    assert state["counters"] == {"requests": 1, "writes": 1}
    (logged,) = client.get(f"{erp}/sandbox/requests").json()["requests"]
    assert (logged["status"], logged["correlation_id"]) == (201, "corr-1")

    crm_state = client.get(f"{crm}/sandbox/state").json()
    assert len(crm_state["data"]["accounts"]) == len(crm_state["data"]["opportunities"]) == 1
    assert crm_state["webhooks"]["deliveries"] == []

    assert client.post(f"{erp}/sandbox/reset").status_code == 200
    state = client.get(f"{erp}/sandbox/state").json()
    assert all(records == [] for records in state["data"].values())
    assert state["idempotency"] == {} and state["counters"] == {}
    # ids start again after a reset, so runs are reproducible
    again = client.post(f"{erp}/sales-orders", json=order_body()).json()
    assert again["id"] == "SO-1001"


def test_sandbox_urls_and_unknown_routes(sb: Sandbox, client: httpx.Client) -> None:
    assert set(sb.urls) == {"crm", "erp", "billing", "support", "chat", "erp-cloud"}
    for name, url in sb.urls.items():
        assert url.startswith("http://127.0.0.1:")
        response = client.get(f"{url}/no/such/path")
        if name == "erp-cloud":  # its own (JSON:API) error format
            assert (response.status_code, response.json()["errors"][0]["code"]) == (
                404, "not_found")
            continue
        assert (response.status_code, error_code(response)) == (404, "NOT_FOUND")
    wrong_method = client.delete(f"{sb.urls['erp']}/sales-orders")
    assert (wrong_method.status_code, error_code(wrong_method)) == (405, "METHOD_NOT_ALLOWED")
    bad_json = client.post(
        f"{sb.urls['erp']}/sales-orders",
        content=b"{nope",
        headers={"content-type": "application/json"},
    )
    assert (bad_json.status_code, error_code(bad_json)) == (400, "INVALID_JSON")


def test_auth_token_and_server_thread_lifecycle(client: httpx.Client) -> None:
    system = ErpSandbox(auth_token="s3cret", rate_limit=None)
    server = system.serve()
    try:
        denied = client.get(f"{server.url}/customers")
        assert (denied.status_code, error_code(denied)) == (401, "UNAUTHORIZED")
        ok = client.get(f"{server.url}/customers", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert client.get(f"{server.url}/sandbox/state").status_code == 200
    finally:
        server.stop()
    with pytest.raises(httpx.ConnectError):
        client.get(f"{server.url}/customers")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(client: httpx.Client, url: str, process: subprocess.Popen) -> dict[str, Any]:
    """`GET url/sandbox/state` once the process serves it."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return client.get(f"{url}/sandbox/state", timeout=1).json()
        except httpx.TransportError:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, f"{url} did not start"
            time.sleep(0.05)


@pytest.mark.parametrize("system", ["crm", "erp", "billing", "support", "chat"])
def test_standalone_module_runs(client: httpx.Client, system: str) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", f"engine.sandbox.{system}", "--port", str(port),
         "--rate-limit", "5:5"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        state = wait_until_up(client, f"http://127.0.0.1:{port}", process)
        assert state["system"] == system
        assert state["rate_limit"] == {"per_second": 5.0, "burst": 5}
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert b"Traceback" not in stderr, stderr.decode()


def test_python_m_examples_sandbox_runs_them_all(client: httpx.Client) -> None:
    ports = {name: free_port()
             for name in ("crm", "erp", "billing", "support", "chat", "erp-cloud")}
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.sandbox",
         *[arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        printed = ""
        while not printed.endswith("}\n"):  # it prints its URLs as JSON once all serve
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else ""
            printed += line
        urls = json.loads(printed)
        assert urls == {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for name, url in urls.items():
            assert client.get(f"{url}/sandbox/state").json()["system"] == name
        account = client.post(f"{urls['crm']}{API}/sobjects/Account", json={"Name": "Acme"})
        assert account.status_code == 201
    finally:
        process.terminate()  # SIGTERM stops them all cleanly
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr


SAMPLE_WRITES = {
    "crm": ("POST", f"{API}/sobjects/Account", {"Name": "Acme"}, "accounts"),
    "erp": ("POST", "/sales-orders", order_body(), "sales_orders"),
    "billing": ("POST", "/v1/customers", {"name": "Acme"}, "customers"),
    "support": ("PUT", "/entitlements/001A", {"plan": "pro", "seats": 1}, "entitlements"),
    "chat": ("POST", "/hooks/finance", {"text": "hello"}, "messages"),
}


@pytest.mark.parametrize("system", sorted(SAMPLE_WRITES))
def test_every_system_injects_failures_and_exposes_its_state(
    sb: Sandbox, client: httpx.Client, system: str
) -> None:
    url = sb.urls[system]
    method, path, body, collection = SAMPLE_WRITES[system]
    client.post(f"{url}/sandbox/faults", json={"status": 500, "count": 1})
    failed = client.request(method, f"{url}{path}", json=body)
    assert (failed.status_code, error_code(failed)) == (500, "INJECTED_FAULT")
    client.post(
        f"{url}/sandbox/faults", json={"mode": "rate_limit_storm", "count": 1, "retry_after": 3}
    )
    limited = client.request(method, f"{url}{path}", json=body)
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "3")
    client.post(f"{url}/sandbox/faults", json={"status": 502, "count": 1, "phase": "after"})
    lost = client.request(method, f"{url}{path}", json=body)  # written, then the answer is lost
    assert lost.status_code == 502

    state = client.get(f"{url}/sandbox/state").json()
    assert state["system"] == system
    assert [(f["status"], f["remaining"]) for f in state["faults"]] == [(502, 0)]  # spent
    assert list(state["fault_hits"].values()) == [1, 1, 1]  # what each fault did, once spent
    assert len(state["data"][collection]) == 1
    logged = client.get(f"{url}/sandbox/requests").json()["requests"]
    assert [r["status"] for r in logged] == [500, 429, 502]
