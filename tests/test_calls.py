"""Outbound calls against a real HTTP server (uvicorn in a thread on 127.0.0.1), and the bucket."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.compiler.compiled import CompiledSystem
from engine.errors import CallError, ExecutionError, UsageError
from engine.model.system import Auth, RateLimit, Webhooks
from engine.runtime.calls import (
    Calls,
    OutboundRequest,
    describe,
    require_secrets,
    secret_names,
)
from engine.runtime.ratelimit import TokenBucket
from engine.runtime.steps import checked_headers
from engine.runtime.wire import fill_path, idempotency_key, make_traceparent, parse_retry_after

TOKEN = "tok_live_4f9a1c77e2b0"
TENANT_KEY = "tenant-key-81d3e5"
SECRETS = {"ERP_TOKEN": TOKEN, "TENANT_KEY": TENANT_KEY}
TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01")


# --- the server -------------------------------------------------------------------------------


async def echo(request: Request) -> Response:
    raw = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "raw_path": request.scope["raw_path"].decode(),
            "query": dict(request.query_params),
            "headers": dict(request.headers),
            # what was sent, provable although credentials echoed back are redacted
            "sha256": {k: hashlib.sha256(v.encode()).hexdigest()
                       for k, v in request.headers.items()},
            "content_type": request.headers.get("content-type"),
            "body": json.loads(raw) if raw else None,
        }
    )


async def status(request: Request) -> Response:
    code = int(request.path_params["code"])
    headers = {}
    if "retry_after" in request.query_params:
        headers["Retry-After"] = request.query_params["retry_after"]
    if "retry_in" in request.query_params:
        when = datetime.now(UTC) + timedelta(seconds=int(request.query_params["retry_in"]))
        headers["Retry-After"] = format_datetime(when, usegmt=True)
    body = {
        "error": "nope",
        "code": code,
        "seen": request.headers.get("authorization"),
        "tenant": request.headers.get("x-tenant"),
    }
    return JSONResponse(body, status_code=code, headers=headers)


async def text(request: Request) -> Response:
    return PlainTextResponse("plain words", status_code=int(request.query_params.get("code", 200)))


async def empty(request: Request) -> Response:
    return Response(status_code=204)


async def slow(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params["delay"]))
    return JSONResponse({"slow": True})


async def drip(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" "
            await asyncio.sleep(0.1)

    return StreamingResponse(chunks(), media_type="text/plain")


ROUTES = [
    Route("/echo", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    Route("/echo/{rest:path}", echo, methods=["GET", "POST"]),
    Route("/status/{code:int}", status, methods=["GET", "POST"]),
    Route("/text", text),
    Route("/empty", empty, methods=["POST"]),
    Route("/slow", slow),
    Route("/drip", drip),
]


@dataclass
class LiveServer:
    url: str
    connections: set[tuple[str, int]] = field(default_factory=set)


def counting(app: ASGIApp, server: LiveServer) -> ASGIApp:
    """Record each client (host, port): one entry per TCP connection."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            server.connections.add(tuple(scope["client"]))
        await app(scope, receive, send)

    return wrapped


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    live = LiveServer("")
    app = counting(Starlette(routes=ROUTES), live)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        ws="none",
        http="h11",
        loop="asyncio",
        proxy_headers=False,
        timeout_graceful_shutdown=2,
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "test server did not start"
        time.sleep(0.01)
    live.url = f"http://127.0.0.1:{uv.servers[0].sockets[0].getsockname()[1]}"
    yield live
    uv.should_exit = True
    thread.join(10)
    assert not thread.is_alive()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- building Systems and requests ------------------------------------------------------------


def make_system(base_url: str, **spec: Any) -> CompiledSystem:
    """A CompiledSystem as the compiler makes it; secret placeholders stay unresolved."""
    rate_limit = spec.get("rate_limit")
    webhooks = spec.get("webhooks")
    return CompiledSystem(
        name=spec.get("name", "erp"),
        version=1,
        base_url=base_url,
        auth=Auth.model_validate(
            spec.get("auth", {"type": "bearer", "token": "${secret.ERP_TOKEN}"})
        ),
        timeout=5.0,
        rate_limit=RateLimit.model_validate(rate_limit) if rate_limit else None,
        retry=None,
        idempotency_header=spec.get("idempotency_header", "Idempotency-Key"),
        headers=spec.get("headers", {"X-Tenant": "${secret.TENANT_KEY}", "X-Source": "syncline"}),
        operations={},
        webhooks=Webhooks.model_validate(webhooks) if webhooks else None,
    )


