"""Reconciliations against real HTTP list endpoints: pairing by key, missing on either side,
field mismatches (numbers as decimals), what a mismatch does (emit, park), results kept per
tick, two replicas on PostgreSQL, and a process killed mid-reconciliation."""

from __future__ import annotations

import asyncio
import json
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

import pytest
from authkit import bearer, tokens_yaml
from click.testing import CliRunner
from clockkit import SetClock
from projectkit import write_files
from runtime_kit import LiveTarget
from serverkit import LiveServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from engine.cli import main
from engine.compiler import compile_project
from engine.errors import DefinitionErrors
from engine.runtime import Runtime
from engine.runtime.reconciling import same
from engine.store import SQLiteStore
from engine.store.base import RunQuery
from engine.store.postgres import PostgresStore


@dataclass
class Lists:
    """GET /orders (paged by ?cursor=, 2 a page) and GET /subscriptions (one page)."""

    orders: list[Any] = field(default_factory=list)
    subscriptions: list[Any] = field(default_factory=list)
    garbage: bool = False
    hold: bool = False
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def list_orders(self, request: Request) -> Response:
        with self.lock:
            self.requests.append("orders")
        page = int(request.query_params.get("cursor", "0"))
        body = self.orders[page * 2:page * 2 + 2]
        following = str(page + 1) if page * 2 + 2 < len(self.orders) else None
        return JSONResponse({"items": body, "next_cursor": following})

    async def list_subscriptions(self, request: Request) -> Response:
        with self.lock:
            self.requests.append("subscriptions")
        while self.hold:
            await asyncio.sleep(0.02)
        if self.garbage:
            return PlainTextResponse("<html>502 Bad Gateway</html>")
        return JSONResponse({"data": self.subscriptions})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/orders", self.list_orders),
                                 Route("/subscriptions", self.list_subscriptions)])


@contextmanager
def serve(lists: Lists) -> Iterator[str]:
    live = LiveTarget(lists)  # type: ignore[arg-type]  # any object with an app()
    with live:
        yield live.url


RECONCILIATION = """\
    apiVersion: syncline/v1
    kind: Reconciliation
    metadata: {{name: orders-vs-subscriptions, owner: finance}}
    spec:
      schedule: {{cron: "*/30 * * * *"}}
      left: {{system: erp, operation: list-sales-orders, items: body.items, key: external_id,
              pages: {{next: body.next_cursor, param: cursor}}}}
      right: {{system: billing, operation: list-subscriptions, items: body.data,
               key: metadata.order_id}}
      compare:
        amount: [total, plan.amount]
        currency: [currency, plan.currency]
      onMismatch: {on_mismatch}
"""


def _project(root: Path, url: str, on_mismatch: str = "{emit: com.acme.reconciliation.mismatch}",
             extra: str = "") -> Path:
    files = {
        "syncline.yaml": f"""\
            apiVersion: syncline/v1
            kind: Project
            metadata: {{name: recon}}
            spec:
              paths: [defs]
              environments: {{dev: {{vars: {{URL: "{url}"}}}}}}
        """,
        "defs/systems.yaml": """\
            apiVersion: syncline/v1
            kind: System
            metadata: {name: erp}
            spec:
              baseUrl: ${env.URL}
              operations:
                list-sales-orders: {method: GET, path: /orders}
                create-sales-order: {method: POST, path: /orders}
            ---
            apiVersion: syncline/v1
            kind: System
            metadata: {name: billing}
            spec:
              baseUrl: ${env.URL}
              operations:
                list-subscriptions: {method: GET, path: /subscriptions}
            ---
            apiVersion: syncline/v1
            kind: Flow
            metadata: {name: on-mismatch}
            spec:
              trigger: {event: com.acme.reconciliation.mismatch}
              steps: [{id: s, set: {counts: data.counts}}]
        """,
        "defs/recon.yaml": RECONCILIATION.format(on_mismatch=on_mismatch) + extra,
    }
    return write_files(root, files)


def _order(n: int, total: Any = 100, currency: str = "USD") -> dict[str, Any]:
    return {"external_id": f"SO-{n}", "total": total, "currency": currency}


