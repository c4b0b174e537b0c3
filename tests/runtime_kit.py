"""Helpers of the runtime tests: a real local HTTP target (Starlette on uvicorn in a thread) that
records writes by idempotency key and answers as scripted, and a project + runtime harness."""

from __future__ import annotations

import asyncio
import heapq
import inspect
import random
import socket
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.compiler import compile_project
from engine.compiler.plan import Plan
from engine.runtime import EventMeta, Runtime
from engine.store import SQLiteStore, Store
from tests.projectkit import write_files


@dataclass
class Seen:
    """One request the target received."""

    method: str
    path: str
    key: str | None
    body: Any
    headers: dict[str, str]
    at: float
    done: float = 0.0


@dataclass
class Target:
    """Records every request; `script[path]` is a list of answers consumed in order:
    an int status, ("retry-after", status, seconds), ("sleep", seconds) or ("json", status, body).
    A write whose idempotency key already succeeded is answered with the first result."""

    requests: list[Seen] = field(default_factory=list)
    writes: dict[str, list[Any]] = field(default_factory=dict)  # key -> distinct bodies applied
    results: dict[str, Any] = field(default_factory=dict)
    script: dict[str, list[Any]] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0
    flaky: float = 0.0  # share of writes answered 503 without applying them
    lost: float = 0.0  # share of writes applied, then answered 503 (the answer is lost)
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def answer_for(self, path: str) -> Any:
        with self.lock:
            queue = self.script.get(path)
            return queue.pop(0) if queue else None

    async def handle(self, request: Request) -> Response:
        try:
            raw = await request.body()
        except ClientDisconnect:  # the runtime process was killed mid-request
            return Response(status_code=499)
        body = (await request.json()) if raw else None
        key = request.headers.get("idempotency-key")
        path = request.url.path
        seen = Seen(request.method, path, key, body, dict(request.headers), time.monotonic())
        with self.lock:
            self.requests.append(seen)
        if path in self.delay:
            await asyncio.sleep(self.delay[path])
        answer = self.answer_for(path)
        response = await self._scripted(answer)
        if response is None:
            roll = self.rng.random()
            if roll < self.flaky:
                response = JSONResponse({"error": "flaky"}, 503)
            else:
                response = self._apply(key, path, body)
                if roll < self.flaky + self.lost:
                    response = JSONResponse({"error": "lost"}, 503)
        seen.done = time.monotonic()
        return response

    async def _scripted(self, answer: Any) -> Response | None:
        if answer is None:
            return None
        if isinstance(answer, int):
            return JSONResponse({"error": {"code": f"E{answer}", "message": "scripted"}}, answer)
        if answer[0] == "sleep":
            await asyncio.sleep(answer[1])
            return None
        if answer[0] == "retry-after":
            return JSONResponse(
                {"error": "slow down"}, answer[1], headers={"Retry-After": str(answer[2])}
            )
        return JSONResponse(answer[2], answer[1])

    def _apply(self, key: str | None, path: str, body: Any) -> Response:
        with self.lock:
            if key is not None and key in self.results:
                return JSONResponse(self.results[key], 201, headers={"Idempotent-Replay": "1"})
            self.counter += 1
            result = {"id": f"X{self.counter}", "path": path, "echo": body}
            if key is not None:
                self.results[key] = result
                self.writes.setdefault(key, []).append(body)
        return JSONResponse(result, 201)

    def to(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(
                    "/{path:path}", self.handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]
                )
            ]
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveTarget:
    """A Target served by uvicorn on 127.0.0.1 in a thread (a context manager)."""

    def __init__(self, target: Target | None = None) -> None:
        self.target = target or Target()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.target.app(),
                host="127.0.0.1",
                port=self.port,
                access_log=False,
                log_level="warning",
                lifespan="off",
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Target:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("target did not start")
            time.sleep(0.01)
        return self.target

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


PROJECT = """\
apiVersion: syncline/v1
kind: Project
metadata: {{name: runtime-test, owner: qa}}
spec:
  paths: [flows]
  environments:
    dev:
      vars: {{TARGET_URL: "{url}"}}
"""

SYSTEM = """\
apiVersion: syncline/v1
kind: System
metadata: {name: erp, owner: qa}
spec:
  baseUrl: ${env.TARGET_URL}
  timeout: 5s
  idempotencyHeader: Idempotency-Key
  webhooks: {scheme: none}
  operations:
    create: {method: POST, path: /orders}
    cancel: {method: POST, path: "/orders/{id}/cancel"}
    slow: {method: POST, path: /slow}
    slow2: {method: POST, path: /slow2}
    lookup: {method: GET, path: /lookup}
---
apiVersion: syncline/v1
kind: RetryPolicy
metadata: {name: fast, owner: qa}
spec:
  maxAttempts: 4
  backoff: {initial: 50ms, multiplier: 2, max: 200ms, jitter: full}
  timeout: 500ms
  retryOn: [timeout, network, "429", "5xx"]
  respectRetryAfter: true
  onError: {"409": succeed, "422": fail, "4xx": park}
  onExhausted: dead-letter
"""


