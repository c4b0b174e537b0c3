"""A run's history is never rewritten (SPEC section 4): resume, retry, cancel and replay keep
every earlier attempt (each with its generation), every reason the run stopped for, each
corrected `data` and which data each generation ran with, and the audit entries of the
actions. On both stores, through the runtime's operator actions, the admin API of a real server
and `syncline runs show`; times in the JSON are ISO 8601 UTC (SPEC section 6)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from faults import FaultyStore
from runtime_kit import (
    LiveTarget,
    Target,
    detail_json,
    flow,
    in_state,
    meta,
    running,
    until,
    write_project,
)

from engine.cli import main
from engine.compiler import compile_project
from engine.runtime import Runtime
from engine.store import Store
from engine.store.base import Checkpoint
from tests.serverkit import LiveServer

pytestmark = pytest.mark.anyio
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def live() -> Iterator[tuple[Target, str]]:
    server = LiveTarget()
    with server as target:
        yield target, server.url


ORDERS = flow(
    "orders",
    """
    - id: check
      validate:
        input: data
        rules:
          - {assert: "data.amount > `0`", code: BAD_AMOUNT, message: amount must be positive}
    - id: erp
      needs: [check]
      call: {system: erp, operation: create, body: "{amount: data.amount}"}
      retry: fast
""",
)


async def settle(runtime: Runtime, run_id: str, state: str) -> None:
    run = await runtime.wait(run_id, 30)
    assert run.state == state, (run.state, run.reason)


def attempts_of(detail: dict[str, Any], step: str) -> list[tuple[int, str]]:
    [found] = [s for s in detail["steps"] if s["id"] == step]
    return [(a["generation"], a["outcome"]) for a in found["attempts"]]


async def test_resume_retry_cancel_and_replay_keep_every_generation(
        any_store: Store, tmp_path: Path, live: tuple[Target, str]) -> None:
    target, url = live
    plan = compile_project(write_project(tmp_path, url, ORDERS))
    runtime = Runtime(any_store, plan, poll=0.05)
    await runtime.start()
    try:
        accepted = await runtime.ingest(plan.flows["orders"], {"amount": 0}, meta(1))
        run_id = accepted.run_id
        await settle(runtime, run_id, "parked")                      # generation 0: BAD_AMOUNT
        target.script["/orders"] = [503, 503, 503, 503]
        await runtime.operations.resume(run_id, {"amount": 5}, actor="alice",
                                        note="amount was missing")
        await settle(runtime, run_id, "dead-lettered")               # generation 1: 4 x 503
        target.script["/orders"] = [422]
        await runtime.operations.retry(run_id, actor="bob", note="ERP is back")
        await settle(runtime, run_id, "parked")                      # generation 2: 422
        await runtime.operations.cancel(run_id, actor="carol", note="customer withdrew")
        await settle(runtime, run_id, "cancelled")                   # generation 3
        before = await detail_json(runtime, run_id)
        replay = await runtime.operations.replay(run_id, actor="dave")
        await settle(runtime, replay.id, "parked")                   # the event's own data
        detail = await detail_json(runtime, run_id)
    finally:
        await runtime.stop()

    history = detail["history"]
    assert [(g["generation"], g["action"], g["actor"]) for g in history["generations"]] == [
        (0, "accepted", None), (1, "resume", "alice"), (2, "retry", "bob"), (3, "cancel", "carol"),
    ]
    assert [g["data"]["source"] for g in history["generations"]] == [
        "event", "correction", "correction", "correction"]
    assert history["generations"][1]["note"] == "amount was missing"
    [correction] = history["corrections"]
    assert (correction["correction"], correction["generation"], correction["data"]) == (
        1, 1, {"amount": 5})
    assert history["generations"][3]["data"]["sha256"] == correction["sha256"]
    # every attempt of every generation, each with its generation
    assert attempts_of(detail, "check") == [(0, "fail"), (1, "ok")]
    erp = attempts_of(detail, "erp")
    assert [g for g, _ in erp] == [1, 1, 1, 1, 2] and erp[-1][1] == "status"
    per_generation = [[a["step"] for a in g["attempts"]] for g in history["generations"]]
    assert per_generation == [["check"], ["check", "erp", "erp", "erp", "erp"], ["erp"], []]
    # every reason it stopped for, with its generation and state
    assert [(r["generation"], r["state"], r["code"]) for r in history["reasons"]] == [
        (0, "parked", "BAD_AMOUNT"), (1, "dead-lettered", "RETRIES_EXHAUSTED"),
        (2, "parked", "HTTP_422"), (3, "pending", "CANCELLED"), (3, "cancelled", "CANCELLED"),
    ]
    # the audit entries of the actions, in the generation each began (replay: the last)
    actions = [[e["action"] for e in g["audit"]] for g in history["generations"]]
    assert actions[1] == ["resume"] and actions[2] == ["retry"]
    assert actions[3][0] == "cancel" and actions[3][-1] == "replay"
    assert [e["action"] for e in detail["audit"]][0] == "replay"
    # the replay changed nothing of the old run's history
    assert before["history"]["reasons"] == history["reasons"]
    assert before["steps"] == detail["steps"] and detail["links"]["replayed_by"] == [replay.id]
    # times are ISO 8601 UTC
    assert ISO.fullmatch(detail["created_at"]) and ISO.fullmatch(detail["updated_at"])
    assert all(ISO.fullmatch(r["at"]) for r in history["reasons"])
    first = detail["steps"][0]["attempts"][0]
    assert ISO.fullmatch(first["started_at"]) and first["duration_ms"] >= 0


PARKING = """\
apiVersion: syncline/v1
kind: Flow
metadata: {name: account-sync, owner: qa}
spec:
  trigger: {event: com.acme.account.changed}
  idempotencyKey: data.id
  steps:
    - id: hold
      when: "data.hold"
      park: {code: NEEDS_REVIEW, message: a person must look}
    - id: note
      set: {seen: data.id}
