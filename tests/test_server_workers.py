"""Ingest-only nodes and separate workers: `syncline serve --no-workers` accepts and executes
nothing; `syncline worker` on the same store executes what it accepted. Real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from serverkit import SECRETS, free_port, write_project

from engine.server.signatures import sign
from engine.tls import tls_context

TLS = tls_context()  # one CA load for the module, not one per client (50-80 ms each)


ENV = {**os.environ, **{f"SYNCLINE_SECRET_{k}": v for k, v in SECRETS.items()}}


def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def syncline(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        output, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    return proc.returncode, output.decode()


def ready(http: httpx.Client) -> bool:
    try:
        return http.get("/readyz").status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_an_ingest_only_node_accepts_and_a_worker_executes(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    project = write_project(tmp_path)
    database = [] if store == "sqlite" else ["--database", request.getfixturevalue("postgres_url")]
    port = free_port()
    server = syncline(
        "serve", str(project), "--port", str(port), "--no-watch", "--no-workers", *database
    )
    worker = None
    try:
        with httpx.Client(verify=TLS, base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            until(lambda: ready(http))
            body = json.dumps({"id": "ord-w1", "kind": "new"}).encode()
            headers = sign("standard-webhooks", SECRETS["CRM_HOOK"], body, msg_id="msg-w1")
            accepted = http.post(
                "/hooks/crm", content=body, headers={**headers, "content-type": "application/json"}
            )
            assert accepted.status_code == 202, accepted.text
            run_id = accepted.json()["run_id"]

            def state() -> str:
                return str(http.get(f"/api/v1/runs/{run_id}").json()["state"])

            time.sleep(1.0)  # several claim polls of a runtime, had one been started
            assert state() == "pending"
            worker = syncline("worker", str(project), "--concurrency", "4", *database)
            until(lambda: state() == "succeeded")
        code, output = stop(worker)
        assert code == 0, output
    finally:
        if worker is not None and worker.poll() is None:
            stop(worker)
        code, output = stop(server)
    assert code == 0, output


def test_a_worker_reports_missing_secrets_as_a_usage_error(tmp_path: Path) -> None:
    project = write_project(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "worker", str(project)],
        env={k: v for k, v in os.environ.items() if not k.startswith("SYNCLINE_SECRET_")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "missing secrets: CRM_HOOK" in proc.stderr
