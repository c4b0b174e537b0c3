"""Helpers of the logs and traces tests: a real OTLP/HTTP traces receiver, a target System that
records the headers it receives, and a project whose flows call it with a bearer token."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from serverkit import SECRETS, write_project

ERP_TOKEN = "tok_erp_live_5c1d9e0b7a2f4e68"
ALL_SECRETS = {**SECRETS, "ERP_TOKEN": ERP_TOKEN}
KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass
class SpanSeen:
    """One exported span, decoded."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    kind: str
    attributes: dict[str, Any]
    status: int  # 0 unset, 1 ok, 2 error
    resource: dict[str, Any] = field(default_factory=dict)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True


class _Server:
    """An http.server on a free 127.0.0.1 port in a thread; a context manager."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = _Quiet(("127.0.0.1", 0), handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Any:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _OtlpHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        owner: OtlpReceiver = self.server.owner  # type: ignore[attr-defined]
        if self.path != "/v1/traces" or self.headers["Content-Type"] != "application/x-protobuf":
            self.send_response(404)
            self.end_headers()
            return
        owner.headers.append({k.lower(): v for k, v in self.headers.items()})
        owner.receive(body)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


class OtlpReceiver(_Server):
    """A real OTLP/HTTP endpoint: POST /v1/traces with an ExportTraceServiceRequest
    (protobuf), decoded with opentelemetry-proto. `raw` keeps every request's bytes."""

    def __init__(self) -> None:
        super().__init__(_OtlpHandler)
        self.spans: list[SpanSeen] = []
        self.raw: list[bytes] = []
        self.headers: list[dict[str, str]] = []  # each export request's headers
        self._lock = threading.Lock()

    def receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        with self._lock:
            self.raw.append(body)
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans.append(SpanSeen(
                            span.name, span.trace_id.hex(), span.span_id.hex(),
                            span.parent_span_id.hex(), KINDS.get(span.kind, "?"),
                            {a.key: _value(a.value) for a in span.attributes},
                            span.status.code, resource,
                        ))  # fmt: skip

    def named(self, name: str) -> list[SpanSeen]:
        with self._lock:
            return [s for s in self.spans if s.name == name]

    def wait_for(self, check: Callable[[OtlpReceiver], bool], timeout: float = 20.0) -> None:
        until(lambda: check(self), timeout)


class _TargetHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        owner: Target = self.server.owner  # type: ignore[attr-defined]
        owner.seen.append({"path": self.path, "headers": {k.lower(): v for k, v in
                                                          self.headers.items()}})  # fmt: skip
        if self.path.startswith("/reject"):
            status, answer = 422, {"error": {"code": "CUSTOMER_BLOCKED", "message": "blocked"}}
        else:
            status, answer = 201, {"id": "SO-" + str(len(owner.seen)), "size": len(body)}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class Target(_Server):
    """The ERP: POST /orders answers 201, POST /reject 422; `seen` records each request's path
    and headers."""

    def __init__(self) -> None:
        super().__init__(_TargetHandler)
        self.seen: list[dict[str, Any]] = []


def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


ERP = """\
apiVersion: syncline/v1
kind: System
metadata: {{name: erp, owner: finance}}
spec:
  baseUrl: {url}
  auth: {{type: bearer, token: "${{secret.ERP_TOKEN}}"}}
  idempotencyHeader: Idempotency-Key
  timeout: 5s
  operations:
    create-order: {{method: POST, path: "/orders/{{id}}"}}
    reject-order: {{method: POST, path: /reject}}
"""

FLOWS = """\
apiVersion: syncline/v1
kind: Flow
metadata: {name: order-sync, owner: revops}
spec:
  trigger: {webhook: {path: /hooks/order, system: crm}}
  filter: "data.kind != 'ignore'"
  idempotencyKey: data.id
  steps:
    - id: shape
      set: {id: data.id, note: data.note}
    - id: erp
      needs: [shape]
      call:
        system: erp
        operation: create-order
        params: {id: steps.shape.id}
        body: "{id: steps.shape.id, note: steps.shape.note}"
    - id: announce
      needs: [erp]
      emit: {type: com.test.order.synced, data: "{id: steps.shape.id}"}
---
apiVersion: syncline/v1
kind: Flow
metadata: {name: order-announced, owner: revops}
spec:
  trigger: {event: com.test.order.synced}
  steps:
    - id: note
      set: {id: data.id}
---
apiVersion: syncline/v1
kind: Flow
metadata: {name: order-reject, owner: revops}
spec:
  trigger: {webhook: {path: /hooks/reject, system: crm}}
  idempotencyKey: data.id
  steps:
    - id: erp
      call: {system: erp, operation: reject-order, body: "{id: data.id, note: data.note}"}
"""


def traced_project(root: Path, target_url: str) -> Path:
    """The server-test project plus `erp` (at `target_url`, bearer ERP_TOKEN) and two flows:
    order-sync (set, a call, an emitted event that order-announced takes: succeeds) and
    order-reject (a call answered 422: parks)."""
    return write_project(
        root, {"flows/erp.yaml": ERP.format(url=target_url), "flows/orders.yaml": FLOWS}
    )