def outbound(system: CompiledSystem, method: str = "GET", path: str = "/echo", **kw: Any):
    return OutboundRequest(
        system=system,
        operation=kw.get("operation", "op"),
        method=method,
        path=path,
        query=kw.get("query", {}),
        headers=kw.get("headers", {}),
        body=kw.get("body"),
        idempotency_key=kw.get("key", "key-1"),
        correlation_id=kw.get("correlation_id", "corr-1"),
        traceparent=kw.get("traceparent"),
        is_write=kw.get("is_write"),
    )


async def call(system: CompiledSystem, *args: Any, timeout: float = 5.0, **kw: Any) -> Any:
    """Send one request with a fresh Calls; return the Response or the CallError."""
    async with Calls([system], SECRETS) as calls:
        try:
            return await calls.send(outbound(system, *args, **kw), timeout=timeout)
        except CallError as error:
            return error


# --- what is sent -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_write_carries_auth_headers_correlation_trace_and_idempotency_key(server) -> None:
    system = make_system(server.url)
    response = await call(
        system,
        "POST",
        "/echo",
        body={"amount": 42, "currency": "EUR"},
        query={"dry": "no"},
        headers={"X-Step": "1"},
        key="idem-123",
        correlation_id="run-corr-7",
    )
    assert response.status == 200
    seen = response.body["headers"]  # the echo of the credentials is redacted in the answer
    assert seen["authorization"] == "[redacted]"
    assert seen["x-tenant"] == "[redacted]" and seen["x-source"] == "syncline"
    assert TOKEN not in json.dumps(response.body) and TENANT_KEY not in str(response.headers)
    assert seen["x-step"] == "1"
    assert seen["idempotency-key"] == "idem-123"
    assert seen["x-correlation-id"] == "run-corr-7"
    assert TRACEPARENT.fullmatch(seen["traceparent"])
    assert seen["user-agent"] == "syncline"
    assert response.body["body"] == {"amount": 42, "currency": "EUR"}
    assert response.body["content_type"] == "application/json"
    assert response.body["query"] == {"dry": "no"}


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
async def test_only_writes_carry_the_idempotency_key(server, method: str) -> None:
    response = await call(make_system(server.url), method, "/echo", key="idem-9")
    has_key = "idempotency-key" in response.body["headers"]
    assert has_key is (method != "GET")


@pytest.mark.anyio
async def test_an_operation_can_say_whether_it_writes(server) -> None:
    system = make_system(server.url)
    search = await call(system, "POST", "/echo", is_write=False)
    assert "idempotency-key" not in search.body["headers"]
    write = await call(system, "GET", "/echo", is_write=True, key="k")
    assert write.body["headers"]["idempotency-key"] == "k"


@pytest.mark.anyio
async def test_a_system_without_idempotency_header_sends_none(server) -> None:
    response = await call(make_system(server.url, idempotency_header=None), "POST", "/echo")
    assert "idempotency-key" not in response.body["headers"]


@pytest.mark.anyio
async def test_the_step_cannot_override_correlation_headers(server) -> None:
    headers = {"x-correlation-id": "forged", "Idempotency-Key": "forged"}
    response = await call(make_system(server.url), "POST", headers=headers, key="real")
    seen = response.body["headers"]
    assert seen["x-correlation-id"] == "corr-1" and seen["idempotency-key"] == "real"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("auth", "header", "value"),
    [
        (
            {"type": "basic", "username": "api", "password": "${secret.ERP_TOKEN}"},
            "authorization",
            "Basic YXBpOnRva19saXZlXzRmOWExYzc3ZTJiMA==",
        ),
        (
            {"type": "header", "header": "X-Api-Key", "value": "${secret.ERP_TOKEN}"},
            "x-api-key",
            TOKEN,
        ),
        (
            {"type": "bearer", "token": "pre-${secret.ERP_TOKEN}"},
            "authorization",
            f"Bearer pre-{TOKEN}",
        ),
    ],
)
async def test_auth_types(server, auth: dict[str, str], header: str, value: str) -> None:
    response = await call(make_system(server.url, auth=auth), "GET")
    assert response.body["sha256"][header] == hashlib.sha256(value.encode()).hexdigest()
    assert response.body["headers"][header] == "[redacted]"


