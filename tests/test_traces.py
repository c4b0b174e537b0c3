"""Traces: OpenTelemetry spans exported with OTLP over HTTP to a real receiver started here
(protobuf decoded with opentelemetry-proto), configured only through OTEL_* variables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from serverkit import SECRETS, LiveServer, free_port
from telemetrykit import (
    ALL_SECRETS,
    ERP_TOKEN,
    OtlpReceiver,
    SpanSeen,
    Target,
    traced_project,
    until,
)

from engine.server.signatures import sign
from engine.tls import tls_context

TLS = tls_context()  # one CA load for the module, not one per client (50-80 ms each)


SENDER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SENDER_SPAN = "00f067aa0ba902b7"
SENDER = f"00-{SENDER_TRACE}-{SENDER_SPAN}-01"
BODY_MARKER = "confidential-note-3f9c1a"
COLLECTOR_KEY = "otlp-key-9d8e7f6a5b"


def delivery(http: httpx.Client, path: str, payload: dict[str, object], **headers: str) -> str:
    body = json.dumps(payload).encode()
    signed = sign("standard-webhooks", SECRETS["CRM_HOOK"], body, msg_id=f"msg-{payload['id']}")
    answer = http.post(path, content=body,
                       headers={**signed, "content-type": "application/json", **headers})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["run_id"])


def one(spans: list[SpanSeen]) -> SpanSeen:
    assert len(spans) == 1, spans
    return spans[0]


def test_a_delivery_run_steps_and_call_are_one_trace_continuing_the_sender(
    tmp_path: Path,
) -> None:
    with OtlpReceiver() as receiver, Target() as target:
        project = traced_project(tmp_path, target.url)
        environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "sync-test",
                   "OTEL_EXPORTER_OTLP_HEADERS": f"x-api-key={COLLECTOR_KEY}"}
        server = LiveServer(project, environ=environ, secrets=ALL_SECRETS)
        with server, server.client() as http:
            run_id = delivery(http, "/hooks/order", {"id": "o-1", "note": BODY_MARKER},
                              traceparent=SENDER)
            until(lambda: [r["state"] for r in http.get(
                "/api/v1/runs?flow=order-announced").json()["runs"]] == ["succeeded"])
            answer = http.get(f"/api/v1/runs/{run_id}").json()
        # the server has stopped: its provider flushed every span to the receiver
        ingest = one(receiver.named("POST /hooks/order"))
        run = one(receiver.named("run order-sync"))
        shape, erp = one(receiver.named("step shape")), one(receiver.named("step erp"))
        call = one(receiver.named("POST /orders/{id}"))
        announce, announced = one(receiver.named("step announce")), one(
            receiver.named("run order-announced"))

    assert answer["correlation_id"] == SENDER_TRACE  # one id for logs and traces
    assert announced.parent_id == announce.span_id  # an emitted event's run continues the trace
    for span in (ingest, run, shape, erp, call, announce, announced):
        assert span.trace_id == SENDER_TRACE
        assert span.resource["service.name"] == "sync-test"
    assert ingest.parent_id == SENDER_SPAN and ingest.kind == "server"
    assert run.parent_id == ingest.span_id
    assert shape.parent_id == erp.parent_id == run.span_id
    assert call.parent_id == erp.span_id and call.kind == "client"

    assert ingest.attributes["http.request.method"] == "POST"
    assert ingest.attributes["http.route"] == "/hooks/order"
    assert ingest.attributes["http.response.status_code"] == 202
    assert ingest.attributes["syncline.run.id"] == run_id
    assert ingest.attributes["syncline.delivery.status"] == "accepted"
    assert run.attributes["syncline.flow"] == "order-sync"
    assert run.attributes["syncline.state"] == "succeeded"
    assert erp.attributes["syncline.step.kind"] == "call"
    assert call.attributes["http.request.method"] == "POST"
    assert call.attributes["url.full"] == f"{target.url}/orders/o-1"
    assert call.attributes["url.template"] == "/orders/{id}"
    assert call.attributes["server.address"] == "127.0.0.1"
    assert call.attributes["http.response.status_code"] == 201
    assert call.attributes["syncline.system"] == "erp"

    # the call carried its own span's context downstream
    [received] = target.seen
    assert received["headers"]["traceparent"] == f"00-{SENDER_TRACE}-{call.span_id}-01"
    assert received["headers"]["authorization"] == f"Bearer {ERP_TOKEN}"
    assert receiver.headers[0]["x-api-key"] == COLLECTOR_KEY  # the collector's credentials
    exported = b"".join(receiver.raw)
    for secret in [*ALL_SECRETS.values(), BODY_MARKER, "Bearer"]:
        assert secret.encode() not in exported


def test_a_failed_call_and_a_parked_run_are_error_spans(tmp_path: Path) -> None:
    with OtlpReceiver() as receiver, Target() as target:
        project = traced_project(tmp_path, target.url)
        environ = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{receiver.url}/v1/traces"}
        server = LiveServer(project, environ=environ, secrets=ALL_SECRETS)
        with server, server.client() as http:
            run_id = delivery(http, "/hooks/reject", {"id": "r-1", "note": BODY_MARKER})
            until(lambda: http.get(f"/api/v1/runs/{run_id}").json()["state"] == "parked")
            bad = http.post("/hooks/order", content=b"{}",
                            headers={"content-type": "application/json"})
            assert bad.status_code == 401
        run = one(receiver.named("run order-reject"))
        call = one(receiver.named("POST /reject"))
        rejected = one(receiver.named("POST /hooks/order"))
        ingest = one(receiver.named("POST /hooks/reject"))
    assert ingest.parent_id == "" and run.parent_id == ingest.span_id  # a trace of its own
    assert run.status == 2 and run.attributes["syncline.reason.code"] == "HTTP_422"
    assert run.attributes["syncline.state"] == "parked"
    assert call.status == 2 and call.attributes["error.type"] == "422"
    assert call.attributes["http.response.status_code"] == 422
    assert rejected.attributes["http.response.status_code"] == 401
    assert "syncline.run.id" not in rejected.attributes


def _syncline(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "engine.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        output, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    return output.decode()


def test_a_worker_executing_later_continues_the_trace_of_the_delivery(tmp_path: Path) -> None:
    """`serve --no-workers` accepts; a `syncline worker` started afterwards executes: the run's
    spans (another process) are children of the ingest span, through the stored context."""
    with OtlpReceiver() as receiver, Target() as target:
        project = traced_project(tmp_path, target.url)
        env = {**os.environ, **{f"SYNCLINE_SECRET_{k}": v for k, v in ALL_SECRETS.items()},
               "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        port = free_port()
        server = _syncline("serve", str(project), "--port", str(port), "--no-watch",
                           "--no-workers", env=env)
        worker = None
        try:
            with httpx.Client(verify=TLS, base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                until(lambda: _ready(http))
                run_id = delivery(http, "/hooks/order", {"id": "w-1", "note": "x"},
                                  traceparent=SENDER)
                receiver.wait_for(lambda r: bool(r.named("POST /hooks/order")))
                worker = _syncline("worker", str(project), env=env)
                until(lambda: http.get(f"/api/v1/runs/{run_id}").json()["state"] == "succeeded")
                receiver.wait_for(lambda r: bool(r.named("POST /orders/{id}")))
        finally:
            outputs = [_stop(p) for p in (worker, server) if p is not None]
        ingest = one(receiver.named("POST /hooks/order"))
        run = one(receiver.named("run order-sync"))
        call = one(receiver.named("POST /orders/{id}"))
    assert all("Traceback" not in o for o in outputs), outputs
    assert ingest.parent_id == SENDER_SPAN and run.parent_id == ingest.span_id
    assert run.trace_id == call.trace_id == SENDER_TRACE
    assert target.seen[0]["headers"]["traceparent"] == f"00-{SENDER_TRACE}-{call.span_id}-01"


def _ready(http: httpx.Client) -> bool:
    try:
        return http.get("/readyz").status_code == 200
    except httpx.HTTPError:
        return False


def test_without_otel_variables_nothing_of_opentelemetry_is_imported(tmp_path: Path) -> None:
    project = traced_project(tmp_path, "http://127.0.0.1:9")
    script = (
        "import sys\n"
        "from engine.server.config import ServerConfig\n"
        "from engine.server.serve import build_server\n"
        f"secrets = {ALL_SECRETS!r}\n"
        "from pathlib import Path\n"
        f"config = ServerConfig(project=Path({str(project)!r}), watch=False)\n"
        "app, state = build_server(config, environ={}, secrets=secrets)\n"
        "assert state.runtime.tracing is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
          "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
         "OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported: Syncline exports http/protobuf"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"},
         "OTEL_TRACES_EXPORTER: 'zipkin' is not supported (use otlp, console or none)"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
         "OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL, got "
         "'collector:4318/v1/traces'"),
    ],
)
def test_unusable_otel_settings_are_usage_errors(
    tmp_path: Path, variables: dict[str, str], message: str
) -> None:
    project = traced_project(tmp_path, "http://127.0.0.1:9")
    env = {**os.environ, **{f"SYNCLINE_SECRET_{k}": v for k, v in ALL_SECRETS.items()},
           **variables}
    done = subprocess.run([sys.executable, "-m", "engine.cli", "serve", str(project),
                           "--port", str(free_port()), "--no-watch"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"error: {message}" in done.stderr