def _subscription(n: int, amount: Any = "100.00", currency: str = "USD") -> dict[str, Any]:
    return {"id": f"sub_{n}", "metadata": {"order_id": f"SO-{n}"},
            "plan": {"amount": amount, "currency": currency}}


def test_numbers_compare_as_decimals_and_strings_as_strings() -> None:
    assert same(100, "100.00") and same(100.0, 100) and same("1E+2", 100)
    assert not same(100, "100.01") and not same("00123", "123") and not same(None, 0)
    assert same({"a": [1, "x"]}, {"a": [1.0, "x"]}) and not same(True, 1)


def test_pairs_reports_and_emits(tmp_path: Path) -> None:
    lists = Lists(
        orders=[_order(1), _order(2, total=250), _order(3), _order(4), {"no": "key"}, _order(4)],
        subscriptions=[_subscription(1), _subscription(2, amount=240), _subscription(4, "100"),
                       _subscription(5), "junk"],
    )
    with serve(lists) as url:
        plan = compile_project(_project(tmp_path, url), environ={})

        async def scenario() -> None:
            async with SQLiteStore(tmp_path / "s.db") as store:
                runtime = Runtime(store, plan, poll=0.02)
                await runtime.start()
                report = await runtime.reconciler.run("orders-vs-subscriptions")
                assert report["state"] == "mismatch"
                assert (report["left"], report["right"], report["matched"]) == (4, 4, 3)
                assert report["counts"] == {"missing-left": 1, "missing-right": 1, "field": 1,
                                            "duplicate-left": 1, "duplicate-right": 0}
                assert {"kind": "field", "key": "SO-2", "field": "amount", "left": 250,
                        "right": 240} in report["mismatches"]
                assert {"kind": "missing-right", "key": "SO-3"} in report["mismatches"]
                assert {"kind": "missing-left", "key": "SO-5"} in report["mismatches"]
                assert [u["side"] for u in report["unkeyed"]] == ["left", "right"]
                assert report["action"]["emit"] == "com.acme.reconciliation.mismatch"
                assert await runtime.idle(10)
                [run] = await store.list_runs(RunQuery(flow="on-mismatch"))
                assert run.state == "succeeded"
                [stored] = await store.list_reconciliations()
                assert stored["state"] == "mismatch" and stored["report"]["matched"] == 3
                await runtime.stop()

        asyncio.run(scenario())


def test_park_on_mismatch_and_ok_when_they_agree(tmp_path: Path) -> None:
    lists = Lists(orders=[_order(1)], subscriptions=[_subscription(1, amount=99)])
    with serve(lists) as url:
        plan = compile_project(_project(tmp_path, url, "{park: RECONCILIATION_MISMATCH}"),
                               environ={})

        async def scenario() -> None:
            async with SQLiteStore(tmp_path / "s.db") as store:
                runtime = Runtime(store, plan)
                report = await runtime.reconciler.run("orders-vs-subscriptions")
                assert report["state"] == "parked"
                assert report["action"] == {"park": "RECONCILIATION_MISMATCH"}
                lists.subscriptions = [_subscription(1, amount="100.0")]
                report = await runtime.reconciler.run("orders-vs-subscriptions")
                assert report["state"] == "ok" and report["mismatches"] == []
                states = [r["state"] for r in await store.list_reconciliations()]
                assert states == ["ok", "parked"]
                await runtime.stop()

        asyncio.run(scenario())


def test_a_side_answering_garbage_is_an_error_result(tmp_path: Path) -> None:
    lists = Lists(orders=[_order(1)], garbage=True)
    with serve(lists) as url:
        plan = compile_project(_project(tmp_path, url), environ={})

        async def scenario() -> None:
            async with SQLiteStore(tmp_path / "s.db") as store:
                runtime = Runtime(store, plan)
                report = await runtime.reconciler.run("orders-vs-subscriptions")
                assert report["state"] == "error"
                assert report["error"]["code"] == "LIST_BAD_RESPONSE"
                [stored] = await store.list_reconciliations()
                assert stored["state"] == "error"
                await runtime.stop()

        asyncio.run(scenario())


