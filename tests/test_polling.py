"""The `poll` trigger against a real HTTP list endpoint: pages followed, one run per item, the
cursor stored only after the items are accepted (a process killed mid-poll loses and duplicates
nothing), retries and the rate limit of the System, and the bad answers a list endpoint gives."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clockkit import SetClock
from projectkit import write_files
from runtime_kit import LiveTarget
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from engine.compiler import compile_project
from engine.runtime import Runtime
from engine.store import SQLiteStore, Store
from engine.store.base import RunQuery


@dataclass
class Invoices:
    """A list endpoint: GET /invoices?updated_since=&cursor= pages of `size` items, oldest first."""

    items: list[dict[str, Any]] = field(default_factory=list)
    size: int = 2
    mode: str = "ok"              # ok | loop | text | object
    fail_first: int = 0           # answer this many requests 503 first
    hold_page: int | None = None  # never answer this page (the test kills the poller meanwhile)
    requests: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def list(self, request: Request) -> Response:
        query = dict(request.query_params)
        with self.lock:
            self.requests.append((time.monotonic(), query))
            if self.fail_first:
                self.fail_first -= 1
                return JSONResponse({"error": "busy"}, status_code=503)
        if self.mode == "text":
            return PlainTextResponse("<html>maintenance</html>")
        since = query.get("updated_since", "")
        chosen = [
            i for i in self.items if not isinstance(i, dict) or i.get("updated_at", "") > since
        ]
        page = int(query.get("cursor", "0"))
        while page == self.hold_page:  # until the test lets go, after killing the poller
            await asyncio.sleep(0.02)
        body = chosen[page * self.size:(page + 1) * self.size]
        following = str(page + 1) if (page + 1) * self.size < len(chosen) else None
        if self.mode == "loop":
            following = "1"
        if self.mode == "object":
            return JSONResponse({"items": {"not": "a list"}})
        return JSONResponse({"items": body, "next_cursor": following})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/invoices", self.list)])


def _project(root: Path, url: str, rate: str = "") -> Path:
    files = {
        "syncline.yaml": f"""\
            apiVersion: syncline/v1
            kind: Project
            metadata: {{name: polls}}
            spec:
              paths: [flows]
              environments: {{dev: {{vars: {{URL: "{url}"}}}}}}
        """,
        "flows/f.yaml": f"""\
            apiVersion: syncline/v1
            kind: System
            metadata: {{name: erp}}
            spec:
              baseUrl: ${{env.URL}}
              retry: quick
              {rate}
              operations:
                list-invoices: {{method: GET, path: /invoices}}
            ---
            apiVersion: syncline/v1
            kind: RetryPolicy
            metadata: {{name: quick}}
            spec:
              maxAttempts: 3
              backoff: {{initial: 10ms, multiplier: 1, max: 10ms, jitter: none}}
              retryOn: [network, timeout, "5xx"]
            ---
            apiVersion: syncline/v1
            kind: Flow
            metadata: {{name: invoices}}
            spec:
              trigger:
                poll:
                  system: erp
                  operation: list-invoices
                  every: 1m
                  items: body.items
                  cursor: {{param: updated_since, next: "max(body.items[].updated_at)"}}
                  pages: {{next: body.next_cursor, param: cursor}}
              idempotencyKey: data.id
              steps: [{{id: s, set: {{id: data.id}}}}]
        """,
    }
    return write_files(root, files)


def _invoice(n: int) -> dict[str, Any]:
    return {"id": f"INV-{n}", "updated_at": f"2026-12-04T10:{n:02d}:00Z", "total": "10.00"}


async def _keys(store: Store) -> list[str]:
    return sorted(r.key for r in await store.list_runs(RunQuery(flow="invoices", limit=1000)))




@contextmanager
def serve(target: Invoices) -> Iterator[str]:
    live = LiveTarget(target)  # type: ignore[arg-type]  # any object with an app()
    with live:
        yield live.url


def test_pages_items_and_cursor(tmp_path: Path) -> None:
    target = Invoices(items=[_invoice(n) for n in range(1, 6)])
    with serve(target) as url:
        plan = compile_project(_project(tmp_path, url), environ={})
        clock = SetClock(1_800_000_000.0)

        async def scenario() -> None:
            async with SQLiteStore(tmp_path / "s.db") as store:
                runtime = Runtime(store, plan, clock=clock, poll=0.02)
                [first] = await runtime.polls.poll_due()
                assert (first.pages, first.accepted, first.duplicates) == (3, 5, 0)
                assert first.cursor == "2026-12-04T10:05:00Z" and first.error is None
                assert await runtime.polls.poll_due() == []  # not due for a minute
                target.items.append(_invoice(6))
                clock.t += 60
                [second] = await runtime.polls.poll_due()
                assert (second.pages, second.accepted) == (1, 1)
                assert target.requests[-1][1] == {"updated_since": "2026-12-04T10:05:00Z"}
                state = await store.get_trigger_state("poll:invoices")
                assert state["cursor"] == "2026-12-04T10:06:00Z"
                assert await _keys(store) == [f"INV-{n}" for n in range(1, 7)]
                await runtime.start()
                assert await runtime.idle(10)
                await runtime.stop()
                runs = await store.list_runs(RunQuery(flow="invoices", limit=10))
                assert {r.state for r in runs} == {"succeeded"}

        asyncio.run(scenario())


KILLED = """
import asyncio, sys
from pathlib import Path
from engine.compiler import compile_project
from engine.runtime import Runtime
from engine.store import SQLiteStore