@pytest.mark.anyio
async def test_no_auth_sends_no_authorization(server) -> None:
    response = await call(make_system(server.url, auth={"type": "none"}, headers={}), "GET")
    assert "authorization" not in response.body["headers"]


@pytest.mark.anyio
async def test_the_trace_id_is_the_correlation_id_when_it_is_one(server) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = await call(make_system(server.url), "GET", correlation_id=trace)
    assert response.body["headers"]["traceparent"].split("-")[1] == trace
    given = f"00-{trace}-00f067aa0ba902b7-01"
    response = await call(make_system(server.url), "GET", correlation_id=trace, traceparent=given)
    assert response.body["headers"]["traceparent"] == given


@pytest.mark.anyio
async def test_filled_paths_reach_the_server_quoted(server) -> None:
    path = fill_path("/echo/orders/{id}/cancel", {"id": "SO 1/2?x"})
    response = await call(make_system(server.url), "POST", path)
    assert response.body["raw_path"] == "/echo/orders/SO%201%2F2%3Fx/cancel"


@pytest.mark.anyio
async def test_a_base_url_path_prefix_is_kept(server) -> None:
    response = await call(make_system(server.url + "/echo"), "GET", "/sub")
    assert response.body["raw_path"] == "/echo/sub"


# --- what comes back --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_non_json_and_empty_bodies(server) -> None:
    system = make_system(server.url)
    plain = await call(system, "GET", "/text")
    assert plain.body == "plain words"
    assert plain.headers["content-type"].startswith("text/plain")
    empty_ = await call(system, "POST", "/empty")
    assert (empty_.status, empty_.body) == (204, None)


@pytest.mark.anyio
async def test_429_carries_status_body_headers_and_retry_after(server) -> None:
    error = await call(make_system(server.url), "POST", "/status/429", query={"retry_after": "2"})
    assert isinstance(error, CallError)
    assert (error.kind, error.status, error.retryable, error.retry_after) == (
        "status",
        429,
        True,
        2.0,
    )
    assert error.body["error"] == "nope"
    assert error.headers["retry-after"] == "2"
    assert str(error) == "erp op: POST /status/429 -> 429 Too Many Requests"


@pytest.mark.anyio
async def test_retry_after_as_an_http_date(server) -> None:
    error = await call(make_system(server.url), "GET", "/status/503", query={"retry_in": "30"})
    assert error.status == 503 and error.retryable
    assert 25.0 < error.retry_after <= 30.0


@pytest.mark.anyio
async def test_4xx_is_not_retryable_and_its_json_body_is_parsed(server) -> None:
    error = await call(make_system(server.url), "GET", "/status/422")
    assert (error.kind, error.status, error.retryable, error.retry_after) == (
        "status",
        422,
        False,
        None,
    )
    assert error.body == {
        "error": "nope",
        "code": 422,
        "seen": "[redacted]",
        "tenant": "[redacted]",
    }


@pytest.mark.anyio
async def test_an_error_with_a_text_body(server) -> None:
    error = await call(make_system(server.url), "GET", "/text", query={"code": "500"})
    assert (error.status, error.retryable, error.body) == (500, True, "plain words")


def test_retry_after_parsing() -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("120", now=now) == 120.0
    assert parse_retry_after(" 1.5 ", now=now) == 1.5
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now=now) == 0.0
    for bad in (None, "", "-1", "nan", "soon", "inf"):
        assert parse_retry_after(bad, now=now) is None


# --- failures without a response --------------------------------------------------------------


@pytest.mark.anyio
async def test_a_slow_server_times_out(server) -> None:
    error = await call(make_system(server.url), "GET", "/slow", query={"delay": "1"}, timeout=0.2)
    assert (error.kind, error.retryable, error.status) == ("timeout", True, None)
    assert str(error) == "erp op: GET /slow timed out after 0.2s"
    assert isinstance(error.__cause__, httpx.ReadTimeout | TimeoutError)


@pytest.mark.anyio
async def test_the_timeout_bounds_the_whole_exchange(server) -> None:
    # Every byte comes within the read timeout, the whole body does not.
    error = await call(make_system(server.url), "GET", "/drip", timeout=0.35)
    assert error.kind == "timeout"
    assert isinstance(error.__cause__, TimeoutError)


