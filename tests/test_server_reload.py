"""Hot reload under traffic, rejected reloads, routes added by a reload, graceful SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import uvicorn
from serverkit import FLOWS, SECRETS, LiveServer, free_port, webhook_flow, write_project
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from engine.tls import tls_context

TLS = tls_context()  # one CA load for the module, not one per client (50-80 ms each)



def signed(order_id: str, msg_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"id": order_id}).encode()
    now = datetime.now(tz=UTC)
    return body, {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRETS["CRM_HOOK"]).sign(msg_id, now, body.decode()),
    }


def until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


class Traffic(threading.Thread):
    """Posts signed webhooks to /hooks/crm until stopped; remembers every answer."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.answers: list[tuple[int, str]] = []

    def run(self) -> None:
        with httpx.Client(verify=TLS, base_url=self.url, timeout=20) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                body, headers = signed(f"t-{n}", f"m-t-{n}")
                response = client.post("/hooks/crm", content=body, headers=headers)
                run_id = response.json().get("run_id", "") if response.status_code == 202 else ""
                self.answers.append((response.status_code, run_id))


def test_reload_under_traffic_then_rejected_edit_then_new_route(tmp_path: Path) -> None:
    project = write_project(tmp_path)
    with LiveServer(project, watch=True, debounce=0.1) as live, live.client() as http:
        first = live.state.plan.digest
        traffic = Traffic(live.url)
        traffic.start()
        until(lambda: len(traffic.answers) > 20)
        v2 = FLOWS.replace(
            webhook_flow("crm-order", "/hooks/crm", "crm", key="data.id"),
            webhook_flow("crm-order", "/hooks/crm", "crm", key="data.id", version=2),
        )
        (project / "flows" / "hooks.yaml").write_text(v2)
        until(lambda: live.state.plan.digest != first)
        seen = len(traffic.answers)
        until(lambda: len(traffic.answers) > seen + 20)
        traffic.stop.set()
        traffic.join()
        assert {status for status, _ in traffic.answers} == {202}, "a request failed"
        last = http.get(f"/api/v1/runs/{traffic.answers[-1][1]}").json()
        assert last["flow_version"] == 2 and last["plan_digest"] == live.state.plan.digest
        earliest = http.get(f"/api/v1/runs/{traffic.answers[0][1]}").json()
        assert earliest["flow_version"] == 1 and earliest["plan_digest"] == first

        good = live.state.plan.digest
        (project / "flows" / "broken.yaml").write_text(
            webhook_flow("broken", "/hooks/broken", "no-such-system")
        )
        until(lambda: live.state.reload is not None and not live.state.reload.ok)
        status = http.get("/api/v1/status").json()
        assert status["digest"] == good and status["reload"]["ok"] is False
        assert "no-such-system" in status["reload"]["error"]
        assert "broken.yaml" in status["reload"]["error"]
        body, headers = signed("after-broken", "m-after-broken")
        assert http.post("/hooks/crm", content=body, headers=headers).status_code == 202
        assert 'syncline_reloads_total{result="failure"}' in http.get("/metrics").text

        (project / "flows" / "broken.yaml").write_text(
            webhook_flow("brand-new", "/hooks/brand-new", "crm")
        )
        until(
            lambda: (
                live.state.reload is not None
                and live.state.reload.ok
                and live.state.plan.digest != good
            )
        )
        body, headers = signed("new-1", "m-new-1")
        response = http.post("/hooks/brand-new", content=body, headers=headers)
        assert response.status_code == 202, response.text


SLOW_FLOW = """\
apiVersion: syncline/v1
kind: System
metadata: {name: slow, owner: qa}
spec:
  baseUrl: ${env.SLOW_URL}
  operations:
    work: {method: POST, path: /work}
---
apiVersion: syncline/v1
kind: Flow
metadata: {name: slow-flow, owner: qa}
spec:
  trigger: {webhook: {path: /hooks/slow, system: crm}}
  idempotencyKey: data.id
  steps:
    - id: work
      call: {system: slow, operation: work, body: data}
"""


def slow_target(started: threading.Event) -> uvicorn.Server:
    async def work(request: Request) -> JSONResponse:
        started.set()
        time.sleep(1.0)  # blocks this target's loop: the call is in flight for a second
        return JSONResponse({"done": True})

    app = Starlette(routes=[Route("/work", work, methods=["POST"])])
    return uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off")
    )


def test_sigterm_lets_in_flight_steps_checkpoint_and_exits_0(tmp_path: Path) -> None:
    started = threading.Event()
    target = slow_target(started)
    thread = threading.Thread(target=target.run, daemon=True)
    thread.start()
    until(lambda: target.started)
    project = write_project(tmp_path, {"flows/slow.yaml": SLOW_FLOW})
    allowing = (project / "syncline.yaml").read_text().replace(
        "  paths:", "  processEnv: [SLOW_URL]   # set below, in the server's environment\n  paths:")
    (project / "syncline.yaml").write_text(allowing)
    port = free_port()
    env = {
        **os.environ,
        "SLOW_URL": f"http://127.0.0.1:{target.config.port}",
        **{f"SYNCLINE_SECRET_{k}": v for k, v in SECRETS.items()},
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "serve",
            str(project),
            "--port",
            str(port),
            "--no-watch",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        with httpx.Client(verify=TLS, base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            until(lambda: _up(http))
            body, headers = signed("slow-1", "m-slow-1")
            accepted = http.post("/hooks/slow", content=body, headers=headers)
            assert accepted.status_code == 202, accepted.text
        assert started.wait(10), "the call never reached the target"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        target.should_exit = True
        thread.join(10)
    assert proc.returncode == 0, output.decode()
    run_id = accepted.json()["run_id"]
    with sqlite3.connect(project / ".syncline" / "syncline.db") as db:
        state = db.execute("SELECT state FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
        step = db.execute(
            "SELECT state FROM steps WHERE run_id = ? AND step_id = 'work'", (run_id,)
        ).fetchone()
    db.close()
    assert step is not None and step[0] == "succeeded", (state, step)
    assert state == "succeeded"


def _up(http: httpx.Client) -> bool:
    try:
        return http.get("/readyz").status_code == 200
    except httpx.HTTPError:
        return False
