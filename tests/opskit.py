"""A project to operate from the console: an ERP with a cloud candidate that shadows its writes,
a billing System, a ledger whose circuit breaker opens (it answers 503), a Reconciliation of ERP
orders against billing subscriptions, and a real HTTP target serving them all (hostile values
included: a key and a field named `<script>`). Shared by test_console_ops.py and the browser
tests."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from authkit import bearer, tokens_yaml
from projectkit import write_files
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.server.auth import token_digest

XSS = "<script>window.pwned=1</script>"
OLGA = "tok-olga-1"  # an operator of every flow (authkit's alice has deal-* only)


@dataclass
class OpsTarget:
    """GET /orders and /subscriptions (the reconciliation's sides), POST /erp/orders (the
    primary, 0.2 s) and POST /cloud/orders (the candidate: it adds a field named XSS and
    doubles the total of odd orders). Counts both ERPs' writes."""

    orders: list[Any] = field(default_factory=list)
    subscriptions: list[Any] = field(default_factory=list)
    erp_writes: int = 0
    cloud_writes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def list_orders(self, request: Request) -> Response:
        return JSONResponse({"items": self.orders})

    async def list_subscriptions(self, request: Request) -> Response:
        return JSONResponse({"data": self.subscriptions})

    async def erp(self, request: Request) -> Response:
        with self.lock:
            self.erp_writes += 1
        body = json.loads(await request.body())
        await asyncio.sleep(0.2)  # the candidate gets as long to answer
        return JSONResponse({"id": body["n"], "total": body["total"]}, status_code=201)

    async def cloud(self, request: Request) -> Response:
        with self.lock:
            self.cloud_writes += 1
        body = json.loads(await request.body())
        answer: dict[str, Any] = {"id": body["n"], "total": body["total"]}
        if body["n"] % 2:
            answer.update({"total": body["total"] * 2, XSS: True})
        return JSONResponse(answer, status_code=201)

    async def ledger(self, request: Request) -> Response:
        return JSONResponse({"error": "ledger down"}, status_code=503)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/ledger", self.ledger, methods=["POST"]),
            Route("/orders", self.list_orders), Route("/subscriptions", self.list_subscriptions),
            Route("/erp/orders", self.erp, methods=["POST"]),
            Route("/cloud/orders", self.cloud, methods=["POST"]),
        ])  # fmt: skip


DEFS = """\
apiVersion: syncline/v1
kind: System
metadata: {name: erp, owner: finance}
spec:
  baseUrl: ${env.URL}
  operations:
    list-sales-orders: {method: GET, path: /orders}
    create: {method: POST, path: /erp/orders}
---
apiVersion: syncline/v1
kind: System
metadata: {name: erp-cloud, owner: finance}
spec:
  baseUrl: ${env.URL}
  timeout: 5s
  operations:
    create: {method: POST, path: /cloud/orders}
---
apiVersion: syncline/v1
kind: System
metadata: {name: billing, owner: finance}
spec:
  baseUrl: ${env.URL}
  operations:
    list-subscriptions: {method: GET, path: /subscriptions}
---
apiVersion: syncline/v1
kind: System
metadata: {name: ledger, owner: finance}
spec:
  baseUrl: ${env.URL}
  circuitBreaker: {failureRate: 0.5, minCalls: 2, window: 1m, openFor: 5m}
  operations:
    post: {method: POST, path: /ledger}
---
apiVersion: syncline/v1
kind: Flow
metadata: {name: ledger-post, owner: finance}
spec:
  trigger: {event: com.acme.ledger}
  steps:
    - {id: post, call: {system: ledger, operation: post, body: data}}
---
apiVersion: syncline/v1
kind: Flow
metadata: {name: order-sync, owner: finance}
spec:
  trigger: {event: com.acme.order}
  idempotencyKey: data.n
  steps:
    - id: erp
      call: {system: erp, operation: create, body: data}
      shadow: {system: erp-cloud, compare: body}
---
apiVersion: syncline/v1
kind: Reconciliation
metadata: {name: orders-vs-subscriptions, owner: finance}
spec:
  left: {system: erp, operation: list-sales-orders, items: body.items, key: external_id}
  right: {system: billing, operation: list-subscriptions, items: body.data,
          key: metadata.order_id}
  compare:
    amount: [total, plan.amount]
  onMismatch: {park: RECONCILIATION_MISMATCH}
"""


def ops_project(root: Path, url: str) -> Path:
    """The project (tokens in root/tokens.yaml: authkit's viewer, alice, root, and olga)."""
    project = write_files(root / "project", {
        "syncline.yaml": f"""\
            apiVersion: syncline/v1
            kind: Project
            metadata: {{name: ops}}
            spec:
              paths: [defs]
              environments: {{dev: {{vars: {{URL: "{url}"}}}}}}
        """,
        "defs/ops.yaml": DEFS,
    })  # fmt: skip
    olga = f"- {{name: olga, role: operator, sha256: {token_digest(OLGA).hex()}}}\n"
    (root / "tokens.yaml").write_text(tokens_yaml(olga))
    return project


def disagreeing_lists(target: OpsTarget) -> None:
    """SO-1 agrees, SO-2's amount differs, the XSS order has no subscription, SO-9 no order."""
    target.orders = [{"external_id": "SO-1", "total": 100}, {"external_id": "SO-2", "total": 250},
                     {"external_id": XSS, "total": 5}]  # fmt: skip
    target.subscriptions = [{"metadata": {"order_id": "SO-1"}, "plan": {"amount": "100.00"}},
                            {"metadata": {"order_id": "SO-2"}, "plan": {"amount": 240}},
                            {"metadata": {"order_id": "SO-9"}, "plan": {"amount": 1}}]  # fmt: skip


def send_order(http: httpx.Client, n: int) -> str:
    """An order event (as the admin token: it may ingest); the run id."""
    return send_event(http, "com.acme.order", f"order-{n}", {"n": n, "total": 10 * n})


def send_event(http: httpx.Client, kind: str, event_id: str, data: Any) -> str:
    """A CloudEvent of type `kind` (as the admin token: it may ingest); the run id."""
    event = {"specversion": "1.0", "id": event_id, "type": kind, "source": "tests",
             "datacontenttype": "application/json", "data": data}  # fmt: skip
    headers = {"content-type": "application/cloudevents+json", **bearer("root")}
    response = http.post("/events", content=json.dumps(event), headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["runs"][0]["run_id"])
