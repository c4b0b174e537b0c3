"""The ERP migration against the real sandbox ERPs: the cloud ERP sandbox's own API (OAuth2 client
credentials with expiring tokens, camelCase resources per legal entity, JSON:API errors, rate
limits and faults), operation adapters (`request`/`response` Mappings) that let one routed or
shadowed call speak both ERPs, and a tax-rounding difference the shadow reports as a mismatch."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from projectkit import write_files
from runtime_kit import detail_json, flow, meta, running

from engine.compiler import compile_project
from engine.errors import DefinitionErrors
from engine.sandbox import ErpCloudSandbox, ErpSandbox
from engine.sandbox.erp_cloud import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from engine.sandbox.serving import ServerThread
from engine.tls import tls_context

TLS = tls_context()  # one CA load for the module, not one per client (50-80 ms each)


ROOT = Path(__file__).resolve().parents[1]
CREDENTIALS = (DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
GRANT = {"grant_type": "client_credentials", "scope": "orders"}


def _order(entity: str = "EU", ref: str = "006EU1", **extra: Any) -> dict[str, Any]:
    """A cloud ERP order request."""
    country, currency = ("DE", "EUR") if entity == "EU" else ("US", "USD")
    return {"entity": entity, "externalReference": ref, "currencyCode": currency,
            "taxCountry": country, "orderDate": "2025-02-15", "servicePeriod": {"months": 12},
            "customer": {"externalReference": "001" + ref[3:], "legalName": "Globex",
                         "billingAddress": {"line1": "Dam 1", "city": "Berlin",
                                            "postcode": "10115", "countryCode": country}},
            "orderLines": [{"itemNumber": "SEAT-STD", "quantity": 25, "unitPrice": 550.5}],
            **extra}


@pytest.fixture
def cloud() -> Iterator[tuple[ErpCloudSandbox, ServerThread]]:
    system = ErpCloudSandbox(rate_limit=None)
    server = system.serve()
    try:
        yield system, server
    finally:
        server.stop()


def _token(client: httpx.Client) -> dict[str, str]:
    answer = client.post("/oauth/token", data=GRANT, auth=CREDENTIALS)
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "Bearer" and answer.json()["expires_in"] > 0
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def test_the_token_endpoint_follows_the_client_credentials_grant(
        cloud: tuple[ErpCloudSandbox, ServerThread]) -> None:
    system, server = cloud
    with httpx.Client(verify=TLS, base_url=server.url) as client:
        wrong = client.post("/oauth/token", data=GRANT, auth=(DEFAULT_CLIENT_ID, "nope"))
        assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")
        grant = client.post("/oauth/token", data={"grant_type": "password"}, auth=CREDENTIALS)
        assert (grant.status_code, grant.json()["error"]) == (400, "unsupported_grant_type")
        in_form = client.post("/oauth/token", data={**GRANT, "client_id": DEFAULT_CLIENT_ID,
                                                    "client_secret": DEFAULT_CLIENT_SECRET})
        assert in_form.status_code == 200
        anonymous = client.get("/api/v2/orders")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert anonymous.json()["errors"][0]["code"] == "invalid_token"
        headers = _token(client)
        assert client.get("/api/v2/orders", headers=headers).status_code == 200
        assert client.post("/sandbox/tokens/expire").json() == {"expired": 2}
        assert client.get("/api/v2/orders", headers=headers).status_code == 401  # refresh now
    assert system.oauth.describe()["issued"] == 2


def test_tokens_expire_after_their_lifetime() -> None:
    now = [0.0]
    system = ErpCloudSandbox(rate_limit=None, token_ttl=60)
    system.oauth.clock = lambda: now[0]
    with system.serve() as server, httpx.Client(verify=TLS, base_url=server.url) as client:
        headers = _token(client)
        now[0] = 59.0
        assert client.get("/api/v2/orders", headers=headers).status_code == 200
        now[0] = 60.5
        assert client.get("/api/v2/orders", headers=headers).status_code == 401


def test_orders_per_entity_in_its_own_shape_idempotent_by_reference(
        cloud: tuple[ErpCloudSandbox, ServerThread]) -> None:
    system, server = cloud
    with httpx.Client(verify=TLS, base_url=server.url) as client:
        headers = _token(client)
        first = client.post("/api/v2/orders", json=_order(), headers=headers)
        assert first.status_code == 201
        order = first.json()
        assert (order["id"], order["customer"]["id"], order["state"]) == (
            "ORD-EU-00001", "CUST-EU-00001", "Released")
        assert order["totals"] == {"net": 13762.5, "tax": 2614.88, "gross": 16377.38}
        assert order["servicePeriod"] == {"start": "2025-02-15", "end": "2026-02-14",
                                          "months": 12}
        again = client.post("/api/v2/orders", json=_order(), headers=headers)
        assert (again.status_code, again.json()["id"]) == (200, "ORD-EU-00001")
        us = client.post("/api/v2/orders", json=_order("US", "006US1"), headers=headers)
        assert us.json()["id"] == "ORD-US-00001"  # its own numbering per entity
        listed = client.get("/api/v2/orders", params={"entity": "EU"}, headers=headers).json()
        assert [o["id"] for o in listed["items"]] == ["ORD-EU-00001"]
        cancel = client.patch("/api/v2/orders/ORD-EU-00001", headers=headers,
                              json={"state": "Cancelled", "cancellationReason": "test"})
        assert (cancel.json()["state"], cancel.json()["balanceDue"]) == ("Cancelled", 0)


def test_rejections_list_every_problem_in_its_own_error_format(
        cloud: tuple[ErpCloudSandbox, ServerThread]) -> None:
    system, server = cloud
    with httpx.Client(verify=TLS, base_url=server.url) as client:
        headers = _token(client)
        bad = _order(taxCountry="AT", currencyCode="USD",
                     orderLines=[{"itemNumber": "ADDON-AI", "quantity": 1, "unitPrice": 1}])
        answer = client.post("/api/v2/orders", json=bad, headers=headers)
        assert answer.status_code == 422
        errors = answer.json()["errors"]
        assert [e["code"] for e in errors] == [
            "currency_not_allowed", "tax_registration_missing", "item_not_found"]
        assert errors[1]["meta"] == {"entity": "EU", "countryCode": "AT"}
        assert errors[2]["source"] == {"pointer": "/orderLines/0/itemNumber"}
        # the operator fixes the master data; the same request then goes through
        client.post("/sandbox/tax-registrations", json={"entity": "EU", "countryCode": "AT"})
        client.post("/sandbox/items", json={"itemNumber": "ADDON-AI", "unitPrice": 1800})
        fixed = client.post("/api/v2/orders", json={**bad, "currencyCode": "EUR"},
                            headers=headers)
        assert fixed.status_code == 201, fixed.text
        # failures on demand and rate limits, in the same error format
        client.post("/sandbox/faults", json={"status": 503, "path_prefix": "/api/v2/orders"})
        down = client.get("/api/v2/orders", headers=headers)
        assert (down.status_code, down.json()["errors"][0]["code"]) == (
            503, "service_unavailable")
        system.set_rate_limit(1, 1)
        codes = [client.get("/api/v2/items", headers=headers).status_code for _ in range(3)]
        assert 429 in codes


def test_the_two_erps_round_tax_differently_by_a_cent() -> None:
    """Old ERP: each line's tax rounded; cloud ERP: the total's tax rounded once."""
    lines = [{"sku": "SEAT-STD", "quantity": 37, "unit_price": 600},
             {"sku": "SUPPORT-PREM", "quantity": 1, "unit_price": 5000},
             {"sku": "SVC-ONBOARD", "quantity": 1, "unit_price": 3000}]
    old, new = ErpSandbox(rate_limit=None), ErpCloudSandbox(rate_limit=None, clients={})
    with old.serve() as a, new.serve() as b:
        sold = httpx.post(a.url + "/sales-orders", json={
            "external_id": "006US9", "subsidiary": "US", "currency": "USD", "tax_nexus": "US",
            "customer": {"account_id": "001US9", "name": "Initech", "bill_to": {
                "street": "1 Main", "city": "Austin", "postal_code": "78701", "country": "US"}},
            "lines": lines}, verify=TLS).json()
        booked = httpx.post(b.url + "/api/v2/orders", json=_order("US", "006US9", orderLines=[
            {"itemNumber": li["sku"], "quantity": li["quantity"], "unitPrice": li["unit_price"]}
            for li in lines]), verify=TLS).json()
    assert sold["total"] == booked["totals"]["net"] == 30200
    assert (sold["tax_amount"], booked["totals"]["tax"]) == (2132.89, 2132.88)


# -- the engine: routing and shadowing between the two ERPs, through adapters -------------------

SYSTEMS = """\
apiVersion: syncline/v1
kind: System
metadata: {name: erp, owner: qa}
spec:
  baseUrl: ${env.ERP_URL}
  auth: {type: bearer, token: "${secret.ERP_TOKEN}"}
  idempotencyHeader: Idempotency-Key
  webhooks: {scheme: none}
  operations:
    create-sales-order: {method: POST, path: /sales-orders}