"""

PROJECT = """\
apiVersion: syncline/v1
kind: Project
metadata: {name: history-test}
spec:
  paths: [flows]
  environments: {dev: {}}
"""


def wait_state(http: Any, run_id: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30  # generous: the machine may be loaded
    while (found := http.get(f"/api/v1/runs/{run_id}").json())["state"] != state:
        assert time.monotonic() < deadline, found
        time.sleep(0.05)
    return dict(found)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_admin_api_and_runs_show_give_the_whole_history(
        project: Callable[[dict[str, str]], Path], request: pytest.FixtureRequest,
        backend: str) -> None:
    root = project({"syncline.yaml": PROJECT, "flows/sync.yaml": PARKING})
    database = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    with LiveServer(root, database=database) as live, live.client() as http:
        event = {"specversion": "1.0", "id": "ev-1", "type": "com.acme.account.changed",
                 "source": "tests", "data": {"id": "c1", "hold": True}}
        answer = http.post("/events", content=json.dumps(event),
                           headers={"content-type": "application/cloudevents+json"})
        run_id = answer.json()["runs"][0]["run_id"]
        wait_state(http, run_id, "parked")
        still = {"id": "c1", "hold": True, "fixed": 1}
        http.post(f"/api/v1/runs/{run_id}/resume",
                  json={"data": still, "reason": "first fix"}).raise_for_status()
        wait_state(http, run_id, "parked")  # parked again, on the corrected data
        http.post(f"/api/v1/runs/{run_id}/resume",
                  json={"data": {"id": "c1", "hold": False}}).raise_for_status()
        detail = wait_state(http, run_id, "succeeded")
        listed = http.get("/api/v1/runs").json()["runs"][0]
        args = ["runs", "show", run_id, "--url", live.url]
        text = CliRunner().invoke(main, args, catch_exceptions=False).output
        shown = CliRunner().invoke(main, [*args, "--format", "json"]).output
    history = detail["history"]
    assert [g["data"].get("correction") for g in history["generations"]] == [None, 1, 2]
    assert [c["data"] for c in history["corrections"]] == [still, {"id": "c1", "hold": False}]
    assert [(r["generation"], r["code"]) for r in history["reasons"]] == [
        (0, "NEEDS_REVIEW"), (1, "NEEDS_REVIEW")]
    hold = [s for s in detail["steps"] if s["id"] == "hold"][0]
    assert [(a["generation"], a["outcome"]) for a in hold["attempts"]] == [
        (0, "park"), (1, "park")]
    assert hold["state"] == "skipped" and detail["generation"] == 2
    assert ISO.fullmatch(listed["created_at"]) and listed["generation"] == 2
    assert all(ISO.fullmatch(e["at"]) for e in detail["audit"])
    assert json.loads(shown) == detail
    assert "generation 1: resume by local (first fix)" in text
    assert "on correction 2" in text and "parked: NEEDS_REVIEW at step hold" in text
    assert f"correction 1 by local at {history['corrections'][0]['at']}" in text


async def test_the_store_refuses_to_rewrite_history(any_store: Store) -> None:
    from engine.errors import StoreError
    from engine.store import EventRecord, NewRun, Reason, StateChange

    run = NewRun(id="r1", flow="f", flow_version=1, plan_digest="p", key="r1",
                 ordering_key=None, correlation_id="r1")
    await any_store.accept(EventRecord(id="e1", type="t", source="s", data={}), [run])
    await any_store.set_run_state("r1", StateChange(
        "parked", reason=Reason("NEEDS_REVIEW", None, "look")))
    await any_store.set_run_state("r1", StateChange("pending", action="resume"))
    for sql in ("UPDATE run_reasons SET state = 'x'", "DELETE FROM run_generations"):
        with pytest.raises(StoreError, match="append-only"):
            await any_store.transact([(sql, ())])
    [rows] = await any_store.transact(
        [("SELECT count(*) FROM run_reasons WHERE run_id = %s", ("r1",))], read_only=True)
    assert rows[0] == [(1,)]


def test_a_run_s_new_state_is_written_after_the_records_of_the_steps_that_ended_with_it(
        tmp_path: Path) -> None:
    """Two steps ending together: their checkpoints may be written concurrently (on PostgreSQL,
    separate transactions), but the one carrying the run's new state only after the other, so
    nobody sees the run parked without every record of it (a resume would reset too little)."""
    steps = """
        - id: hold
          park: {code: NEEDS_REVIEW, message: a person must look}
        - id: note
          set: {seen: data.id}
    """
    root = write_project(tmp_path, "http://127.0.0.1:9", flow("both", steps))
    written: list[str | None] = []

    async def scenario() -> None:
        async with running(root, wrap=FaultyStore) as (runtime, plan):
            store = runtime.store
            checkpoint = store.checkpoint

            async def slow_steps(cp: Checkpoint) -> Any:
                if cp.run_state is None:  # a step's record alone: committed late
                    await asyncio.sleep(0.2)
                found = await checkpoint(cp)
                written.append(cp.run_state)
                return found

            store.checkpoint = slow_steps  # type: ignore[method-assign]
            run_id = (await runtime.ingest(plan.flows["both"], {"id": "c1"}, meta(1))).run_id
            await until(lambda: in_state(runtime, run_id, "parked"))
            assert set(await store.get_steps(run_id)) == {"hold", "note"}

    asyncio.run(scenario())
    assert written == [None, "parked"]
