"""The `schedule` trigger at run time: one run per tick keyed by the tick time, one catch-up run
after downtime, no second run for a tick accepted just before a crash, and one run per tick
between two replicas on PostgreSQL. Time is an injected clock: nothing waits for a real minute."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import subprocess
import sys

from clockkit import JumpingClock, SetClock
from runtime_kit import detail_json

from engine.compiler import compile_project
from engine.compiler.triggers import CompiledSchedule
from engine.runtime import Runtime
from engine.runtime.schedules import Schedules, Timed
from engine.store import SQLiteStore, Store
from engine.store.base import RunQuery
from engine.store.postgres import PostgresStore

FLOW = """\
    apiVersion: syncline/v1
    kind: Flow
    metadata: {name: nightly}
    spec:
      trigger: {schedule: {cron: "*/5 * * * *", timezone: Europe/Berlin}}
      steps: [{id: s, set: {tick: data.tick}}]
"""


def at(hour: int, minute: int, second: int = 0) -> float:
    return dt.datetime(2026, 12, 4, hour, minute, second, tzinfo=dt.UTC).timestamp()


async def _runs(store: Store) -> list[tuple[str, str]]:
    runs = await store.list_runs(RunQuery(flow="nightly", limit=100))
    return sorted((r.key, r.state) for r in runs)


def test_one_run_per_tick_and_one_catch_up_after_downtime(project) -> None:
    root = project({"flows/f.yaml": FLOW})
    plan = compile_project(root, environ={})
    clock = SetClock(at(10, 2))

    async def scenario() -> None:
        async with SQLiteStore(root / "s.db") as store:
            runtime = Runtime(store, plan, clock=clock, poll=0.02)
            await runtime.start()
            assert await runtime.schedules.fire_due() == []  # first sight: starts at the next tick
            clock.t = at(10, 5)
            [first] = await runtime.schedules.fire_due()
            assert first.status == "accepted"
            clock.t = at(10, 9, 59)
            assert await runtime.schedules.fire_due() == []
            clock.t = at(13, 47, 30)  # down from 10:10 to 13:45: 44 ticks missed
            [catch_up] = await runtime.schedules.fire_due()
            assert catch_up.status == "accepted"
            assert await runtime.schedules.fire_due() == []
            assert runtime.schedules.delay() == 30.0  # 13:50 is 150 s away: look again in 30 s
            clock.t = at(13, 49, 50)
            assert runtime.schedules.delay() == 10.0
            assert await runtime.idle(10)
            detail = await detail_json(runtime, catch_up.run_id)
            assert detail is not None and detail["steps"][0]["output"] == {
                "tick": "2026-12-04T13:45:00Z"
            }
            await runtime.stop()
            assert await _runs(store) == [
                ("2026-12-04T10:05:00Z", "succeeded"),
                ("2026-12-04T13:45:00Z", "succeeded"),
            ]

    asyncio.run(scenario())


def test_the_runtime_loop_fires_ticks_on_its_clock(project) -> None:
    root = project({"flows/f.yaml": FLOW})
    plan = compile_project(root, environ={})
    clock = JumpingClock(at(10, 2))  # each sleep until the next tick lands on it

    async def scenario() -> None:
        async with SQLiteStore(root / "s.db") as store:
            runtime = Runtime(store, plan, clock=clock, poll=0.02)
            await runtime.start()
            for _ in range(200):
                if len(await _runs(store)) >= 3:
                    break
                await asyncio.sleep(0.02)
            await runtime.stop()
            keys = [key for key, _ in await _runs(store)]
            assert keys[:3] == [
                "2026-12-04T10:05:00Z", "2026-12-04T10:10:00Z", "2026-12-04T10:15:00Z"
            ]

    asyncio.run(scenario())


def test_a_changed_cron_starts_at_its_next_tick(project) -> None:
    root = project({"flows/f.yaml": FLOW})
    plan = compile_project(root, environ={})
    (root / "flows/f.yaml").write_text(
        (root / "flows/f.yaml").read_text().replace("*/5 * * * *", "0 * * * *")
    )
    hourly = compile_project(root, environ={})
    clock = SetClock(at(10, 2))

    async def scenario() -> None:
        async with SQLiteStore(root / "s.db") as store:
            runtime = Runtime(store, plan, clock=clock)
            await runtime.schedules.fire_due()
            await runtime.swap_plan(hourly)
            clock.t = at(12, 30)
            assert await runtime.schedules.fire_due() == []  # no catch-up for a new schedule
            clock.t = at(13, 0)
            [run] = await runtime.schedules.fire_due()
            assert run.status == "accepted"

    asyncio.run(scenario())


CRASHING = """
import asyncio, os, signal, sys
from pathlib import Path
from engine.compiler import compile_project
from engine.runtime import Runtime
from engine.runtime.schedules import Schedules, flow_ticks
from engine.store import SQLiteStore

