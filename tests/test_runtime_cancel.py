"""Cancelling runs that are executing or waiting, and compensation retries that wait in the store
(not in a worker), through a real store and a real local HTTP target."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults import FaultyStore
from runtime_kit import (
    FakeClock,
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

from engine.runtime.waiting import STOPPED_STATES
from engine.store import SQLiteStore
from engine.store.audit import AuditQuery
from engine.store.base import (
    CANCELLED,
    Checkpoint,
    EventRecord,
    NewRun,
    Reason,
    StateChange,
    StepRecord,
)

pytestmark = pytest.mark.anyio

PATIENT = """\
apiVersion: syncline/v1
kind: RetryPolicy
metadata: {name: patient, owner: qa}
spec:
  maxAttempts: 3
  backoff: {initial: 2s, multiplier: 1, max: 2s, jitter: none}
  retryOn: [timeout, network, "429", "5xx"]
  onExhausted: park
---
apiVersion: syncline/v1
kind: RetryPolicy
metadata: {name: glacial, owner: qa}
spec:
  maxAttempts: 3
  backoff: {initial: 60s, multiplier: 1, max: 60s, jitter: none}
  retryOn: ["5xx"]
  onExhausted: park
---
apiVersion: syncline/v1
kind: RetryPolicy
metadata: {name: picky, owner: qa}
spec:
  maxAttempts: 3
  backoff: {initial: 10ms, multiplier: 1, max: 10ms, jitter: none}
  retryOn: ["429"]
  onError: {"409": succeed}
  onExhausted: park
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def live() -> Iterator[tuple[Target, str]]:
    server = LiveTarget()
    with server as target:
        yield target, server.url


def project(tmp_path: Path, url: str, flows: str) -> Path:
    return write_project(tmp_path, url, flows, {"flows/policies.yaml": PATIENT})


LONG = flow(
    "long",
    """
    - id: one
      call: {system: erp, operation: create, body: "{step: 'one'}"}
      compensate: {system: erp, operation: cancel, params: {id: steps.one.body.id}}
    - id: two
      needs: [one]
      call: {system: erp, operation: slow, body: "{step: 'two'}"}
      compensate: {system: erp, operation: cancel, params: {id: steps.two.body.id}}
    - id: three
      needs: [two]
      call: {system: erp, operation: create, body: "{step: 'three'}"}
      compensate: {system: erp, operation: cancel, params: {id: steps.three.body.id}}
""",
)
SHORT = LONG.split("    - id: three")[0]  # `two` is the last step: its checkpoint ends the run


@pytest.mark.parametrize("flows", [LONG, SHORT], ids=["more-steps-follow", "last-step"])
async def test_cancel_of_a_running_run_stops_it_after_the_step_in_flight(tmp_path, live, flows):
    target, url = live
    target.delay["/slow"] = 0.5
    async with running(project(tmp_path, url, flows)) as (runtime, plan):
        run_id = (await runtime.ingest(plan.flows["long"], {}, meta(1))).run_id

        async def two_in_flight() -> bool:
            return bool(target.to("/slow"))

        await until(two_in_flight)
        requested = await runtime.operations.cancel(run_id, actor="alice")
        run = await runtime.wait(run_id, 10)
        detail = await detail_json(runtime, run_id)
        audit = await runtime.store.audit_log(AuditQuery(run_id=run_id))
    assert (requested.state, requested.reason.code) == ("running", CANCELLED)
    assert run.state == "cancelled" and run.reason.message == "cancelled by alice"
    # `two` finished and was checkpointed; nothing after it started; both were undone, last first
    assert [r.body["step"] for r in target.to("/orders")] == ["one"]
    assert {s["id"]: s["state"] for s in detail["steps"]} == {
        "one": "compensated",
        "two": "compensated",
    }
    cancels = [r.path for r in target.requests if r.path.endswith("/cancel")]
    assert cancels == ["/orders/X2/cancel", "/orders/X1/cancel"]
    assert [(a["actor"], a["action"]) for a in audit[:2]] == [
        ("runtime", "cancelled"),
        ("alice", "cancel"),
    ]
    assert audit[0]["detail"]["compensated"] == ["two", "one"]


