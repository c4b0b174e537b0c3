"""`syncline serve`: compile the project, open the store, start the runtime and run the app on
uvicorn (uvloop and httptools when installed).

SIGTERM (or Ctrl-C) shuts down gracefully: uvicorn stops accepting connections and finishes the
requests in progress, the runtime stops claiming work and lets in-flight steps checkpoint, the
store flushes, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from engine import logs
from engine.compiler import compile_project
from engine.compiler.plan import Plan
from engine.errors import UsageError
from engine.runtime import Runtime
from engine.runtime.backbone import Backbone
from engine.runtime.calls import require_secrets
from engine.runtime.tracing import tracing_from_environ
from engine.server.app import Dispatch, create_app
from engine.server.config import ServerConfig
from engine.server.logevents import store_description, syncline_version
from engine.server.metrics import Metrics
from engine.server.protocol import uvicorn_options
from engine.server.reload import Reloader
from engine.server.state import ServerState
from engine.store import Store, open_store

SECRET_PREFIX = "SYNCLINE_SECRET_"
log = logging.getLogger("syncline.server")


def load_secrets(environ: Mapping[str, str], file: Path | None = None) -> dict[str, str]:
    """Secret values by name: SYNCLINE_SECRET_<NAME> variables, then FILE (which wins).

    FILE is JSON (an object of strings) or lines of NAME=value (# comments, optional quotes,
    an optional SYNCLINE_SECRET_ prefix)."""
    secrets = {
        k[len(SECRET_PREFIX) :]: v
        for k, v in environ.items()
        if k.startswith(SECRET_PREFIX) and k != SECRET_PREFIX
    }
    if file is not None:
        secrets.update(_read_secrets_file(file))
    return secrets


def _read_secrets_file(file: Path) -> dict[str, str]:
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read secrets file {file}: {exc.strerror}") from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{file}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        if not all(isinstance(v, str) for v in data.values()):
            raise UsageError(f"{file}: every secret must be a string")
        return {k.removeprefix(SECRET_PREFIX): v for k, v in data.items()}
    found = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"{file}:{number}: expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        found[name.strip().removeprefix(SECRET_PREFIX)] = value
    return found


def build_server(
    config: ServerConfig,
    *,
    environ: Mapping[str, str],
    secrets: Mapping[str, str],
    database: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    concurrency: int = 32,
    store: Store | None = None,
    backbone: Backbone | None = None,
) -> tuple[Dispatch, ServerState]:
    """Everything `serve` runs, built but not started (the app's lifespan starts it); `store`
    (not opened yet) replaces the one `database` names, `backbone` the NATS connections (the
    demo's in-memory one when it has no NATS server). Raises DefinitionErrors for invalid
    definitions and UsageError naming missing secrets."""
    environ = dict(environ)

    def compile_plan() -> Plan:  # off the event loop on reloads
        plan = compile_project(config.project, environment=config.environment, environ=environ)
        plan.warm()  # CPython compiles the generated functions now, not on the first events
        return plan

    plan = compile_plan()
    require_secrets(plan.secret_names, secrets)
    logs.redact([*secrets.values(), config.admin_token or "", config.ingest_token or ""])
    tracing = tracing_from_environ(environ, syncline_version())
    store = store or open_store(database, config.project)
    metrics = Metrics()
    runtime = Runtime(
        store, plan, secrets=secrets, transport=transport, concurrency=concurrency,
        observer=metrics, tracing=tracing, alert_every=config.alert_every, backbone=backbone,
    )  # fmt: skip
    state = ServerState(config, runtime, secrets=secrets, metrics=metrics)
    reloader = (
        Reloader(state, compile_plan, config.project, debounce=config.debounce)
        if config.watch
        else None
    )
    return create_app(state, reloader=reloader, manage_store=store), state


async def run_worker(
    project: Path,
    *,
    environment: str | None,
    environ: Mapping[str, str],
    secrets: Mapping[str, str],
    database: str | None = None,
    concurrency: int = 32,
    grace: float = 10.0,
    stop: asyncio.Event | None = None,
) -> None:
    """`syncline worker`: execute the runs of the store that `syncline serve --no-workers`
    nodes (or any server) accept, until SIGTERM/SIGINT (or `stop` is set).

    Several workers and servers may share one store: runs are leased, so each executes once
    at a time. A run executes with the plan it was accepted under, read from the store, so a
    hot reload on the ingest node needs no worker restart; the worker's own compile of PROJECT
    decides which flows its emitted events start. Raises DefinitionErrors and UsageError as
    `build_server` does."""
    plan = compile_project(project, environment=environment, environ=dict(environ))
    plan.warm()
    require_secrets(plan.secret_names, secrets)
    logs.redact(secrets.values())
    tracing = tracing_from_environ(environ, syncline_version())
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with open_store(database, project) as store:
            every = ServerConfig.from_environ(environ).alert_every  # SYNCLINE_ALERT_EVERY
            runtime = Runtime(store, plan, secrets=secrets, concurrency=concurrency,
                              tracing=tracing, alert_every=every)
            await runtime.start()
            # not the --database value: a PostgreSQL URL may carry a password
            described = store_description(store)
            fields = {"event": "startup", "role": "worker", "worker_id": runtime.worker_id,
                      "version": syncline_version(), "plan_digest": plan.digest,
                      "store": described, "concurrency": concurrency,
                      "tracing": tracing is not None}  # fmt: skip
            log.info("worker %s executing runs (%s store at %s)", runtime.worker_id,
                     described["kind"], described["location"], extra=fields)  # fmt: skip
            try:
                await stop.wait()
            finally:
                await runtime.stop(grace)
        log.info("worker %s stopped", runtime.worker_id,
                 extra={"event": "shutdown", "worker_id": runtime.worker_id})  # fmt: skip
    finally:
        if tracing is not None:
            await asyncio.to_thread(tracing.shutdown)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run_server(
    app: Dispatch,
    host: str,
    port: int,
    *,
    grace: float = 10.0,
    **options: Any,
) -> int:
    """Serve until SIGTERM/SIGINT; return the exit status (0 after a graceful shutdown).
    uvicorn's own lines go through the process's logging (`engine.logs.configure_logging`)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=max(1, round(grace)),
        server_header=False,
        **{**uvicorn_options(), **options},
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal it handled once it has shut down; a no-op handler here turns
    # that into a normal return, so a graceful SIGTERM ends with exit status 0.
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if server.started else 1


def _ignore(signum: int, frame: object) -> None:
    log.debug("signal %d after shutdown", signum)
