"""`syncline status --url`: a server's status against the local project, over a real socket."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from engine.compiler import compile_project
from engine.compiler.plan import Plan
from tests.gitops_kit import FILES, FLOW, run, write

TOKEN = "drift-test-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(app: Any, lifespan: str = "off") -> Iterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 in a thread; yields its URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan=lifespan
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def status_app(document: dict[str, Any]) -> Starlette:
    """A stand-in server: GET /api/v1/status answers `document` to the admin token only."""

    async def status(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"error": {"code": "unauthorized", "message": "no"}}, 401)
        return JSONResponse(document)

    return Starlette(routes=[Route("/api/v1/status", status)])


def document_of(plan: Plan) -> dict[str, Any]:
    return {
        "environment": plan.environment,
        "digest": plan.digest,
        "flows": {
            name: {"version": f.version, "trigger": f.trigger.kind}
            for name, f in plan.flows.items()
        },
        "reload": {"ok": True, "at": 0.0, "digest": plan.digest, "error": None},
    }


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SYNCLINE_ADMIN_TOKEN", TOKEN)
    monkeypatch.delenv("SYNCLINE_ENV", raising=False)
    flow_v2 = FLOW.replace("version: 1", "version: 2")
    write(tmp_path, {**FILES, "flows/order-flow-v2.yaml": flow_v2})
    return tmp_path


def test_in_sync(project: Path) -> None:
    plan = compile_project(project, environment="prod", environ={})
    with serving(status_app(document_of(plan))) as url:
        result = run("status", "--url", url, "--project", str(project))
    assert result.exit_code == 0, result.output
    assert result.output == f"in sync: {url} runs {plan.digest} [prod]\n"


def test_drift_names_the_digest_and_the_flow_versions(project: Path) -> None:
    running = compile_project(project, environment="prod", environ={})
    write(
        project, {"syncline.yaml": FILES["syncline.yaml"].replace("order-flow: 1", "order-flow: 2")}
    )
    local = compile_project(project, environment="prod", environ={})
    document = document_of(running)
    document["flows"]["old-flow"] = 3
    document["reload"] = {"ok": False, "error": "flows/x.yaml:1:1: error[E_REF] nope\nmore"}
    with serving(status_app(document)) as url:
        result = run("status", "--url", url, "--env", "prod", "--project", str(project))
    assert result.exit_code == 1, result.output
    assert result.output == (
        f"drift: {url} does not run the project [prod]\n"
        f"  digest: the server runs {running.digest}, the project compiles to {local.digest}\n"
        "  flow old-flow: only on the server (@3)\n"
        "  flow order-flow: the server runs @1, the project has @2\n"
        "note: the server's last reload was rejected: flows/x.yaml:1:1: error[E_REF] nope\n"
    )


def test_json_format_and_another_environment(project: Path) -> None:
    plan = compile_project(project, environment="dev", environ={})
    with serving(status_app(document_of(plan))) as url:
        result = run(
            "status", "--url", url, "--env", "prod", "--project", str(project), "--format", "json"
        )
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["in_sync"] is False
    assert report["environment"] == "prod"
    assert report["differences"][0] == (
        "environment: the server runs 'dev', the project was compiled for 'prod'"
    )


def test_a_wrong_token_or_no_server_fails(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = compile_project(project, environment="prod", environ={})
    monkeypatch.setenv("SYNCLINE_ADMIN_TOKEN", "wrong")
    with serving(status_app(document_of(plan))) as url:
        result = run("status", "--url", url, "--project", str(project))
    assert result.exit_code == 1
    assert f"error: {url}/api/v1/status answered 401" in result.output
    result = run("status", "--url", f"http://127.0.0.1:{free_port()}", "--project", str(project))
    assert result.exit_code == 1
    assert "error: cannot reach" in result.output


def test_against_the_real_server(project: Path) -> None:
    from engine.server.config import ServerConfig
    from engine.server.serve import build_server

    config = ServerConfig.from_environ(
        {"SYNCLINE_ADMIN_TOKEN": TOKEN}, project=project, environment="prod", watch=False
    )
    app, _ = build_server(
        config, environ={}, secrets={}, database=str(project / ".syncline" / "test.db")
    )
    with serving(app, lifespan="on") as url:
        result = run("status", "--url", url, "--project", str(project))
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"in sync: {url} runs sha256:")
        write(
            project,
            {"syncline.yaml": FILES["syncline.yaml"].replace("order-flow: 1", "order-flow: 2")},
        )
        result = run("status", "--url", url, "--project", str(project))
    assert result.exit_code == 1, result.output
    assert "  flow order-flow: the server runs @1, the project has @2\n" in result.output