RETRYING = flow(
    "retrying",
    """
    - id: one
      call: {system: erp, operation: create, body: data}
      retry: glacial
""",
)


async def test_cancel_of_a_waiting_run_ends_it_at_once(tmp_path, live):
    target, url = live
    target.script["/orders"] = [503]
    async with running(project(tmp_path, url, RETRYING)) as (runtime, plan):
        run_id = (await runtime.ingest(plan.flows["retrying"], {"n": 1}, meta(1))).run_id

        await until(lambda: in_state(runtime, run_id, "waiting"))
        started = time.monotonic()
        await runtime.operations.cancel(run_id)
        run = await runtime.wait(run_id, 5)
    assert run.state == "cancelled" and time.monotonic() - started < 5  # not the 60 s backoff
    assert len(target.to("/orders")) == 1


async def test_on_a_virtual_clock_a_60_s_backoff_passes_when_the_test_says(tmp_path, live):
    """The runtime reads time only from its clock: the retry is due 60 virtual seconds later,
    and the run finishes as soon as the test moves the clock, without waiting for real."""
    target, url = live
    target.script["/orders"] = [503]
    clock = FakeClock()
    root = project(tmp_path, url, RETRYING)
    async with (
        asyncio.timeout(30),  # a guard: on a virtual clock a wrong wait would never end
        running(root, clock=clock, rng=random.Random(7)) as (runtime, plan),
    ):
        run_id = (await runtime.ingest(plan.flows["retrying"], {"n": 1}, meta(1))).run_id

        await until(lambda: in_state(runtime, run_id, "waiting"))
        run = await runtime.store.get_run(run_id)
        assert run is not None and run.next_attempt_at == clock.now() + 60  # glacial: 60 s

        await clock.advance_until(lambda: in_state(runtime, run_id, "succeeded"), step=5)
        final = await runtime.wait(run_id, 5)
    assert final.state == "succeeded"
    assert len(target.to("/orders")) == 2


SAGA = flow(
    "saga",
    """
    - id: first
      call: {system: erp, operation: create, body: "{step: 'first'}"}
      compensate: {system: erp, operation: cancel, params: {id: steps.first.body.id}}
      retry: patient
    - id: check
      validate:
        input: data
        rules:
          - {assert: "data.ok", code: NOT_OK, message: the order is not ok}
""",
    extra="  onFailure: compensate\n",
)


async def test_a_compensation_retry_waits_in_the_store_and_holds_no_worker(tmp_path, live):
    """One worker. The compensation call fails once (503) and is due again 2 s later on the
    runtime's (virtual) clock: meanwhile the run is `waiting` in the store and the only worker
    executes another run; moving the clock on finishes the compensation."""
    target, url = live
    target.script["/orders/X1/cancel"] = [503]
    clock = FakeClock()
    root = project(tmp_path, url, SAGA)
    async with (
        asyncio.timeout(30),  # a guard: on a virtual clock a wrong wait would never end
        running(root, concurrency=1, clock=clock) as (runtime, plan),
    ):
        saga = plan.flows["saga"]
        failing = (await runtime.ingest(saga, {"ok": False}, meta(1))).run_id

        await until(lambda: in_state(runtime, failing, "waiting"))
        run = await runtime.store.get_run(failing)
        assert run is not None and run.reason is not None and run.reason.code == "NOT_OK"
        assert run.next_attempt_at == clock.now() + 2  # patient: 2 s
        other = (await runtime.ingest(saga, {"ok": True}, meta(2))).run_id
        assert (await runtime.wait(other, 1.5)).state == "succeeded"  # while it waited
        assert len(target.to("/orders/X1/cancel")) == 1

        await clock.advance_until(lambda: in_state(runtime, failing, *STOPPED_STATES))
        final = await runtime.wait(failing, 10)
        steps = await runtime.store.get_steps(failing)
    assert (final.state, final.reason.code) == ("compensated", "NOT_OK")
    calls = target.to("/orders/X1/cancel")
    assert len(calls) == 2 and calls[0].key == calls[1].key
    outcomes = [a.outcome for a in steps["first"].attempts]
    assert outcomes == ["ok", "compensate:status", "compensated"]


