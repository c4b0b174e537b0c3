"""`auth: oauth2` (client credentials) against a real token endpoint and API on 127.0.0.1: the
token is fetched once and cached, refreshed before it expires, fetched again once on a 401, and a
failing token endpoint is a located, secret-free CallError."""

from __future__ import annotations

import base64
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from runtime_kit import detail_json, flow, free_port, meta, running, write_project
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from engine.compiler import compile_project
from engine.errors import CallError, DefinitionErrors
from engine.runtime.auth import ClientCredentials
from engine.tls import tls_context

TLS = tls_context()  # one CA load for the module, not one per client (50-80 ms each)


pytestmark = pytest.mark.anyio
BASIC = "Basic " + base64.b64encode(b"syncline:s3cret-value").decode()


@dataclass
class Issuer:
    """A token endpoint and an API that accepts only its live tokens."""

    lifetime: int = 3600
    token_status: list[int] = field(default_factory=list)   # scripted token answers
    issued: list[dict[str, str]] = field(default_factory=list)
    live: set[str] = field(default_factory=set)
    calls: list[str | None] = field(default_factory=list)   # Authorization of each API call
    reject_all: bool = False                                 # answer 401 to every token
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def token(self, request: Request) -> JSONResponse:
        form = dict(urllib.parse.parse_qsl((await request.body()).decode()))
        with self.lock:
            if self.token_status:
                return JSONResponse({"error": "server_error"}, self.token_status.pop(0))
            if request.headers.get("authorization") != BASIC:
                return JSONResponse({"error": "invalid_client"}, 401)
            token = f"T{len(self.issued) + 1}"
            self.issued.append(form)
            self.live.add(token)
        return JSONResponse({"access_token": token, "token_type": "Bearer",
                             "expires_in": self.lifetime})

    async def api(self, request: Request) -> JSONResponse:
        auth = request.headers.get("authorization")
        self.calls.append(auth)
        if self.reject_all or auth is None or auth.removeprefix("Bearer ") not in self.live:
            return JSONResponse({"error": "invalid_token"}, 401)
        return JSONResponse({"id": f"R{len(self.calls)}"}, 201)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def issuer() -> Iterator[tuple[Issuer, str]]:
    state = Issuer()
    app = Starlette(routes=[Route("/oauth/token", state.token, methods=["POST"]),
                            Route("/{path:path}", state.api, methods=["GET", "POST"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.01)
    yield state, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _auth(url: str, clock: Clock, secret: str = "s3cret-value") -> ClientCredentials:
    return ClientCredentials("erp-cloud", f"{url}/oauth/token", "syncline", secret, "orders",
                             clock=clock)


async def test_one_token_is_cached_and_shared(issuer: tuple[Issuer, str]) -> None:
    state, url = issuer
    async with httpx.AsyncClient(verify=TLS, base_url=url, auth=_auth(url, Clock())) as client:
        for _ in range(3):
            assert (await client.post("/orders")).status_code == 201
    assert state.issued == [{"grant_type": "client_credentials", "scope": "orders"}]
    assert state.calls == ["Bearer T1"] * 3


async def test_the_token_is_refreshed_before_it_expires(issuer: tuple[Issuer, str]) -> None:
    state, url = issuer
    state.lifetime = 300          # refreshed 30 s early (a tenth of its life)
    clock = Clock()
    async with httpx.AsyncClient(verify=TLS, base_url=url, auth=_auth(url, clock)) as client:
        await client.post("/orders")
        clock.now += 269
        await client.post("/orders")
        clock.now += 1
        await client.post("/orders")
    assert state.calls == ["Bearer T1", "Bearer T1", "Bearer T2"]


async def test_a_401_fetches_a_new_token_once(issuer: tuple[Issuer, str]) -> None:
    state, url = issuer
    async with httpx.AsyncClient(verify=TLS, base_url=url, auth=_auth(url, Clock())) as client:
        await client.post("/orders")
        state.live.clear()                        # the server revoked T1
        assert (await client.post("/orders")).status_code == 201
        await client.post("/orders")
    assert state.calls == ["Bearer T1", "Bearer T1", "Bearer T2", "Bearer T2"]
    assert len(state.issued) == 2


async def test_a_second_401_is_the_answer_not_a_loop(issuer: tuple[Issuer, str]) -> None:
    state, url = issuer
    state.reject_all = True
    async with httpx.AsyncClient(verify=TLS, base_url=url, auth=_auth(url, Clock())) as client:
        response = await client.post("/orders")
    assert response.status_code == 401
    assert state.calls == ["Bearer T1", "Bearer T2"]


async def test_token_endpoint_failures_are_call_errors_without_secrets(
        issuer: tuple[Issuer, str]) -> None:
    state, url = issuer
    auth = _auth(url, Clock(), "wrong")
    async with httpx.AsyncClient(verify=TLS, base_url=url, auth=auth) as client:
        with pytest.raises(CallError) as rejected:
            await client.post("/orders")
    assert (rejected.value.status, rejected.value.retryable) == (401, False)
    assert str(rejected.value) == f"erp-cloud oauth2 token request to {url}/oauth/token -> 401"
    state.token_status = [503]
    async with httpx.AsyncClient(verify=TLS, base_url=url, auth=_auth(url, Clock())) as client:
        with pytest.raises(CallError) as unavailable:
            await client.post("/orders")
    assert (unavailable.value.status, unavailable.value.retryable) == (503, True)
    assert "s3cret" not in str(rejected.value) + str(unavailable.value)
    assert state.calls == []  # no API call went out without a token


SYSTEM = """\
apiVersion: syncline/v1
kind: System
metadata: {name: erp-cloud, owner: qa}
spec:
  baseUrl: ${env.TARGET_URL}
  auth: {type: oauth2, tokenUrl: "${env.TARGET_URL}/oauth/token", clientId: syncline,
         clientSecret: "${secret.CLOUD_SECRET}", scope: orders}
  operations:
    create: {method: POST, path: /orders}
"""


async def test_a_flow_calls_an_oauth2_system(tmp_path: Path, issuer: tuple[Issuer, str]) -> None:
    state, url = issuer
    flows = flow("f", "- {id: w, call: {system: erp-cloud, operation: create, body: data}}")
    root = write_project(tmp_path, url, flows, {"flows/cloud.yaml": SYSTEM})
    async with running(root, secrets={"CLOUD_SECRET": "s3cret-value"}) as (runtime, plan):
        runs = [await runtime.ingest(plan.flows["f"], {"n": n}, meta(n)) for n in range(3)]
        details = [await runtime.wait(r.run_id, 10) for r in runs]
        detail = await detail_json(runtime, runs[0].run_id)
    assert [d.state for d in details] == ["succeeded"] * 3
    assert len(state.issued) == 1 and state.calls == ["Bearer T1"] * 3
    request = detail["steps"][0]["attempts"][0]["request"]
    assert "authorization" not in {h.lower() for h in request["headers"]}


def test_oauth2_needs_its_credentials(tmp_path: Path) -> None:
    system = SYSTEM.replace(' clientId: syncline,\n', '\n')
    flows = flow("f", "- {id: w, call: {system: erp-cloud, operation: create}}")
    root = write_project(tmp_path, "http://127.0.0.1:9", flows, {"flows/cloud.yaml": system})
    with pytest.raises(DefinitionErrors) as caught:
        compile_project(root, environ={})
    [error] = [d.format() for d in caught.value.diagnostics]
    assert error.startswith("flows/cloud.yaml:6:3: error[E_INVALID] spec.auth: ")
    assert error.endswith("auth type oauth2 needs clientId")