@pytest.mark.parametrize(
    ("change", "code", "needle"),
    [
        (('cron: "*/30 * * * *"', 'cron: "61 * * * *"'), "E_TRIGGER", "invalid cron"),
        (("operation: list-sales-orders", "operation: create-sales-order"), "E_TRIGGER",
         "is a write (POST)"),
        (("amount: [total, plan.amount]", "amount: [total]"), "E_INVALID",
         "needs two expressions"),
        (("system: billing", "system: billng"), "E_REF", "billing"),
        (("key: external_id", "key: \"external_id[\""), "E_JMESPATH", "invalid JMESPath"),
    ],
)
def test_mistakes_are_located(tmp_path: Path, change: tuple[str, str], code: str,
                              needle: str) -> None:
    root = _project(tmp_path, "http://127.0.0.1:9")
    path = root / "defs/recon.yaml"
    path.write_text(path.read_text().replace(*change))
    with pytest.raises(DefinitionErrors) as caught:
        compile_project(root, environ={})
    [diagnostic] = caught.value.diagnostics
    assert diagnostic.code == code and needle in diagnostic.message
    assert diagnostic.location.path.endswith("defs/recon.yaml") and diagnostic.location.line > 1


def test_two_replicas_on_postgres_run_a_tick_once(tmp_path: Path, postgres_url: str) -> None:
    lists = Lists(orders=[_order(1)], subscriptions=[_subscription(1)])
    with serve(lists) as url:
        plan = compile_project(_project(tmp_path, url), environ={})
        start = 1_800_000_000.0 - 1_800_000_000.0 % 1800 + 60  # a minute past a tick
        clock = SetClock(start)

        async def scenario() -> None:
            async with PostgresStore(postgres_url) as one, PostgresStore(postgres_url) as two:
                replicas = [Runtime(s, plan, clock=clock) for s in (one, two)]
                for r in replicas:
                    assert await r.timers.reconciliation_schedules.fire_due() == []  # first sight
                clock.t = start + 1800
                fired = await asyncio.gather(
                    *(r.timers.reconciliation_schedules.fire_due() for r in replicas)
                )
                reports = [x for batch in fired for x in batch]
                assert len([x for x in reports if isinstance(x, dict)]) == 1
                [stored] = await one.list_reconciliations()
                assert stored["state"] == "ok" and not stored["tick"].startswith("manual")
                assert lists.requests.count("orders") == 1
                for r in replicas:
                    await r.stop()

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
        runtime = Runtime(store, plan)  # the real clock: the claim is stamped now
        await runtime.reconciler.run("orders-vs-subscriptions", "2026-12-04T10:30:00Z")