---
apiVersion: syncline/v1
kind: System
metadata: {name: erp-cloud, owner: qa}
spec:
  baseUrl: ${env.ERP_CLOUD_URL}
  auth:
    type: oauth2
    tokenUrl: "${env.ERP_CLOUD_URL}/oauth/token"
    clientId: "${secret.ERP_CLOUD_CLIENT_ID}"
    clientSecret: "${secret.ERP_CLOUD_CLIENT_SECRET}"
  idempotencyHeader: Idempotency-Key
  operations:
    create-sales-order:
      method: POST
      path: /api/v2/orders
      request: sales-order-to-cloud-order@1
      response: cloud-order-to-sales-order@1
"""

PROJECT = """\
apiVersion: syncline/v1
kind: Project
metadata: {{name: migration-test, owner: qa}}
spec:
  paths: [flows, mappings]
  environments:
    dev:
      vars: {{ERP_URL: "{erp}", ERP_CLOUD_URL: "{cloud}"}}
"""

ROUTED = flow("book", """
- id: erp
  call:
    system: {route: data.subsidiary, cases: {EU: erp-cloud}, default: erp}
    operation: create-sales-order
    body: data
  shadow: {system: erp-cloud, compare: "{total: body.total, tax_amount: body.tax_amount}"}
""")


def _sales_order(entity: str, ref: str, lines: list[tuple[str, int, float]]) -> dict[str, Any]:
    country, currency = ("DE", "EUR") if entity == "EU" else ("US", "USD")
    return {"external_id": ref, "subsidiary": entity, "currency": currency,
            "tax_nexus": country, "term_months": 12, "start_date": "2025-03-01",
            "customer": {"account_id": "001" + ref[3:], "name": "Initech", "bill_to": {
                "street": "1 Main St", "city": "Austin", "postal_code": "78701",
                "country": country}},
            "lines": [{"sku": s, "quantity": q, "unit_price": p} for s, q, p in lines]}


SCHEMAS = "\n---\n".join(
    f"apiVersion: syncline/v1\nkind: Schema\nmetadata: {{name: {name}, owner: qa}}\n"
    "spec: {jsonSchema: {type: object}}\n" for name in ("sales-order", "payment"))


def _project(root: Path, erp: str, cloud: str, flows: str = ROUTED) -> Path:
    """The systems above with the reference project's cloud ERP adapters (its Mappings)."""
    write_files(root, {"syncline.yaml": PROJECT.format(erp=erp, cloud=cloud),
                       "flows/systems.yaml": SYSTEMS, "flows/flows.yaml": flows,
                       "mappings/schemas.yaml": SCHEMAS})
    shutil.copy(ROOT / "mappings" / "erp-cloud.yaml", root / "mappings" / "erp-cloud.yaml")
    return root