@pytest.mark.anyio
async def test_connection_refused_is_a_network_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = await call(make_system(f"http://127.0.0.1:{port}"), "POST", "/echo")
    assert (error.kind, error.retryable, error.status) == ("network", True, None)
    assert isinstance(error.__cause__, httpx.ConnectError)
    assert str(error).startswith("erp op: POST /echo failed: ConnectError")


# --- secrets -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_secret_values_appear_in_no_error_message_or_repr(server) -> None:
    system = make_system(
        server.url, auth={"type": "basic", "username": "api", "password": "${secret.ERP_TOKEN}"}
    )
    async with Calls([system], SECRETS) as calls:
        with pytest.raises(CallError) as info:
            await calls.send(outbound(system, "GET", "/status/401"), timeout=5)
        texts = [str(info.value), repr(info.value), repr(calls), repr(info.value.__cause__)]
    assert info.value.body["seen"] == "[redacted]"
    for text in texts:
        assert TOKEN not in text and TENANT_KEY not in text and "YXBpOnRva" not in text


@pytest.mark.anyio
async def test_missing_secrets_are_all_named_without_any_value() -> None:
    erp = make_system("http://erp.invalid")
    crm = make_system(
        "http://crm.invalid",
        name="crm",
        auth={"type": "header", "header": "X-Key", "value": "${secret.CRM_KEY}"},
    )
    with pytest.raises(UsageError) as info:
        Calls([erp, crm], {"ERP_TOKEN": TOKEN})
    assert str(info.value) == (
        "missing secrets: CRM_KEY, TENANT_KEY (set SYNCLINE_SECRET_<NAME> or pass --secrets FILE)"
    )
    assert TOKEN not in str(info.value)


def test_missing_secrets_include_webhook_secrets() -> None:
    system = make_system(
        "http://erp.invalid", webhooks={"scheme": "github", "secret": "${secret.ERP_HOOK}"}
    )
    assert secret_names([system]) == {"ERP_HOOK", "ERP_TOKEN", "TENANT_KEY"}
    with pytest.raises(UsageError, match=r"^missing secrets: ERP_HOOK \(set"):
        require_secrets(secret_names([system]), SECRETS)
    require_secrets(secret_names([system]), {**SECRETS, "ERP_HOOK": "x"})  # all there: passes


def test_an_auth_type_without_its_fields_is_refused() -> None:
    system = make_system("http://erp.invalid", auth={"type": "bearer"})
    with pytest.raises(UsageError, match="auth type 'bearer' needs 'token'"):
        Calls([system], SECRETS)


@pytest.mark.anyio
async def test_an_unknown_system_is_refused(server) -> None:
    async with Calls([make_system(server.url)], SECRETS) as calls:
        with pytest.raises(UsageError, match="system 'crm@1' was not given to Calls"):
            await calls.send(outbound(make_system(server.url, name="crm")), timeout=1)


def test_describe_leaves_out_auth_and_secret_headers() -> None:
    system = make_system(
        "http://erp.test/api",
        auth={"type": "header", "header": "X-Api-Key", "value": "${secret.ERP_TOKEN}"},
        headers={
            "X-Tenant": "${secret.TENANT_KEY}",
            "X-Source": "syncline",
            "x-api-key": "literal",
        },
    )
    request = outbound(
        system,
        "POST",
        "/orders",
        body={"a": 1},
        query={"q": 1},
        headers={"X-Step": "s"},
        key="k1",
        traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
    )
    assert describe(request) == {
        "method": "POST",
        "url": "http://erp.test/api/orders",
        "query": {"q": 1},
        "headers": {
            "X-Source": "syncline",
            "X-Step": "s",
            "X-Correlation-ID": "corr-1",
            "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
            "Idempotency-Key": "k1",
        },
        "body": {"a": 1},
    }


# --- pooling and rate limits ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_sequential_calls_reuse_one_connection(server) -> None:
    system = make_system(server.url)
    server.connections.clear()
    async with Calls([system], SECRETS) as calls:
        for n in range(25):
            await calls.send(outbound(system, "POST", "/echo", key=f"k{n}"), timeout=5)
    assert len(server.connections) == 1