CLOUD_SYSTEM = """\
apiVersion: syncline/v1
kind: System
metadata: {name: erp-cloud, owner: qa}
spec:
  baseUrl: ${env.TARGET_URL}/cloud
  timeout: 5s
  idempotencyHeader: Idempotency-Key
  operations:
    create: {method: PUT, path: "/v2/orders/{ref}"}
    cancel: {method: DELETE, path: "/v2/orders/{id}"}
    lookup: {method: GET, path: /v2/lookup}
"""
"""A second ERP on the same target (paths under /cloud, another API shape), for routing and
shadow tests."""


def write_project(root: Path, url: str, flows: str, extra: dict[str, str] | None = None) -> Path:
    files = {
        "syncline.yaml": PROJECT.format(url=url),
        "flows/systems.yaml": SYSTEM,
        "flows/flows.yaml": flows,
        **(extra or {}),
    }
    return write_files(root, files)


def flow(
    name: str,
    steps: str,
    *,
    trigger: str = "{webhook: {path: /hooks/x, system: erp}}",
    extra: str = "",
) -> str:
    """A Flow document; `steps` is the YAML list under `steps:` (indented by 4)."""
    head = (
        f"apiVersion: syncline/v1\nkind: Flow\nmetadata: {{name: {name}, owner: qa}}\n"
        f"spec:\n  trigger: {trigger}\n{extra}  steps:\n"
    )
    return head + textwrap.indent(textwrap.dedent(steps).strip("\n"), "    ") + "\n"


def meta(n: int | str, source: str = "erp") -> EventMeta:
    return EventMeta(id=f"ev-{n}", type="webhook:/hooks/x", source=source)


async def until(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    """Wait until `predicate()` (a plain or an async function) is true; fail after `timeout`
    seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def in_state(runtime: Runtime, run_id: str, *states: str) -> bool:
    """Whether the run is stored in one of `states` (for `until`)."""
    run = await runtime.store.get_run(run_id)
    return run is not None and run.state in states


class FakeClock:
    """Virtual time for a Runtime (`clock=`): it moves only when the test calls `advance`, and
    sleeps and timed waits end when it passes their deadline, so no test waits for a backoff."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        self.t = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = 0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await self._timer(seconds)

    async def wait_for(self, awaitable: Any, timeout: float) -> bool:
        task = asyncio.ensure_future(awaitable)
        timer = self._timer(timeout)
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not task.done():
                task.cancel()
        return task.done() and not task.cancelled()

    async def advance_until(
        self, predicate: Callable[[], Any], step: float = 0.5, timeout: float = 10.0
    ) -> None:
        """Move time on by `step` at a time until `predicate()` holds (the runtime's loops may
        start a sleep at any moment, so time moves in steps, not in one jump past them)."""

        def moved() -> Any:
            self.advance(step)
            return predicate()

        await until(moved, timeout)

    def advance(self, seconds: float) -> None:
        """Move time on; every sleep and wait whose deadline passed ends."""
        self.t += seconds
        while self._timers and self._timers[0][0] <= self.t:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.done():
                timer.set_result(None)

    def _timer(self, seconds: float) -> asyncio.Future[None]:
        timer = asyncio.get_running_loop().create_future()
        if seconds <= 0:
            timer.set_result(None)
        else:
            self._count += 1
            heapq.heappush(self._timers, (self.t + seconds, self._count, timer))
        return timer


@asynccontextmanager
async def running(
    root: Path, *, wrap: Callable[[Store], Store] | None = None, **kw: Any
) -> AsyncIterator[tuple[Runtime, Plan]]:
    """A started Runtime on a fresh SQLite store of the project at `root` (seen through `wrap`,
    e.g. a FaultyStore, when given)."""
    plan = compile_project(root)
    async with SQLiteStore(root / ".syncline" / "syncline.db") as sqlite:
        store = wrap(sqlite) if wrap else sqlite
        kw.setdefault("poll", 0.05)
        runtime = Runtime(store, plan, **kw)
        await runtime.start()
        try:
            yield runtime, plan
        finally:
            await runtime.stop(grace=5)


async def detail_json(runtime: Runtime, run_id: str) -> dict[str, Any]:
    """A run's detail as the admin API shows it (engine/server/views.py); {} for no run."""
    from engine.server.views import run_detail

    found = await runtime.run_detail(run_id)
    return {} if found is None else run_detail(found)
