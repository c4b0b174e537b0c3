"""Circuit breakers (issue 18): a System failing on demand opens its breaker, receives no call
while it is open, gets one probe after `openFor`; runs wait (CIRCUIT_OPEN) and never spend
their retries or dead-letter because of it. The state is shared by replicas on one store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from incidentkit import CountingSystem, incident_project, until
from serverkit import LiveServer
from test_incidents_pause import deliver, run

from engine.compiler import compile_project
from engine.errors import CallError, CallHeld
from engine.runtime.gates import Gates
from engine.server.times import seconds
from engine.store import open_store
from engine.store.controls import Controls

BREAKER = "{failureRate: 0.5, minCalls: 4, window: 1m, openFor: 2s}"
# Opens on two failed calls: before any run can spend its third and last attempt (the policy's
# maxAttempts), however the deliveries spread out. With minCalls 4, on a loaded machine the
# first run made its three attempts before the next delivery arrived and was dead-lettered.
OPENS_EARLY = "{failureRate: 0.5, minCalls: 2, window: 1m, openFor: 2s}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def erp() -> Iterator[CountingSystem]:
    with CountingSystem() as system:
        yield system


def circuit(live: LiveServer) -> dict[str, Any]:
    with live.client() as http:
        found: dict[str, Any] = http.get("/api/v1/status").json()["circuits"].get("erp", {})
        return found


def test_an_open_circuit_sends_nothing_then_one_probe_and_runs_never_dead_letter(
    tmp_path: Path, erp: CountingSystem
) -> None:
    project = incident_project(tmp_path, erp.url, breaker=OPENS_EARLY)
    erp.failing = 503
    with LiveServer(project, poll=0.05) as live, live.client() as http:
        runs = [deliver(http, f"b-{n}") for n in range(6)]
        until(lambda: circuit(live).get("state") == "open")
        assert 'syncline_circuit_state{system="erp"} 1.0' in http.get("/metrics").text
        time.sleep(0.2)  # calls admitted before it opened have landed
        received = len(erp.calls)
        opened = circuit(live)
        time.sleep(max(0.0, seconds(opened["until"]) - time.time() - 0.3))
        assert len(erp.calls) == received  # nothing while open
        held = [run(http, r) for r in runs]
        assert {r["state"] for r in held} == {"waiting"}
        assert "CIRCUIT_OPEN" in {(r["reason"] or {}).get("code") for r in held}

        until(lambda: len(erp.calls) > received)  # the probe, which fails: open again
        until(lambda: circuit(live).get("state") == "open"
              and seconds(circuit(live)["until"]) > time.time())
        time.sleep(0.3)
        assert len(erp.calls) == received + 1  # one probe, not one call per waiting run

        erp.failing = None  # the System is back: the next probe closes the circuit
        until(lambda: all(run(http, r)["state"] == "succeeded" for r in runs), timeout=30)
        assert circuit(live) == {}
        assert 'syncline_circuit_state{system="erp"} 0.0' in http.get("/metrics").text
        for run_id in runs:  # at most the policy's 3 attempts each: held calls spent none
            [step] = run(http, run_id)["steps"]
            assert len(step["attempts"]) <= 3


def test_without_enough_calls_the_circuit_stays_closed(tmp_path: Path, erp: CountingSystem) -> None:
    project = incident_project(tmp_path, erp.url, breaker=BREAKER)
    erp.failing = 503
    with LiveServer(project, poll=0.05) as live, live.client() as http:
        run_id = deliver(http, "few-1")  # 3 attempts, below minCalls 4
        until(lambda: run(http, run_id)["state"] == "dead-lettered")
        assert circuit(live) == {}
        assert len(erp.calls) == 3


@pytest.mark.anyio
@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_replicas_share_the_circuit_and_only_one_sends_the_probe(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    project = incident_project(tmp_path, "http://127.0.0.1:9", breaker=BREAKER)
    plan = compile_project(project, environment="dev")
    erp = plan.system("erp")
    database = None if store == "sqlite" else request.getfixturevalue("postgres_url")
    now = [1000.0]
    async with open_store(database, project) as one, open_store(database, project) as two:
        first = Gates(Controls(one), lambda: now[0])
        second = Gates(Controls(two), lambda: now[0])
        down = CallError("erp is down", status=503, retryable=True)
        for _ in range(4):
            await first.record(erp, down, probe=False)
        assert first.circuit_state("erp") == "open"
        await second.refresh()  # the other replica stops calling too
        with pytest.raises(CallHeld) as held:
            await second.admit(erp)
        assert held.value.code == "CIRCUIT_OPEN" and held.value.until == 1002.0
        now[0] = 1002.5  # openFor passed: one probe among the replicas
        assert await second.admit(erp) is True
        with pytest.raises(CallHeld):
            await first.admit(erp)
        await second.record(erp, None, probe=True)  # it succeeded: closed for everyone
        await first.refresh()
        assert first.circuit_state("erp") == "closed"
        assert await first.admit(erp) is False