@pytest.mark.anyio
async def test_concurrent_calls_share_at_most_connections_kept_alive(server) -> None:
    """24 calls at once over 12 connections, three times: the first burst opens the 12
    connections, the later ones reuse them (no connection closed and opened again)."""
    system = make_system(server.url)
    server.connections.clear()
    async with Calls([system], SECRETS, connections=12) as calls:
        for burst in range(3):
            await asyncio.gather(
                *(
                    calls.send(outbound(system, "GET", "/slow", query={"delay": 0.05}), timeout=5)
                    for _ in range(24)
                )
            )
            assert len(server.connections) == 12, f"burst {burst}"


@pytest.mark.anyio
async def test_calls_go_through_the_environment_proxy_unless_no_proxy_names_the_host(
    server, monkeypatch
) -> None:
    """The test server stands in for a forward proxy: it receives the absolute-form request for
    a host nobody resolves (and answers 404, having no such route); NO_PROXY sends it direct."""
    system = make_system("http://erp.invalid")
    monkeypatch.setenv("HTTP_PROXY", server.url)
    server.connections.clear()
    proxied = await call(system, "GET", "/echo")
    assert isinstance(proxied, CallError) and proxied.status == 404 and server.connections
    monkeypatch.setenv("NO_PROXY", "erp.invalid")
    direct = await call(system, "GET", "/echo")
    assert isinstance(direct, CallError) and direct.kind == "network"


@pytest.mark.anyio
async def test_the_rate_limit_spaces_calls_after_the_burst(server) -> None:
    system = make_system(server.url, rate_limit={"perSecond": 10, "burst": 5})
    async with Calls([system], SECRETS) as calls:
        started = time.monotonic()
        await asyncio.gather(*(calls.send(outbound(system), timeout=5) for _ in range(20)))
        elapsed = time.monotonic() - started
    assert elapsed >= 1.4  # 5 at once, then 15 at 10 per second; no upper bound on purpose


@pytest.mark.anyio
async def test_a_token_bucket_serves_waiters_first_come_first_served() -> None:
    bucket = TokenBucket(per_second=100, burst=1)
    order: list[int] = []

    async def take(n: int) -> None:
        await bucket.acquire()
        order.append(n)

    await asyncio.gather(*(take(n) for n in range(8)))
    assert order == list(range(8))


def test_a_token_bucket_refills_up_to_its_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(per_second=2, burst=3, clock=lambda: now[0])
    assert bucket.delay() == 0.0
    for _ in range(3):
        bucket._reserve()
    assert bucket.delay() == 0.5
    now[0] = 0.25
    assert bucket.delay() == 0.25
    now[0] = 100.0
    assert bucket.delay() == 0.0
    for _ in range(3):
        bucket._reserve()
    assert bucket.delay() == 0.5


@pytest.mark.anyio
async def test_a_cancelled_waiter_returns_its_token() -> None:
    now = [0.0]
    bucket = TokenBucket(per_second=1, burst=1, clock=lambda: now[0])
    await bucket.acquire()
    waiter = asyncio.ensure_future(bucket.acquire())
    await asyncio.sleep(0)
    assert bucket.delay() == 2.0
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert bucket.delay() == 1.0


def test_a_token_bucket_needs_a_rate() -> None:
    with pytest.raises(ValueError):
        TokenBucket(per_second=0, burst=1)


@pytest.mark.anyio
async def test_an_injected_transport_replaces_the_network() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"id": "SO1"})

    system = make_system("http://erp.test/v2")
    async with Calls([system], SECRETS, transport=httpx.MockTransport(handler)) as calls:
        response = await calls.send(outbound(system, "POST", "/orders", body={"a": 1}), timeout=1)
    assert (response.status, response.body) == (201, {"id": "SO1"})
    assert str(seen[0].url) == "http://erp.test/v2/orders"
    assert json.loads(seen[0].content) == {"a": 1}


# --- pure helpers -------------------------------------------------------------------------------


def test_fill_path_quotes_every_value() -> None:
    assert fill_path("/sales-orders/{id}/cancel", {"id": "SO1"}) == "/sales-orders/SO1/cancel"
    assert fill_path("/a/{x}/{y}", {"x": "a/b c", "y": 7}) == "/a/a%2Fb%20c/7"
    assert fill_path("/flags/{on}", {"on": True}) == "/flags/true"
    assert fill_path("/plain", {}) == "/plain"
    with pytest.raises(ExecutionError, match="path '/a/{id}' needs a value for 'id'"):
        fill_path("/a/{id}", {"other": 1})