async def main(root, now):
    plan = compile_project(root, environ={})
    async with SQLiteStore(root / "s.db") as store:
        runtime = Runtime(store, plan)
        async def ingest(flow, data, event_id, when):
            acceptance = await runtime.timers._ingest_timed(flow, data, event_id, when)
            print(acceptance.status, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # accepted, not yet remembered as fired
        timed = flow_ticks(plan, ingest)
        await Schedules(store, lambda: timed, clock=lambda: now).fire_due()

asyncio.run(main(Path(sys.argv[1]), float(sys.argv[2])))
"""


def test_a_tick_accepted_before_a_crash_does_not_run_twice(project) -> None:
    root = project({"flows/f.yaml": FLOW})
    plan = compile_project(root, environ={})

    async def baseline() -> None:
        async with SQLiteStore(root / "s.db") as store:
            await Runtime(store, plan, clock=SetClock(at(10, 2))).schedules.fire_due()

    asyncio.run(baseline())
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING, str(root), str(at(10, 5))],
        capture_output=True, text=True, timeout=60,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert crashed.stdout.split() == ["accepted"]

    async def restart() -> None:
        async with SQLiteStore(root / "s.db") as store:
            clock = SetClock(at(10, 5, 1))
            runtime = Runtime(store, plan, clock=clock)
            [again] = await runtime.schedules.fire_due()
            assert again.status == "duplicate"
            clock.t = at(10, 7)
            assert await runtime.schedules.fire_due() == []  # remembered now
            assert [k for k, _ in await _runs(store)] == ["2026-12-04T10:05:00Z"]

    asyncio.run(restart())


def test_two_replicas_on_postgres_run_each_tick_once(project, postgres_url: str) -> None:
    root = project({"flows/f.yaml": FLOW})
    plan = compile_project(root, environ={})
    clock = SetClock(at(10, 2))

    async def scenario() -> None:
        async with PostgresStore(postgres_url) as one, PostgresStore(postgres_url) as two:
            replicas = [Runtime(store, plan, clock=clock) for store in (one, two)]
            await asyncio.gather(*(r.schedules.fire_due() for r in replicas))
            for minute in (5, 10, 15):
                clock.t = at(10, minute)
                fired = await asyncio.gather(*(r.schedules.fire_due() for r in replicas))
                statuses = sorted(a.status for batch in fired for a in batch)
                assert statuses == ["accepted", "duplicate"]
            clock.t = at(12, 0, 30)  # both replicas were down: one catch-up between them
            fired = await asyncio.gather(*(r.schedules.fire_due() for r in replicas))
            assert sorted(a.status for batch in fired for a in batch) == ["accepted", "duplicate"]
            assert [k for k, _ in await _runs(one)] == [
                "2026-12-04T10:05:00Z", "2026-12-04T10:10:00Z", "2026-12-04T10:15:00Z",
                "2026-12-04T12:00:00Z",
            ]

    asyncio.run(scenario())


def test_a_tick_that_fails_is_logged_and_fired_again(tmp_path, caplog) -> None:
    clock = SetClock(at(10, 2))
    attempts: list[str] = []

    async def fire(tick: str) -> str:
        attempts.append(tick)
        if len(attempts) == 1:
            raise RuntimeError("a bug in a tick")
        return "fired"

    async def scenario() -> None:
        async with SQLiteStore(tmp_path / "s.db") as store:
            item = Timed("schedule:x", CompiledSchedule("*/5 * * * *", "UTC"), fire)
            loops = 0

            async def sleep(seconds: float) -> None:
                nonlocal loops
                loops += 1
                clock.t = at(10, 5)  # the tick after the first sight
                await asyncio.sleep(0)

            schedules = Schedules(store, lambda: [item], clock=clock, sleep=sleep)
            task = asyncio.create_task(schedules.run())
            while loops < 4:
                await asyncio.sleep(0.01)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert attempts == ["2026-12-04T10:05:00Z", "2026-12-04T10:05:00Z"]
            assert (await store.get_trigger_state("schedule:x"))["tick"] == at(10, 5)

    asyncio.run(scenario())
    assert "firing schedule ticks failed unexpectedly" in caplog.text
