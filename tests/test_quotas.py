"""Shared call budgets (`rateLimit: {perSecond, burst, perHour, perDay}`): the store's ledger on
both stores (replicas racing never exceed a window), a used-up hour holding runs as `waiting`
(QUOTA) against a real HTTP target, three runtimes on one PostgreSQL sharing one per-second
budget, and the located compile errors."""

from __future__ import annotations

import asyncio
import collections
import math
from pathlib import Path
from typing import Any

import pytest
from runtime_kit import LiveTarget, in_state, until, write_project

from engine.compiler import compile_project
from engine.errors import CallHeld, DefinitionErrors
from engine.runtime import EventMeta, Runtime
from engine.runtime.quota import Quotas, window
from engine.store import SQLiteStore
from engine.store.quotas import QuotaLedger

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_window_is_never_overdrawn_by_racing_leases(any_store: Any) -> None:
    ledger = QuotaLedger(any_store)
    grants = await asyncio.gather(*(ledger.lease("erp", "hour", 0.0, 3, 40) for _ in range(30)))
    assert sum(grants) == 40                       # all of it, and no more
    assert set(grants) <= {0, 1, 3}                 # the last ones got what was left, one by one
    assert await ledger.lease("erp", "hour", 0.0, 1, 40) == 0
    assert await ledger.lease("erp", "hour", 3600.0, 5, 40) == 5   # the next window is fresh
    assert await ledger.used([("erp", "hour", 0.0), ("crm", "hour", 0.0)]) == {
        ("erp", "hour"): 40, ("crm", "hour"): 0}


async def test_a_used_up_hour_holds_the_call_until_the_next_hour(tmp_path: Path) -> None:
    root = write_project(tmp_path, "http://127.0.0.1:9", "", {})
    text = (root / "flows" / "systems.yaml").read_text()
    (root / "flows" / "systems.yaml").write_text(
        text.replace("  timeout: 5s\n", "  timeout: 5s\n  rateLimit: {perHour: 3}\n", 1))
    system = compile_project(root).system("erp")
    now = [7200.0 + 10]
    async with SQLiteStore(tmp_path / "q.db") as store:
        quotas = Quotas(QuotaLedger(store), lambda: now[0], shared=False)
        for _ in range(3):
            await quotas.take(system)
        with pytest.raises(CallHeld) as held:
            await quotas.take(system)
        assert held.value.code == "QUOTA" and held.value.until == 10800.0
        assert "has used its 3 calls per hour" in str(held.value)
        assert await quotas.remaining([system]) == {("erp", "hour"): 0}
        now[0] = 10800.0  # the next hour
        await quotas.take(system)
        assert await quotas.remaining([system]) == {("erp", "hour"): 2}


FLOW = """\
apiVersion: syncline/v1
kind: Flow
metadata: {name: orders, owner: qa}
spec:
  trigger: {event: order.requested}
  steps:
    - {id: erp, call: {system: erp, operation: create, body: data}}
"""


def _limited(root: Path, limit: str) -> Path:
    text = (root / "flows" / "systems.yaml").read_text()
    (root / "flows" / "systems.yaml").write_text(
        text.replace("  timeout: 5s\n", f"  timeout: 5s\n  rateLimit: {limit}\n", 1))
    return root


async def test_runs_past_the_hourly_budget_wait_with_quota_and_send_nothing(
        tmp_path: Path) -> None:
    live = LiveTarget()
    with live as target:
        root = _limited(write_project(tmp_path, live.url, FLOW), "{perHour: 3}")
        plan = compile_project(root)
        async with SQLiteStore(root / ".syncline" / "syncline.db") as store:
            runtime = Runtime(store, plan, poll=0.05)
            await runtime.start()
            try:
                ids = [(await runtime.ingest(plan.flows["orders"], {"n": n},
                                             EventMeta(f"e{n}", "order.requested", "t"))).run_id
                       for n in range(5)]
                await until(lambda: _states(runtime, ids, {"succeeded": 3, "waiting": 2}), 15)
                held = [await store.get_run(i) for i in ids]
                reasons = {r.reason.code for r in held if r and r.state == "waiting" and r.reason}
                assert reasons == {"QUOTA"}
                assert len(target.to("/orders")) == 3   # nothing went past the budget
                for run in held:
                    if run and run.state == "waiting":
                        assert await in_state(runtime, run.id, "waiting")
            finally:
                await runtime.stop(grace=2)


