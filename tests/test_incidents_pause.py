"""Pause switches (issue 18): a paused flow accepts and stores deliveries but starts no run; a
paused System receives no call while runs needing it wait; both are shared through the store,
audited with their reason, shown in /api/v1/status and /metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from authkit import bearer, tokens_yaml
from click.testing import CliRunner
from incidentkit import CountingSystem, incident_project, until
from serverkit import SECRETS, LiveServer
from standardwebhooks.webhooks import Webhook

from engine.cli import main as cli
from engine.compiler import compile_project
from engine.errors import StateConflict, UsageError
from engine.runtime.runtime import Runtime
from engine.server.auth import token_digest
from engine.store import open_store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def erp() -> Iterator[CountingSystem]:
    with CountingSystem() as system:
        yield system


@pytest.fixture
def server(tmp_path: Path, erp: CountingSystem) -> Iterator[LiveServer]:
    with LiveServer(incident_project(tmp_path, erp.url), poll=0.05) as live:
        yield live


def deliver(http: httpx.Client, order_id: str, path: str = "/hooks/order", **data: str) -> str:
    body = json.dumps({"id": order_id, **data}).encode()
    now = datetime.now(tz=UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": f"m-{order_id}",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRETS["CRM_HOOK"]).sign(f"m-{order_id}", now, body.decode()),
    }
    response = http.post(path, content=body, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["run_id"])


def run(http: httpx.Client, run_id: str) -> dict[str, Any]:
    detail: dict[str, Any] = http.get(f"/api/v1/runs/{run_id}").json()
    return detail


def switch(http: httpx.Client, path: str, reason: str = "") -> httpx.Response:
    return http.post(path, json={"reason": reason} if reason else None)


def test_a_paused_flow_stores_deliveries_and_resume_runs_them_in_arrival_order(
    server: LiveServer, erp: CountingSystem
) -> None:
    with server.client() as http:
        paused = switch(http, "/api/v1/flows/order-sync/pause", "ERP cut-over")
        assert paused.status_code == 200, paused.text
        assert paused.json()["paused"] is True
        runs = [deliver(http, f"o-{n}") for n in range(5)]
        until(lambda: all(run(http, r)["state"] == "waiting" for r in runs))
        held = run(http, runs[0])
        assert held["reason"]["code"] == "FLOW_PAUSED"
        assert "ERP cut-over" in held["reason"]["message"]
        assert held["steps"] == []
        status = http.get("/api/v1/status").json()
        assert status["paused"]["flows"]["order-sync"]["reason"] == "ERP cut-over"
        assert 'syncline_paused{kind="flow",name="order-sync"} 1.0' in http.get("/metrics").text
        assert erp.calls == []

        resumed = switch(http, "/api/v1/flows/order-sync/resume", "cut-over done")
        assert resumed.status_code == 200, resumed.text
        until(lambda: all(run(http, r)["state"] == "succeeded" for r in runs))
        # all of them, once each (claimed oldest first; without an ordering key they then run
        # concurrently, so their calls may land in any order)
        assert sorted(call["id"] for call in erp.calls) == [f"o-{n}" for n in range(5)]
        assert http.get("/api/v1/status").json()["paused"]["flows"] == {}
        assert 'syncline_paused{kind="flow"' not in http.get("/metrics").text


def test_one_ordering_keys_runs_resume_strictly_in_arrival_order(
    server: LiveServer, erp: CountingSystem
) -> None:
    with server.client() as http:
        assert switch(http, "/api/v1/flows/account-sync/pause").status_code == 200
        runs = [deliver(http, f"a-{n}", "/hooks/account", account="acme") for n in range(4)]
        until(lambda: run(http, runs[0])["state"] == "waiting")  # the key's head is held
        assert [run(http, r)["state"] for r in runs[1:]] == ["pending"] * 3  # behind it
        assert switch(http, "/api/v1/flows/account-sync/resume").status_code == 200
        until(lambda: all(run(http, r)["state"] == "succeeded" for r in runs))
        assert [call["id"] for call in erp.calls] == [f"a-{n}" for n in range(4)]


def test_a_held_run_of_a_paused_flow_can_be_cancelled(
    server: LiveServer, erp: CountingSystem
) -> None:
    with server.client() as http:
        switch(http, "/api/v1/flows/order-sync/pause", "hold everything")
        run_id = deliver(http, "x-1")
        until(lambda: run(http, run_id)["state"] == "waiting")
        assert http.post(f"/api/v1/runs/{run_id}/cancel").status_code == 200
        until(lambda: run(http, run_id)["state"] == "cancelled")  # not held again
        assert run(http, run_id)["reason"]["code"] == "CANCELLED"
    assert erp.calls == []


def test_a_paused_system_receives_nothing_until_resumed(
    server: LiveServer, erp: CountingSystem
) -> None:
    with server.client() as http:
        assert switch(http, "/api/v1/systems/erp/pause", "maintenance").status_code == 200
        run_id = deliver(http, "s-1")
        until(lambda: (run(http, run_id)["reason"] or {}).get("code") == "SYSTEM_PAUSED")
        detail = run(http, run_id)
        assert detail["state"] == "waiting"
        [step] = detail["steps"]
        assert step["state"] == "waiting" and step["attempts"] == []  # no attempt spent
        status = http.get("/api/v1/status").json()
        assert status["paused"]["systems"]["erp"]["reason"] == "maintenance"
        assert erp.calls == []

        assert switch(http, "/api/v1/systems/erp/resume").status_code == 200
        until(lambda: run(http, run_id)["state"] == "succeeded", timeout=10)
        assert [call["id"] for call in erp.calls] == ["s-1"]
        [step] = run(http, run_id)["steps"]
        assert len(step["attempts"]) == 1


@pytest.mark.anyio
async def test_operators_pause_and_resume_audited_with_their_name_and_reason(
    tmp_path: Path, erp: CountingSystem
) -> None:
    project = incident_project(tmp_path, erp.url)
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        tokens_yaml(
            f"- {{name: bob, role: operator, sha256: {token_digest('tok-bob').hex()}}}\n"
        )
    )
    bob = {"Authorization": "Bearer tok-bob"}
    with LiveServer(project, tokens_file=tokens) as live, live.client() as http:
        viewer = http.post("/api/v1/systems/erp/pause", headers=bearer("viewer"))
        assert (viewer.status_code, viewer.json()["error"]["code"]) == (403, "forbidden")
        limited = http.post("/api/v1/systems/erp/pause", headers=bearer("alice"))  # deal-* only
        assert limited.status_code == 403 and "not pause a System" in limited.text
        elsewhere = http.post("/api/v1/flows/order-sync/pause", headers=bearer("alice"))
        assert elsewhere.status_code == 403
        reason = {"reason": "ERP upgrade window"}
        paused = http.post("/api/v1/systems/erp/pause", json=reason, headers=bob)
        assert paused.status_code == 200 and paused.json()["actor"] == "bob"
        done = {"reason": "upgrade finished"}
        assert http.post("/api/v1/systems/erp/resume", json=done, headers=bob).status_code == 200
    async with open_store(None, project) as store:
        log = await store.audit_log()
    actions = [(e["actor"], e["action"], e["detail"]["reason"]) for e in log[:2]]
    assert actions == [
        ("bob", "resume-system", "upgrade finished"),
        ("bob", "pause-system", "ERP upgrade window"),
    ]


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/v1/flows/no-such-flow/pause", 404, "not_found"),
        ("/api/v1/systems/no-such-system/pause", 404, "not_found"),
        ("/api/v1/flows/order-sync/resume", 409, "conflict"),
        ("/api/v1/systems/erp/resume", 409, "conflict"),
        ("/api/v1/systems/erp/stop", 404, "not_found"),
    ],
)
def test_bad_switches_are_refused_and_change_nothing(
    server: LiveServer, path: str, status: int, code: str
) -> None:
    with server.client() as http:
        response = switch(http, path, "why")
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
        assert http.get("/api/v1/status").json()["paused"] == {"flows": {}, "systems": {}}


def test_the_switches_are_in_the_openapi_document(server: LiveServer) -> None:
    with server.client() as http:
        paths = http.get("/api/v1/openapi.json").json()["paths"]
    for kind in ("flows", "systems"):
        for action in ("pause", "resume"):
            responses = paths[f"/api/v1/{kind}/{{name}}/{action}"]["post"]["responses"]
            assert {"200", "404", "409"} <= set(responses)


def test_pausing_twice_is_a_conflict_naming_the_first_pause(server: LiveServer) -> None:
    with server.client() as http:
        switch(http, "/api/v1/flows/order-sync/pause", "first")
        again = switch(http, "/api/v1/flows/order-sync/pause", "second")
        assert again.status_code == 409
        assert "already paused" in again.json()["error"]["message"]
        assert "first" in again.json()["error"]["message"]
        paused = http.get("/api/v1/status").json()["paused"]["flows"]["order-sync"]
        assert paused["reason"] == "first"


@pytest.mark.anyio
@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_a_pause_is_shared_by_runtimes_on_one_store_and_survives_a_restart(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    project = incident_project(tmp_path, "http://127.0.0.1:9")
    plan = compile_project(project, environment="dev")
    database = None if store == "sqlite" else request.getfixturevalue("postgres_url")
    async with open_store(database, project) as first:
        one = Runtime(first, plan)
        await one.operations.switch("system", "erp", "pause", "maintenance", actor="bob")
        with pytest.raises(StateConflict):
            await one.operations.switch("flow", "order-sync", "resume", "never paused", actor="bob")
        with pytest.raises(UsageError, match="no flow 'nope'"):
            await one.operations.switch("flow", "nope", "pause", "", actor="bob")
    async with open_store(database, project) as second:  # a restart, or another replica
        two = Runtime(second, plan)
        await two.gates.refresh()
        assert two.gates.systems["erp"].reason == "maintenance"
        assert two.gates.systems["erp"].actor == "bob"
        lifted = await two.operations.switch("system", "erp", "resume", "done", actor="carol")
        assert lifted["reason"] == "maintenance" and lifted["paused"] is False
        assert two.gates.systems == {}


def test_the_cli_pauses_on_the_store_and_through_a_server(
    tmp_path: Path, erp: CountingSystem
) -> None:
    project = incident_project(tmp_path, erp.url)
    runner = CliRunner()
    where = ["--project", str(project)]
    paused = runner.invoke(cli, ["systems", "pause", "erp", "--reason", "upgrade", *where])
    assert paused.exit_code == 0, paused.output
    assert paused.output == "system 'erp' paused (upgrade)\n"
    again = runner.invoke(cli, ["systems", "pause", "erp", *where])
    assert again.exit_code == 2
    assert "system 'erp' is already paused (by cli:" in again.output
    unknown = runner.invoke(cli, ["flows", "pause", "nope", *where])
    assert unknown.exit_code == 2 and "no flow 'nope'" in unknown.output
    # the pause made on the store holds in the server too
    with LiveServer(project, poll=0.05) as live, live.client() as http:
        run_id = deliver(http, "c-1")
        until(lambda: (run(http, run_id)["reason"] or {}).get("code") == "SYSTEM_PAUSED")
        url = ["--url", live.url, "--format", "json"]
        resumed = runner.invoke(cli, ["systems", "resume", "erp", "--reason", "done", *url])
        assert resumed.exit_code == 0, resumed.output
        assert json.loads(resumed.output)["reason"] == "upgrade"  # the pause lifted
        until(lambda: run(http, run_id)["state"] == "succeeded")
        not_paused = runner.invoke(cli, ["systems", "resume", "erp", *url])
        assert not_paused.exit_code == 2
        assert "system 'erp' is not paused (HTTP 409 conflict)" in not_paused.output
    assert [call["id"] for call in erp.calls] == ["c-1"]


@pytest.mark.anyio
async def test_a_resume_while_a_run_is_being_held_wakes_it_at_once(tmp_path: Path) -> None:
    """The resume wakes the runs waiting for the System; one still being held (running, its
    hold not yet written) is woken by its worker, which reads the switches again after the
    hold: it does not sleep until the held run's backstop (60 s)."""
    from faults import FaultyStore
    from runtime_kit import LiveTarget, flow, in_state, meta, running, write_project
    from runtime_kit import until as until_async

    from engine.store.base import Checkpoint

    steps = """
    - id: one
      call: {system: erp, operation: create, body: data}
"""
    server = LiveTarget()
    with server:
        root = write_project(tmp_path, server.url, flow("held", steps))
        async with running(root, wrap=FaultyStore) as (runtime, plan):
            store = runtime.store
            checkpoint = store.checkpoint
            lifted: list[str] = []

            async def resumed_meanwhile(cp: Checkpoint) -> Any:
                if cp.run_state == "waiting" and not lifted:  # the pause lifted before it lands
                    await runtime.gates.resume("system", "erp", "upgrade done", "ops")
                    lifted.append(cp.run_id)
                return await checkpoint(cp)

            store.checkpoint = resumed_meanwhile  # type: ignore[method-assign]
            await runtime.gates.pause("system", "erp", "upgrade", "ops")
            run_id = (await runtime.ingest(plan.flows["held"], {"n": 1}, meta(1))).run_id
            await until_async(lambda: in_state(runtime, run_id, "succeeded"), 10)
            assert lifted == [run_id]
