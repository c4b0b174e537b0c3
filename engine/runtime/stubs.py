"""Stubbed Systems: an httpx transport that answers a plan's operations from canned responses and
records every call, and a backbone that keeps what is published in memory. Flow `tests:`, the
change preview and `syncline run --dry-run` execute the real Runtime on them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from engine.compiler.calls import PLACEHOLDER
from engine.compiler.compiled import CompiledSystem
from engine.compiler.plan import Plan
from engine.compiler.records import StubResponse
from engine.runtime.backbone import Backbone
from engine.runtime.calls import AUTH_HEADERS


@dataclass(frozen=True)
class RecordedCall:
    """One request a flow sent to a stubbed System."""

    system: str
    operation: str
    method: str
    url: str
    headers: dict[str, str]  # without auth headers
    body: Any
    idempotency_key: str | None


@dataclass(frozen=True)
class _Route:
    system: str
    operation: str
    method: str
    host: str
    path: re.Pattern[str]
    key_header: str | None


def _routes(plan: Plan) -> list[_Route]:
    routes = []
    for system in plan.systems.values():
        base = urlsplit(system.base_url)
        for name, op in system.operations.items():
            path = base.path.rstrip("/") + "/" + op.path.lstrip("/")
            pattern = _path_pattern(path)
            routes.append(
                _Route(
                    system.name,
                    name,
                    op.method,
                    base.netloc,
                    re.compile(f"^{pattern}$"),
                    system.idempotency_header,
                )
            )
    return routes


def _path_pattern(path: str) -> str:
    """A regex source matching `path` with any value (one segment) in each `{placeholder}`."""
    parts = PLACEHOLDER.split(path)  # literal, name, literal, name, ..., literal
    return "".join("[^/]+" if i % 2 else re.escape(part) for i, part in enumerate(parts))


@dataclass
class StubTransport:
    """Answers `responses["system.operation"]` (one stub, or a list consumed in order; the last
    one repeats); an operation without a stub gets `default`, or 501 and is noted in `unstubbed`.
    """

    plan: Plan
    responses: Mapping[str, StubResponse | Sequence[StubResponse]] = field(default_factory=dict)
    default: StubResponse | None = None
    calls: list[RecordedCall] = field(default_factory=list)
    unstubbed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._routes = _routes(self.plan)
        self._token_urls = {s.auth.token_url for s in self.plan.systems.values()
                            if s.auth.type == "oauth2"}
        self._queues = {
            k: list(v) if isinstance(v, Sequence) else [v] for k, v in self.responses.items()
        }

    def transport(self) -> httpx.MockTransport:
        return StubbedTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and str(request.url) in self._token_urls:  # oauth2: no call
            return httpx.Response(200, json={"access_token": "stub-token", "expires_in": 3600})
        route = self._match(request)
        if route is None:
            self.unstubbed.append(f"{request.method} {request.url} matches no operation")
            return httpx.Response(501, json={"error": "no operation matches"})
        body = json.loads(request.content) if request.content else None
        key = request.headers.get(route.key_header) if route.key_header else None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in AUTH_HEADERS}
        self.calls.append(
            RecordedCall(
                route.system, route.operation, request.method, str(request.url), headers, body, key
            )
        )
        stub = self._next(f"{route.system}.{route.operation}")
        if stub is None:
            self.unstubbed.append(f"{route.system}.{route.operation} has no stubbed response")
            return httpx.Response(501, json={"error": "not stubbed"})
        return httpx.Response(stub.status, json=stub.body, headers=stub.headers)

    def operation(self, method: str, url: str) -> str | None:
        """The `system.operation` a request to `url` is (None: no operation of the plan)."""
        try:
            route = self._match(httpx.Request(method, url))
        except (httpx.InvalidURL, ValueError):
            return None
        return f"{route.system}.{route.operation}" if route else None

    def _match(self, request: httpx.Request) -> _Route | None:
        host, path = request.url.netloc.decode(), request.url.raw_path.decode().split("?")[0]
        for route in self._routes:
            if route.method == request.method and route.host == host and route.path.match(path):
                return route
        return None

    def _next(self, name: str) -> StubResponse | None:
        queue = self._queues.get(name)
        if not queue:
            return self.default
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def logical_calls(self) -> list[RecordedCall]:
        """Calls without the retries: repeats of one idempotency key count once."""
        seen: set[str] = set()
        calls = []
        for call in self.calls:
            if call.idempotency_key is not None:
                if call.idempotency_key in seen:
                    continue
                seen.add(call.idempotency_key)
            calls.append(call)
        return calls


def placeholder_secrets(plan: Plan) -> dict[str, str]:
    """Stand-in values for every secret a plan names: stubbed calls need no real ones."""
    return {name: f"stub-{name.lower()}" for name in plan.secret_names}


@dataclass(frozen=True)
class _Ack:
    stream: str
    seq: int
    duplicate: bool


class StubBackbone(Backbone):
    """A backbone that reaches no NATS server: each publish is kept in `published` (subject,
    CloudEvent), de-duplicated by its Nats-Msg-Id as JetStream would."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[tuple[str, dict[str, Any]]] = []
        self._seq: dict[str, int] = {}

    async def jetstream(self, system: CompiledSystem, subject: str) -> Any:
        stream = system.nats.stream if system.nats else system.name
        backbone = self

        class _Js:
            async def publish(self, subject: str, payload: bytes, timeout: float = 0,
                              headers: dict[str, str] | None = None) -> _Ack:
                ident = (headers or {}).get("Nats-Msg-Id", "")
                if ident in backbone._seq:
                    return _Ack(stream, backbone._seq[ident], True)
                backbone.published.append((subject, json.loads(payload)))
                backbone._seq[ident] = len(backbone.published)
                return _Ack(stream, len(backbone.published), False)

        return _Js()


class StubbedTransport(httpx.MockTransport):
    """Stubbed answers come at once: a shadow is then awaited within its own timeout rather
    than the primary's (near zero) latency, so a flow test's shadow result never depends on
    which of two instant answers the event loop delivered first."""

    patient_shadows = True