async def _states(runtime: Runtime, ids: list[str], want: dict[str, int]) -> bool:
    found = collections.Counter()
    for run_id in ids:
        run = await runtime.store.get_run(run_id)
        if run is not None:
            found[run.state] += 1
    return dict(found) == want


async def test_three_replicas_on_postgresql_share_one_per_second_budget(
        tmp_path: Path, postgres_url: str) -> None:
    from engine.store.postgres import PostgresStore

    per_second, runs = 8, 40
    live = LiveTarget()
    with live as target:
        root = _limited(write_project(tmp_path, live.url, FLOW), f"{{perSecond: {per_second}}}")
        plan = compile_project(root)
        stores = [PostgresStore(postgres_url) for _ in range(3)]
        for store in stores:
            await store.open()
        replicas = [Runtime(store, plan, poll=0.05, worker_id=f"r{i}")
                    for i, store in enumerate(stores)]
        for replica in replicas:
            await replica.start()
        try:
            for n in range(runs):
                await replicas[n % 3].ingest(plan.flows["orders"], {"n": n},
                                             EventMeta(f"e{n}", "order.requested", "t"))
            await until(lambda: len(target.to("/orders")) >= runs, 60)
        finally:
            for replica in replicas:
                await replica.stop(grace=2)
            for store in stores:
                await store.close()
    seen = sorted(r.at for r in target.to("/orders"))
    assert len(seen) == runs
    # no second gets more than the rate plus what the bucket held (a second's worth) and the
    # slices in hand; and together they took as long as the shared rate says, not a third of it
    per_window = collections.Counter(math.floor(t) for t in seen)
    assert max(per_window.values()) <= 2 * per_second + 4, per_window
    assert seen[-1] - seen[0] >= (runs - per_second) / per_second - 1, (seen[0], seen[-1])


@pytest.mark.parametrize(("limit", "message"), [
    ("{burst: 4}", "a rateLimit needs perSecond, perHour or perDay"),
    ("{perHour: 100, perDay: 10}", "perHour (100) is more than perDay (10)"),
    ("{perHour: 0}", "perHour"),
])
def test_quota_mistakes_are_located_compile_errors(tmp_path: Path, limit: str,
                                                   message: str) -> None:
    root = _limited(write_project(tmp_path, "http://127.0.0.1:9", FLOW), limit)
    with pytest.raises(DefinitionErrors) as caught:
        compile_project(root)
    text = str(caught.value)
    assert message in text and "systems.yaml" in text


def test_windows_are_clock_hours_and_utc_days() -> None:
    assert window("hour", 7199.5) == 3600.0
    assert window("day", 86400 * 3 + 5) == 86400 * 3
    assert window("second", 12.7) == 12.0


async def test_the_calls_left_are_a_metric(tmp_path: Path) -> None:
    from engine.server.metrics import Metrics

    metrics = Metrics()
    async with SQLiteStore(tmp_path / "m.db") as store:
        await metrics.read_store(store, {("erp", "hour"): 2, ("erp", "day"): 40})
    text = metrics.render().decode()
    assert 'syncline_quota_remaining{period="hour",system="erp"} 2.0' in text
    assert 'syncline_quota_remaining{period="day",system="erp"} 40.0' in text


async def test_the_shared_bucket_refills_at_its_rate_and_is_never_overdrawn(
        any_store: Any) -> None:
    ledger = QuotaLedger(any_store)
    draws = await asyncio.gather(*(ledger.draw("erp", 10.0, 20.0, 4, 100.0) for _ in range(8)))
    assert draws.count(0.0) == 5          # the full bucket (20) held five slices of 4
    assert all(w == pytest.approx(0.4) for w in draws if w)   # 4 more tokens: 0.4 s at 10/s
    assert await ledger.draw("erp", 10.0, 20.0, 4, 100.2) == pytest.approx(0.2)
    assert await ledger.draw("erp", 10.0, 20.0, 4, 100.4) == 0.0   # refilled by the clock
    assert await ledger.draw("erp", 10.0, 20.0, 4, 100.4) > 0