@pytest.mark.anyio
async def test_routed_and_shadowed_calls_speak_both_erps_through_adapters(
        tmp_path: Path) -> None:
    old = ErpSandbox(rate_limit=None, auth_token="old-token", latency={"/sales-orders": 0.1})
    cloud = ErpCloudSandbox(rate_limit=None, clients={"syncline-test": "s3cret"})
    secrets = {"ERP_TOKEN": "old-token", "ERP_CLOUD_CLIENT_ID": "syncline-test",
               "ERP_CLOUD_CLIENT_SECRET": "s3cret"}
    with old.serve() as a, cloud.serve() as b:
        root = _project(tmp_path, a.url, b.url)
        orders = [
            _sales_order("EU", "006EU1", [("SEAT-STD", 25, 550.5)]),
            _sales_order("US", "006US1", [("SEAT-STD", 20, 600)]),  # the same tax either way
            _sales_order("US", "006US2", [("SEAT-STD", 37, 600), ("SUPPORT-PREM", 1, 5000),
                                          ("SVC-ONBOARD", 1, 3000)]),  # a cent apart
        ]
        async with running(root, secrets=secrets) as (runtime, plan):
            details = []
            for n, order in enumerate(orders):
                if n == 2:  # the cloud ERP revokes its tokens: Syncline refreshes on the 401
                    cloud.oauth.expire_all()
                accepted = await runtime.ingest(plan.flows["book"], order, meta(n))
                await runtime.wait(accepted.run_id, 20)
                details.append(await detail_json(runtime, accepted.run_id))
    assert [d["state"] for d in details] == ["succeeded"] * 3
    erp_steps = [next(s for s in d["steps"] if s["id"] == "erp") for d in details]
    # EU: routed to the cloud ERP only; its answer read back in the flows' shape
    eu = erp_steps[0]
    assert eu["attempts"][-1]["request"]["route"] == {
        "by": "data.subsidiary", "value": "EU", "system": "erp-cloud"}
    assert eu["output"]["body"]["id"] == "ORD-EU-00001"
    assert (eu["output"]["body"]["end_date"], eu["output"]["body"]["total"]) == (
        "2026-02-28", 13762.5)
    assert [o["external_id"] for o in old.records("sales_orders")] == ["006US1", "006US2"]
    cloud_orders = {o["externalReference"]: o["entity"] for o in cloud.records("orders")}
    assert cloud_orders == {"006EU1": "EU", "006US1": "US", "006US2": "US"}
    # US: booked in the old ERP, shadowed onto the cloud ERP's US entity and compared
    shadows = [s["attempts"][-1]["response"]["shadow"] for s in erp_steps[1:]]
    assert [s["result"] for s in shadows] == ["match", "mismatch"], shadows
    assert shadows[1]["paths"] == ["tax_amount"]
    assert [s["output"]["body"]["id"] for s in erp_steps[1:]] == ["SO-1001", "SO-1002"]
    # OAuth: one token for the System, cached; after the revocation one call got 401, and a
    # second token was fetched and the call sent again
    assert (cloud.oauth.issued, cloud.oauth.refused) == (2, 1)


def test_an_adapter_naming_an_unknown_mapping_is_a_located_error(tmp_path: Path) -> None:
    root = _project(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2")
    systems = root / "flows" / "systems.yaml"
    systems.write_text(systems.read_text().replace(
        "request: sales-order-to-cloud-order@1", "request: sales-order-to-cloud@1"))
    with pytest.raises(DefinitionErrors) as raised:
        compile_project(root)
    [problem] = [d for d in raised.value.diagnostics if d.code == "E_REF"]
    assert "operation 'create-sales-order' of system 'erp-cloud'" in problem.message
    assert "sales-order-to-cloud" in problem.message
    assert str(problem.location) == "flows/systems.yaml:27:7"  # its `request:`


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
