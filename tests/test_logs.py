"""Structured logs of a real `syncline serve`: the events of SPEC section 9 with their fields,
as JSON lines (or text), and never a secret, token, auth header or payload body (tracing on, so
its spans' work is covered too)."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from serverkit import SECRETS, free_port
from telemetrykit import (
    ALL_SECRETS,
    ERP_TOKEN,
    FLOWS,
    OtlpReceiver,
    Target,
    traced_project,
    until,
)

from engine.logs import configure_logging, redact
from engine.server.signatures import sign
from engine.tls import tls_context

TLS = tls_context()  # one CA load for the module, not one per client (50-80 ms each)


ADMIN_TOKEN = "adm_5b7e1c0d9f2a4c83b6e0"
BODY_MARKER = "confidential-note-77e1b2"
CORRECTED_MARKER = "corrected-note-0c4d5e"
COLLECTOR_KEY = "collector-key-4a5b6c7d"


def _post(http: httpx.Client, path: str, body: bytes, msg_id: str) -> httpx.Response:
    headers = sign("standard-webhooks", SECRETS["CRM_HOOK"], body, msg_id=msg_id)
    return http.post(path, content=body, headers={**headers, "content-type": "application/json"})


def _state(http: httpx.Client, run_id: str) -> str:
    answer = http.get(f"/api/v1/runs/{run_id}", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    return str(answer.json()["state"])


def _reload(http: httpx.Client) -> dict[str, Any]:
    status = http.get("/api/v1/status", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    return dict(status.json()["reload"])


def _ready(http: httpx.Client) -> bool:
    try:
        return http.get("/readyz").status_code == 200
    except httpx.HTTPError:
        return False


def _exercise(http: httpx.Client, project: Path) -> dict[str, str]:
    """Every kind of event once; the run ids by what they are."""
    order = json.dumps({"id": "o-1", "note": BODY_MARKER}).encode()
    accepted = _post(http, "/hooks/order", order, "m-1")
    assert accepted.status_code == 202 and _post(http, "/hooks/order", order, "m-1").json()[
        "status"] == "duplicate"  # fmt: skip
    ignored = json.dumps({"id": "o-2", "kind": "ignore", "note": BODY_MARKER}).encode()
    assert _post(http, "/hooks/order", ignored, "m-2").json()["status"] == "filtered"
    forged = http.post("/hooks/order", content=order, headers={
        "content-type": "application/json", "webhook-id": "m-3",
        "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,Zm9yZ2Vk"})
    assert forged.status_code == 401
    broken = b'{"id": "o-4", "note": "' + BODY_MARKER.encode() + b'"'
    assert _post(http, "/hooks/order", broken, "m-4").status_code == 400
    parked = _post(http, "/hooks/reject", json.dumps({"id": "r-1", "note": BODY_MARKER}).encode(),
                   "m-5").json()["run_id"]  # fmt: skip
    ok = accepted.json()["run_id"]
    until(lambda: _state(http, ok) == "succeeded" and _state(http, parked) == "parked")
    resumed = http.post(f"/api/v1/runs/{parked}/resume",
                        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                        json={"reason": "customer unblocked",
                              "data": {"id": "r-1", "note": CORRECTED_MARKER}})  # fmt: skip
    assert resumed.status_code == 200, resumed.text
    until(lambda: _state(http, parked) == "parked" and _reload(http)["ok"])
    flows = project / "flows" / "orders.yaml"
    flows.write_text(FLOWS.replace("steps:", "stepz:", 1))
    until(lambda: not _reload(http)["ok"])
    flows.write_text(FLOWS.replace("owner: revops", "owner: finance", 1))
    until(lambda: _reload(http)["ok"] and _reload(http)["trigger"] == "watch")
    return {"ok": ok, "parked": parked}


def test_serve_logs_each_event_as_a_json_line_without_secrets_tokens_or_bodies(
    tmp_path: Path,
) -> None:
    with Target() as target, OtlpReceiver() as receiver:
        project = traced_project(tmp_path / "project", target.url)
        env = {**os.environ, **{f"SYNCLINE_SECRET_{k}": v for k, v in ALL_SECRETS.items()},
               "SYNCLINE_ADMIN_TOKEN": ADMIN_TOKEN, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
               "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{COLLECTOR_KEY}"}
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "serve", str(project), "--port", str(port),
             "--log-format", "json", "--log-level", "debug"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            with httpx.Client(verify=TLS, base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                until(lambda: _ready(http), 60)
                runs = _exercise(http, project)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert receiver.named("run order-sync")  # traced while it logged
    text = err.decode()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert out == b""

    for forbidden in [*ALL_SECRETS.values(), ERP_TOKEN, ADMIN_TOKEN, BODY_MARKER,
                      CORRECTED_MARKER, COLLECTOR_KEY, "Bearer", "Zm9yZ2Vk"]:
        assert forbidden not in text, forbidden

    for line in lines:
        assert {"time", "level", "logger", "event", "message"} <= set(line)
        assert line["time"].endswith("Z")
    by_event: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_event.setdefault(line["event"], []).append(line)
    expected = {"startup", "webhook.accepted", "webhook.duplicate", "webhook.filtered",
                "webhook.rejected", "run.started", "run.succeeded", "run.parked",
                "call.completed", "call.failed", "operator.action", "reload.rejected",
                "reload.accepted", "shutdown"}  # fmt: skip
    assert expected <= set(by_event), sorted(set(by_event))

    [startup] = by_event["startup"]
    assert startup["level"] == "info" and startup["listen"] == f"127.0.0.1:{port}"
    assert startup["store"] == {"kind": "sqlite",
                                "location": str(project / ".syncline" / "syncline.db")}
    assert startup["flows"] == 10 and startup["systems"] == 6
    assert startup["tokens"] == {"admin": ["admin"]} and startup["tracing"] is True
    assert "/hooks/order" in startup["webhook_paths"] and startup["version"]
    assert startup["plan_digest"].startswith("sha256:")

    parked = [e for e in by_event["run.parked"] if e["run_id"] == runs["parked"]]
    assert len(parked) == 2  # first its call was refused, then again after the resume
    assert parked[0]["level"] == "warning" and parked[0]["flow"] == "order-reject"
    assert parked[0]["reason"] == "HTTP_422" and parked[0]["step"] == "erp"
    assert parked[0]["correlation_id"]
    failed = by_event["call.failed"][0]
    assert failed["system"] == "erp" and failed["status"] == 422 and failed["outcome"] == "4xx"
    assert failed["run_id"] == runs["parked"] and failed["path"] == "/reject"
    [action] = by_event["operator.action"]
    assert action["action"] == "resume" and action["actor"] == "admin"
    assert action["run_id"] == runs["parked"] and action["corrected_data"] is True
    rejected = [e for e in by_event["webhook.rejected"] if e["status"] == 401]
    assert rejected[0]["reason"] == "bad_signature" and rejected[0]["flow"] == "order-sync"
    assert any(e["status"] == 400 and e["reason"] == "malformed_json"
               for e in by_event["webhook.rejected"])
    [duplicate] = by_event["webhook.duplicate"]
    assert duplicate["run_id"] == runs["ok"] and duplicate["flow"] == "order-sync"
    [reload_rejected] = by_event["reload.rejected"]
    assert reload_rejected["level"] == "error" and "orders.yaml" in reload_rejected["error"]
    accepted_reload = by_event["reload.accepted"][-1]
    assert accepted_reload["trigger"] == "watch"
    assert accepted_reload["plan_digest"] != startup["plan_digest"]
    assert by_event["shutdown"][0]["level"] == "info"


def test_the_default_level_logs_no_line_per_accepted_delivery_or_successful_run(
    tmp_path: Path,
) -> None:
    """The hot path's events are debug: at info a healthy server logs startup and shutdown."""
    with Target() as target:
        project = traced_project(tmp_path / "project", target.url)
        env = {**os.environ, **{f"SYNCLINE_SECRET_{k}": v for k, v in ALL_SECRETS.items()}}
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "serve", str(project), "--port", str(port),
             "--no-watch", "--log-format", "text"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            with httpx.Client(verify=TLS, base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                until(lambda: _ready(http), 60)
                for n in range(3):
                    body = json.dumps({"id": f"d-{n}", "note": BODY_MARKER}).encode()
                    assert _post(http, "/hooks/order", body, f"d-{n}").status_code == 202
                until(lambda: len(target.seen) == 3)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
    events = [line.split()[2] for line in err.decode().splitlines() if line[:2] == "20"]
    assert events == ["startup", "shutdown"], err.decode()


def test_the_text_format_is_one_line_per_event_and_redacts_known_secrets() -> None:
    stream = io.StringIO()
    handler = configure_logging("text", "info", stream)
    try:
        redact(["s3cr3t-value-xyz"])
        log = logging.getLogger("syncline.test")
        log.warning("run parked", extra={"event": "run.parked", "flow": "order-sync",
                                         "run_id": "r1", "reason": "HTTP_422", "step": None})
        log.info("leaked s3cr3t-value-xyz here", extra={"event": "oops", "note": "a b"})
        log.debug("not shown", extra={"event": "run.started"})
    finally:
        logging.getLogger().removeHandler(handler)
        for name in ("syncline", "uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    first, second = stream.getvalue().splitlines()
    assert first.endswith(" WARNING run.parked run parked flow=order-sync run_id=r1 "
                          "reason=HTTP_422")
    assert "step=" not in first  # None fields are left out
    assert second.endswith(' INFO    oops leaked [redacted] here note="a b"')