PICKY_SAGA = SAGA.replace("saga", "picky").replace("retry: patient", "retry: picky")


@pytest.mark.parametrize(
    ("answer", "state", "code", "outcomes"),
    [
        (409, "compensated", "NOT_OK", ["ok", "compensated"]),  # onError 409: succeed
        (503, "failed", "COMPENSATION_FAILED", ["ok", "compensate:status"]),  # not in retryOn
    ],
)
async def test_a_compensation_call_follows_the_steps_retry_policy(
    tmp_path, live, answer, state, code, outcomes
):
    """The compensation of a step is decided by the step's RetryPolicy like any call: `onError`
    and `retryOn` apply, not a fixed "retry 429 and 5xx"."""
    target, url = live
    target.script["/orders/X1/cancel"] = [answer]
    async with running(project(tmp_path, url, PICKY_SAGA)) as (runtime, plan):
        run_id = (await runtime.ingest(plan.flows["picky"], {"ok": False}, meta(1))).run_id
        final = await runtime.wait(run_id, 10)
        steps = await runtime.store.get_steps(run_id)
    assert (final.state, final.reason.code) == (state, code)
    assert len(target.to("/orders/X1/cancel")) == 1
    assert [a.outcome for a in steps["first"].attempts] == outcomes


async def test_a_checkpoint_leaves_a_cancel_request_standing(tmp_path: Path):
    """Store level: while a running run has a cancel request, a checkpoint writes its step but
    not a state outside the ends of a compensation, and answers the request."""
    async with SQLiteStore(tmp_path / "s.db") as store:
        event = EventRecord("e1", "t", "s", {})
        await store.accept(event, [NewRun("r1", "f", 1, "d", "k1", None, "c")])
        await store.claim("w", 1, time.time(), 30)
        reason = Reason(CANCELLED, None, "cancelled by bob")
        await store.set_run_state("r1", StateChange("running", ("running",), reason))
        step = StepRecord("r1", "a", "succeeded", {"x": 1}, updated_at=time.time())
        assert await store.checkpoint(Checkpoint("r1", step, "succeeded")) == reason
        run = await store.get_run("r1")
        assert run is not None and (run.state, run.reason) == ("running", reason)
        assert "a" in await store.get_steps("r1")
        assert await store.checkpoint(Checkpoint("r1", None, "cancelled", reason=reason)) == reason
        run = await store.get_run("r1")
        assert run is not None and run.state == "cancelled"
        assert await store.checkpoint(Checkpoint("r1", None)) is None


async def test_cancel_retries_a_state_race_but_not_a_store_failure(tmp_path, live):
    from engine.errors import StateConflict, StoreError, UsageError

    target, url = live
    target.script["/orders"] = [503]
    root = project(tmp_path, url, RETRYING)
    async with running(root, wrap=FaultyStore) as (runtime, plan):
        store = runtime.store
        assert isinstance(store, FaultyStore)
        run_id = (await runtime.ingest(plan.flows["retrying"], {"n": 1}, meta(1))).run_id
        race = f"run {run_id!r} is 'running', not 'waiting'"
        store.fail("set_run_state", lambda: StateConflict(race))
        with pytest.raises(UsageError, match="keeps changing state"):
            await runtime.operations.cancel(run_id)
        assert store.calls["set_run_state"] == 3  # read again and retried
        store.fail("set_run_state", StoreError("the SQLite store could not commit: disk I/O"))
        with pytest.raises(StoreError, match="disk I/O"):  # said as it is, at once
            await runtime.operations.cancel(run_id)
        assert store.calls["set_run_state"] == 1
        store.heal()
        assert (await runtime.operations.cancel(run_id)).id == run_id  # the real store behind it