def test_idempotency_keys_are_stable_and_distinct() -> None:
    key = idempotency_key("run-1", "create_order")
    assert key == idempotency_key("run-1", "create_order", 0)
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    others = {
        idempotency_key("run-2", "create_order"),
        idempotency_key("run-1", "cancel_order"),
        idempotency_key("run-1", "create_order", 1),
        idempotency_key("run-1c", "reate_order"),
    }
    assert key not in others and len(others) == 4
    # Pinned: keys must survive restarts and upgrades, or in-flight retries would duplicate writes.
    assert key == "c2caf87d617664b45eede348065d0f0bad2ea16c9635d0df55551f022e922d67"


def test_traceparents() -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert make_traceparent(trace, "s").split("-")[1] == trace
    uuid_form = "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"
    assert make_traceparent(uuid_form, "s").split("-")[1] == trace
    inbound = f"00-{trace}-00f067aa0ba902b7-01"
    assert make_traceparent(inbound, "s").split("-")[1] == trace
    hashed = make_traceparent("order-42", "s")
    assert TRACEPARENT.fullmatch(hashed) and hashed == make_traceparent("order-42", "s")
    assert hashed.split("-")[1] != make_traceparent("order-43", "s").split("-")[1]
    assert hashed.split("-")[2] != make_traceparent("order-42", "t").split("-")[2]
    assert make_traceparent("0" * 32, "s").split("-")[1] != "0" * 32


# --- what the server's metrics see of calls ---------------------------------------------------


@pytest.mark.anyio
async def test_calls_report_outcome_and_duration_and_a_failing_system_goes_down(server) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from engine.server.metrics import HEALTH_WINDOW, Metrics

    metrics = Metrics()
    system = make_system(server.url)
    async with Calls([system], SECRETS, on_call=metrics.call) as calls:
        await calls.send(outbound(system, operation="get-order"), timeout=5)
        for code in [429] + [503] * HEALTH_WINDOW:
            with pytest.raises(CallError):
                await calls.send(outbound(system, path=f"/status/{code}", operation="get-order"),
                                 timeout=5)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(metrics.render().decode())
               for s in f.samples}
    labels = (("operation", "get-order"), ("system", "erp"))
    assert samples[("syncline_calls_total", (*labels[:1], ("outcome", "ok"), labels[1]))] == 1
    assert samples[("syncline_calls_total", (*labels[:1], ("outcome", "429"), labels[1]))] == 1
    assert samples[("syncline_calls_total", (*labels[:1], ("outcome", "5xx"), labels[1]))] == (
        HEALTH_WINDOW)
    assert samples[("syncline_call_seconds_count", labels)] == HEALTH_WINDOW + 2
    assert samples[("syncline_call_seconds_bucket", (("le", "+Inf"), *labels))] == (
        HEALTH_WINDOW + 2)
    assert samples[("syncline_system_up", (("system", "erp"),))] == 0
    metrics.call("erp", "get-order", "ok", 0.01)  # one answer is enough to be up again
    up = [s.value for f in text_string_to_metric_families(metrics.render().decode())
          for s in f.samples if s.name == "syncline_system_up"]
    assert up == [1]


def test_a_path_value_of_dot_or_dot_dot_is_refused_and_others_cannot_change_the_shape() -> None:
    for value in (".", ".."):
        with pytest.raises(ExecutionError, match="would climb the path"):
            fill_path("/orders/{id}/cancel", {"id": value})
    assert fill_path("/orders/{id}/cancel", {"id": "../admin?x="}) == (
        "/orders/..%2Fadmin%3Fx%3D/cancel")
    assert fill_path("/orders/{id}", {"id": "..."}) == "/orders/..."


def test_a_header_value_with_cr_or_lf_is_a_data_error_at_once() -> None:
    assert checked_headers({"X-Id": "a b"}) == {"X-Id": "a b"}
    for value in ("a\r\nX-Admin: 1", "a\nb", "a\x00"):
        with pytest.raises(ExecutionError, match="CR, LF or NUL"):
            checked_headers({"X-Id": value})