asyncio.run(main(Path(sys.argv[1])))
"""


def test_a_tick_whose_process_died_is_run_again_after_the_lease(tmp_path: Path) -> None:
    lists = Lists(orders=[_order(1)], subscriptions=[_subscription(1)], hold=True)
    tick = "2026-12-04T10:30:00Z"
    with serve(lists) as url:
        root = _project(tmp_path, url)
        started = time.time()
        worker = subprocess.Popen([sys.executable, "-c", KILLED, str(root)])
        try:
            deadline = time.monotonic() + 60
            while "subscriptions" not in lists.requests:  # the left side is read, the right held
                assert time.monotonic() < deadline and worker.poll() is None
                time.sleep(0.02)
            worker.send_signal(signal.SIGKILL)
        finally:
            worker.wait(30)
        lists.hold = False
        plan = compile_project(root, environ={})

        async def restart() -> None:
            async with SQLiteStore(root / "s.db") as store:
                [stale] = await store.list_reconciliations()
                assert stale["state"] == "running"
                soon = Runtime(store, plan, clock=SetClock(started + 10))
                assert await soon.reconciler.run("orders-vs-subscriptions", tick) == "busy"
                later = Runtime(store, plan, clock=SetClock(started + soon.reconciler.lease + 60))
                report = await later.reconciler.run("orders-vs-subscriptions", tick)
                assert report["state"] == "ok"
                assert await later.reconciler.run("orders-vs-subscriptions", tick) is None
                [done] = await store.list_reconciliations()
                assert done["state"] == "ok" and done["tick"] == tick
                await soon.stop()
                await later.stop()

        asyncio.run(restart())


def test_syncline_reconcile_locally_exits_1_on_mismatch(tmp_path: Path) -> None:
    lists = Lists(orders=[_order(1), _order(2, total=99.5)],
                  subscriptions=[_subscription(1), _subscription(2, amount="99.50")])
    with serve(lists) as url:
        root = _project(tmp_path, url)
        runner = CliRunner()
        agreed = runner.invoke(main, ["reconcile", "orders-vs-subscriptions", "--project",
                                      str(root)])
        assert agreed.exit_code == 0, agreed.output
        assert agreed.output.startswith("orders-vs-subscriptions: ok (left 2, right 2, matched 2)")
        lists.subscriptions[1] = _subscription(2, amount="99.00", currency="EUR")
        differ = runner.invoke(main, ["reconcile", "orders-vs-subscriptions", "--project",
                                      str(root), "--format", "json"])
        assert differ.exit_code == 1
        report = json.loads(differ.output)
        assert report["counts"]["field"] == 2 and report["state"] == "mismatch"
        unknown = runner.invoke(main, ["reconcile", "orders", "--project", str(root)])
        assert unknown.exit_code == 2
        assert "no reconciliation 'orders' in the project (it has: orders-vs-subscriptions)" in (
            unknown.output)


def test_server_api_metrics_audit_and_reconcile_url(tmp_path: Path) -> None:
    lists = Lists(orders=[_order(1), _order(2)], subscriptions=[_subscription(1, amount=7)])
    with serve(lists) as url:
        root = _project(tmp_path, url)
        with LiveServer(root, secrets={}) as server, server.client() as http:
            ran = http.post("/api/v1/reconciliations/orders-vs-subscriptions/run")
            assert ran.status_code == 200 and ran.json()["counts"]["missing-right"] == 1
            assert http.post("/api/v1/reconciliations/nope/run").status_code == 404
            listed = http.get("/api/v1/reconciliations").json()
            assert [r["state"] for r in listed["reconciliations"]] == ["mismatch"]
            assert listed["defined"]["orders-vs-subscriptions"]["schedule"] == "*/30 * * * *"
            text = http.get("/metrics").text
            assert ('syncline_reconciliation_mismatches{kind="field",'
                    'name="orders-vs-subscriptions"} 1.0') in text
            assert ('syncline_reconciliation_mismatches{kind="missing-right",'
                    'name="orders-vs-subscriptions"} 1.0') in text
            document = http.get("/api/v1/openapi.json").json()
            assert "/api/v1/reconciliations" in document["paths"]
            result = CliRunner().invoke(main, ["reconcile", "orders-vs-subscriptions",
                                               "--url", server.url])
            assert result.exit_code == 1
            assert "field          SO-1  amount: 100 != 7" in result.output
            assert "missing-right  SO-2" in result.output
            audit = asyncio.run(_audit(server))
            assert [a["detail"]["state"] for a in audit if a["action"] == "reconcile"] == [
                "mismatch", "mismatch"]


async def _audit(server: LiveServer) -> list[dict[str, Any]]:
    return list(await server.runtime.store.audit_log())


def test_a_viewer_reads_results_but_only_an_operator_runs_one(tmp_path: Path) -> None:
    lists = Lists(orders=[_order(1)], subscriptions=[_subscription(1)])
    with serve(lists) as url:
        root = _project(tmp_path, url)
        (tmp_path / "tokens.yaml").write_text(tokens_yaml())
        with LiveServer(root, secrets={}, tokens_file=tmp_path / "tokens.yaml") as server, \
                server.client() as http:
            path = "/api/v1/reconciliations/orders-vs-subscriptions/run"
            assert http.post(path).status_code == 401
            refused = http.post(path, headers=bearer("viewer"))
            assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
            bad = http.post(path, headers=bearer("alice"), content=b"{not json")
            assert bad.status_code == 400
            ran = http.post(path, headers=bearer("alice"), json={"reason": "quarter end"})
            assert ran.status_code == 200 and ran.json()["state"] == "ok"
            listed = http.get("/api/v1/reconciliations", headers=bearer("viewer")).json()
            assert [r["state"] for r in listed["reconciliations"]] == ["ok"]
            audit = asyncio.run(_audit(server))
            assert [(a["actor"], a["detail"].get("note")) for a in audit
                    if a["action"] == "reconcile"] == [("alice", "quarter end")]