async def main(root):
    plan = compile_project(root, environ={})
    async with SQLiteStore(root / "s.db") as store:
        await Runtime(store, plan).polls.poll(plan.flows["invoices"])

asyncio.run(main(Path(sys.argv[1])))
"""


def test_a_poller_killed_mid_poll_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    target = Invoices(items=[_invoice(n) for n in range(1, 8)], hold_page=2)
    with serve(target) as url:
        root = _project(tmp_path, url)
        poller = subprocess.Popen([sys.executable, "-c", KILLED, str(root)])
        try:
            deadline = time.monotonic() + 60
            while not any(q.get("cursor") == "2" for _, q in target.requests):
                assert time.monotonic() < deadline and poller.poll() is None
                time.sleep(0.02)
            poller.send_signal(signal.SIGKILL)  # pages 0 and 1 accepted, page 2 in flight
        finally:
            poller.wait(30)
        assert poller.returncode == -signal.SIGKILL
        target.hold_page = None
        plan = compile_project(root, environ={})

        async def restart() -> None:
            async with SQLiteStore(root / "s.db") as store:
                assert await _keys(store) == ["INV-1", "INV-2", "INV-3", "INV-4"]
                state = await store.get_trigger_state("poll:invoices")
                assert state is None  # the cursor did not move
                runtime = Runtime(store, plan)
                result = await runtime.polls.poll(plan.flows["invoices"])
                assert (result.accepted, result.duplicates, result.error) == (3, 4, None)
                assert await _keys(store) == [f"INV-{n}" for n in range(1, 8)]
                state = await store.get_trigger_state("poll:invoices")
                assert state["cursor"] == "2026-12-04T10:07:00Z"
                await runtime.stop()

        asyncio.run(restart())


def _poll_once(tmp_path: Path, target: Invoices, rate: str = "") -> tuple[Any, Any, list[str]]:
    with serve(target) as url:
        plan = compile_project(_project(tmp_path, url, rate), environ={})

        async def scenario() -> tuple[Any, Any, list[str]]:
            async with SQLiteStore(tmp_path / "s.db") as store:
                runtime = Runtime(store, plan)
                [result] = await runtime.polls.poll_due()
                state = await store.get_trigger_state("poll:invoices")
                again = await runtime.polls.poll_due() if result.error else []
                assert again == []  # parked, or not yet due
                await runtime.stop()  # closes the System's connections
                return result, state, await _keys(store)

        return asyncio.run(scenario())


def test_a_page_loop_stops_and_parks_the_poll(tmp_path: Path) -> None:
    target = Invoices(items=[_invoice(n) for n in range(1, 6)], mode="loop")
    result, state, keys = _poll_once(tmp_path, target)
    assert result.error["code"] == "PAGE_LOOP"
    assert 'page token "1" came back after 2 pages' in result.error["message"]
    assert state["cursor"] is None and state["last"]["error"]["code"] == "PAGE_LOOP"
    assert keys == ["INV-1", "INV-2", "INV-3", "INV-4"]  # what it read is accepted, once
    assert len(target.requests) == 2


def test_garbage_answers_are_recorded_not_raised(tmp_path: Path) -> None:
    for mode, said in (("text", "gave null"), ("object", "gave dict")):
        folder = tmp_path / mode
        folder.mkdir()
        target = Invoices(items=[_invoice(1)], mode=mode)
        result, state, keys = _poll_once(folder, target)
        assert result.error["code"] == "LIST_BAD_RESPONSE"
        assert "not a list (status 200)" in result.error["message"]
        assert state["cursor"] is None and keys == []
        assert said in result.error["message"]


def test_items_without_a_key_are_reported_and_skipped(tmp_path: Path) -> None:
    items = [_invoice(1), {"updated_at": "2026-12-04T10:02:00Z"}, "junk", _invoice(3)]
    result, state, keys = _poll_once(tmp_path, Invoices(items=items, size=10))
    assert keys == ["INV-1", "INV-3"] and result.error is None
    assert [s["index"] for s in result.skipped] == [1, 2]
    assert state["last"]["skipped_count"] == 2
    assert state["cursor"] == "2026-12-04T10:03:00Z"


def test_retries_as_the_system_policy_says_then_gives_up(tmp_path: Path) -> None:
    target = Invoices(items=[_invoice(1)], fail_first=2)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    result, _, keys = _poll_once(tmp_path / "a", target)
    assert result.error is None and keys == ["INV-1"] and len(target.requests) == 3
    target = Invoices(items=[_invoice(1)], fail_first=5)
    result, state, keys = _poll_once(tmp_path / "b", target)
    assert result.error["code"] == "LIST_READ_FAILED"
    assert "3 attempts used" in result.error["message"]
    assert keys == [] and state["cursor"] is None and len(target.requests) == 3


def test_pages_wait_for_the_system_rate_limit(tmp_path: Path) -> None:
    target = Invoices(items=[_invoice(n) for n in range(1, 9)])
    result, _, _ = _poll_once(tmp_path, target, "rateLimit: {perSecond: 10, burst: 1}")
    assert result.pages == 4
    gaps = [b[0] - a[0] for a, b in zip(target.requests, target.requests[1:], strict=False)]
    assert min(gaps) >= 0.08  # one request per 100 ms at most
