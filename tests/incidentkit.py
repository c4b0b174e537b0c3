"""Helpers of the incident tests: a target System on a real socket that counts the calls it
receives and fails on demand, and a project whose flow calls it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from serverkit import free_port, write_project
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class CountingSystem:
    """POST /orders answers 201 (or `failing` status while set); every call is logged."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.failing: int | None = None  # answer this status instead of 201
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[Route("/orders", self._orders, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def _orders(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.calls.append(body)
        if self.failing is not None:
            return Response(b'{"error": "down"}', self.failing, media_type="application/json")
        return Response(orjson.dumps({"id": body.get("id")}), 201, media_type="application/json")

    def __enter__(self) -> CountingSystem:
        self.thread.start()
        until(lambda: self.server.started)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def target_system(url: str, extra: str = "") -> str:
    return f"""\
apiVersion: syncline/v1
kind: System
metadata: {{name: erp, owner: finance}}
spec:
  baseUrl: {url}
  timeout: 2s
  retry: quick
  operations:
    create-order: {{method: POST, path: /orders}}
{extra}---
apiVersion: syncline/v1
kind: RetryPolicy
metadata: {{name: quick, owner: finance}}
spec:
  maxAttempts: 3
  backoff: {{initial: 50ms, multiplier: 1, max: 50ms, jitter: none}}
  retryOn: [timeout, network, "5xx"]
  onExhausted: dead-letter
"""


ORDER_FLOW = """\
apiVersion: syncline/v1
kind: Flow
metadata: {name: order-sync, owner: revops}
spec:
  trigger: {webhook: {path: /hooks/order, system: crm}}
  idempotencyKey: data.id
  steps:
    - id: erp
      call: {system: erp, operation: create-order, body: "{id: data.id}"}
---
apiVersion: syncline/v1
kind: Flow
metadata: {name: account-sync, owner: revops}
spec:
  trigger: {webhook: {path: /hooks/account, system: crm}}
  idempotencyKey: data.id
  orderingKey: data.account
  steps:
    - id: erp
      call: {system: erp, operation: create-order, body: "{id: data.id}"}
"""


def incident_project(root: Path, url: str, breaker: str = "") -> Path:
    """The server-test project plus `erp` (at `url`) and the order-sync flow calling it."""
    extra = f"  circuitBreaker: {breaker}\n" if breaker else ""
    return write_project(
        root, {"flows/erp.yaml": target_system(url, extra), "flows/order.yaml": ORDER_FLOW}
    )
