"""The admin API, its auth, /healthz, /readyz, /metrics, the OpenAPI document and `--url`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from faults import FaultyStore
from serverkit import SECRETS, LiveServer, write_project
from standardwebhooks.webhooks import Webhook

from engine.cli import main as cli
from engine.commands.remote import HttpRunsClient
from engine.errors import StoreError, UsageError
from engine.store import RunQuery, open_store

TOKEN = "admin-secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    project = write_project(tmp_path_factory.mktemp("admin"))
    store = FaultyStore(open_store(None, project))
    with LiveServer(project, admin_token=TOKEN, store=store) as live:
        yield live


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client(headers=AUTH) as client:
        yield client


def deliver(http: httpx.Client, order_id: str) -> str:
    body = json.dumps({"id": order_id}).encode()
    now = datetime.now(tz=UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": f"m-{order_id}",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRETS["CRM_HOOK"]).sign(f"m-{order_id}", now, body.decode()),
    }
    response = http.post("/hooks/crm", content=body, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["run_id"])


def wait_state(http: httpx.Client, run_id: str, state: str) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        detail = http.get(f"/api/v1/runs/{run_id}").json()
        if detail["state"] == state:
            return dict(detail)
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {state}: {detail}")


def test_runs_list_detail_and_replay(http: httpx.Client) -> None:
    run_id = deliver(http, "adm-1")
    detail = wait_state(http, run_id, "succeeded")
    assert detail["flow"] == "crm-order" and detail["key"] == "adm-1"
    assert [s["id"] for s in detail["steps"]] == ["tag"]
    assert detail["steps"][0]["output"] == {"version": 1, "id": "adm-1"}
    listing = http.get("/api/v1/runs", params={"flow": "crm-order", "key": "adm-1"}).json()
    assert [r["id"] for r in listing["runs"]] == [run_id]
    replay = http.post(f"/api/v1/runs/{run_id}/replay")
    assert replay.status_code == 202, replay.text
    assert replay.json()["links"]["replay_of"] == run_id
    assert http.get(f"/api/v1/runs/{run_id}").json()["links"]["replayed_by"]


def test_actions_on_unknown_or_wrong_state_runs(http: httpx.Client) -> None:
    missing = http.get("/api/v1/runs/nope")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    assert http.post("/api/v1/runs/nope/retry").status_code == 404
    run_id = deliver(http, "adm-2")
    wait_state(http, run_id, "succeeded")
    conflict = http.post(f"/api/v1/runs/{run_id}/resume")
    assert conflict.status_code == 409, conflict.text
    assert "succeeded" in conflict.json()["error"]["message"]
    assert http.post(f"/api/v1/runs/{run_id}/explode").status_code == 404
    assert http.get("/api/v1/runs", params={"limit": "0"}).status_code == 400
    bad = http.get("/api/v1/runs", params={"cursor": "yesterday"})
    assert bad.status_code == 400 and "bad cursor 'yesterday'" in bad.text


@pytest.mark.parametrize("query", [
    {"cursor": "abc"}, {"cursor": "1e5"}, {"cursor": "99999999999999999999999"},
    {"cursor": "-1"}, {"state": "nonsense"},
])
def test_a_malformed_cursor_or_state_is_400_not_500(http: httpx.Client, query: dict) -> None:
    response = http.get("/api/v1/runs", params=query)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "bad_request")


def test_a_store_failure_during_an_action_is_503_not_a_conflict(
    http: httpx.Client, server: LiveServer
) -> None:
    run_id = deliver(http, "adm-503")
    wait_state(http, run_id, "succeeded")
    store = server.state.runtime.store
    assert isinstance(store, FaultyStore)
    store.fail("get_run", StoreError("SQLite read failed: disk I/O error"))
    try:
        response = http.post(f"/api/v1/runs/{run_id}/retry")
    finally:
        store.heal()
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "store_unavailable"
    assert response.headers["Retry-After"] == "1"
    assert "disk I/O" not in response.text  # the server log has it, not the client


def test_admin_token_is_required(server: LiveServer) -> None:
    with server.client() as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = anonymous.get("/api/v1/status", headers=headers)
            assert response.status_code == 401, headers
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["WWW-Authenticate"] == "Bearer"


def test_without_token_admin_answers_only_on_loopback(tmp_path: Path) -> None:
    server = LiveServer(write_project(tmp_path))  # built, not started: ASGI only
    asyncio.run(check_loopback_only(server.app))


async def check_loopback_only(app: Any) -> None:
    outside = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555))
    inside = httpx.ASGITransport(app=app, client=("127.0.0.1", 5555))
    async with app.app.router.lifespan_context(app.app):
        async with httpx.AsyncClient(transport=outside, base_url="http://x") as remote:
            response = await remote.get("/api/v1/runs")
            assert response.status_code == 403
            assert response.json()["error"]["code"] == "forbidden"
        async with httpx.AsyncClient(transport=inside, base_url="http://x") as local:
            assert (await local.get("/api/v1/runs")).status_code == 200


def test_status_openapi_health_and_metrics(http: httpx.Client, server: LiveServer) -> None:
    deliver(http, "adm-3")
    status = http.get("/api/v1/status").json()
    assert status["digest"].startswith("sha256:") and status["environment"] == "dev"
    assert status["flows"]["crm-order"] == {"version": 1, "trigger": "webhook"}
    assert "/hooks/crm" in status["webhooks"] and status["reload"]["ok"] is True
    document = http.get("/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    for path in (
        "/hooks/crm",
        "/hooks/stripe",
        "/api/quote",
        "/events",
        "/api/v1/runs",
        "/api/v1/runs/{run_id}/replay",
        "/api/v1/status",
        "/metrics",
    ):
        assert path in document["paths"], path
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").status_code == 200
    metrics = http.get("/metrics").text
    for needle in (
        'syncline_http_requests_total{method="POST",route="/hooks/crm",status="202"}',
        "syncline_ingest_seconds_bucket",
        'syncline_run_transitions_total{flow="crm-order"',
        'syncline_runs{flow="crm-order",reason="",state="',
        'syncline_deliveries_total{outcome="accepted",route="/hooks/crm"}',
        "syncline_reload_success 1.0",
        "syncline_step_attempts_total",
        "syncline_step_retries",
        "syncline_queue_depth",
        "syncline_reloads_total",
        'route="/api/v1/status"',
    ):
        assert needle in metrics, needle


def test_runs_commands_against_a_running_server(server: LiveServer, http: httpx.Client) -> None:
    run_id = deliver(http, "adm-4")
    wait_state(http, run_id, "succeeded")
    asyncio.run(check_runs_client(server.url, run_id))


async def check_runs_client(url: str, run_id: str) -> None:
    async with HttpRunsClient(url, TOKEN) as client:
        runs, _ = await client.list(RunQuery(key="adm-4"))
        assert [r["id"] for r in runs] == [run_id]
        assert (await client.show(run_id))["state"] == "succeeded"
        assert (await client.act(run_id, "replay"))["links"]["replay_of"] == run_id
        with pytest.raises(UsageError, match="no run 'zzz'"):
            await client.show("zzz")
    async with HttpRunsClient(url, "wrong") as client:
        with pytest.raises(UsageError, match="401"):
            await client.list(RunQuery())


def syncline(*args: str, token: str | None = TOKEN) -> tuple[int, str]:
    env = {"SYNCLINE_ADMIN_TOKEN": token} if token else {}
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_syncline_runs_with_url_acts_on_the_running_server(
    server: LiveServer, http: httpx.Client, tmp_path: Path
) -> None:
    run_id = deliver(http, "adm-5")
    wait_state(http, run_id, "succeeded")
    url = ["--url", server.url, "--project", str(tmp_path)]  # a directory with no project at all

    code, out = syncline("runs", "list", "--key", "adm-5", "--format", "json", *url)
    assert code == 0, out
    assert [r["id"] for r in json.loads(out)["runs"]] == [run_id]
    code, out = syncline("runs", "show", run_id, *url)
    assert code == 0 and f"run {run_id} crm-order@1: succeeded" in out, out

    code, out = syncline("runs", "replay", run_id, "--format", "json", *url)
    assert code == 0, out
    replay = json.loads(out)
    assert replay["links"]["replay_of"] == run_id and replay["id"] != run_id
    wait_state(http, replay["id"], "succeeded")  # the server executes what the CLI asked

    code, out = syncline("runs", "cancel", run_id, *url)  # a succeeded run cannot be cancelled
    assert code == 2 and "(HTTP 409 conflict)" in out, out
    code, out = syncline("runs", "show", "zzz", *url)
    assert code == 2 and "no run 'zzz' (HTTP 404 not_found)" in out, out
    code, out = syncline("runs", "list", *url, token="wrong")
    assert code == 2 and "HTTP 401 unauthorized" in out, out
