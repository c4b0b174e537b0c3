"""The one local-runtime harness of the commands: a started `Runtime` on a SQLite store (a
temporary one unless told otherwise), used by `syncline run` (`engine.commands.runs`) and by
flow tests (`engine.commands.flowtests`), and how they run one flow on a payload."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from engine.compiler.compiled import CompiledFlow
from engine.compiler.plan import Plan
from engine.runtime.runtime import EventMeta, Runtime
from engine.runtime.shadow import shadow_results
from engine.runtime.stubs import StubBackbone, StubTransport
from engine.server.views import run_detail
from engine.store.base import RunRecord
from engine.store.sqlite import SQLiteStore

POLL = 0.05  # seconds between claims: one local run should not wait for the next poll


@asynccontextmanager
async def local_runtime(
    plan: Plan,
    *,
    store_file: Path | None = None,
    secrets: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    grace: float = 1.0,
) -> AsyncIterator[Runtime]:
    """A started Runtime executing `plan` on the SQLite file `store_file`, or (None) on a
    temporary one deleted afterwards; stopped with `grace` seconds for steps in flight. Its
    schedules and polls do not fire (a poll flow's test runs it on the item it gives)."""
    with tempfile.TemporaryDirectory(prefix="syncline-") as tmp:
        path = store_file or Path(tmp) / "syncline.db"
        async with SQLiteStore(path) as store:
            backbone = StubBackbone() if transport is not None else None  # stubbed: no NATS
            runtime = Runtime(store, plan, secrets=secrets, transport=transport, poll=POLL,
                              backbone=backbone)
            await runtime.start(timers=False)  # no tick, poll or stream: one flow on a payload
            try:
                yield runtime
            finally:
                await runtime.stop(grace=grace)


async def run_once(
    runtime: Runtime, flow: CompiledFlow, data: Any, source: str, timeout: float
) -> RunRecord:
    """Ingest `data` for `flow` (a new event from `source`) and wait until its run settles."""
    meta = EventMeta(id=None, type=f"{source}:{flow.name}", source=f"syncline-{source}")
    acceptance = await runtime.ingest(flow, data, meta)
    return await runtime.wait(acceptance.run_id, timeout)


async def run_and_describe(
    runtime: Runtime, flow: CompiledFlow, data: Any, stubs: StubTransport, timeout: float
) -> dict[str, Any]:
    """Run `flow` on `data` against `stubs` and describe what it did: state, reason, the calls,
    emits and publishes, the output, each step's output and state, and the run's full detail."""
    run = await run_once(runtime, flow, data, "test", timeout)
    found = await runtime.run_detail(run.id)
    detail = {} if found is None else run_detail(found)
    steps = {s["id"]: s for s in detail.get("steps", [])}
    output = None
    if run.state == "succeeded":
        output = (await runtime.api_result(run)).output
    emits = [
        {"type": s["output"]["type"], "data": s["output"]["data"]}
        for s in steps.values()
        if flow.step(s["id"]).kind == "emit" and s["state"] == "succeeded"
    ]
    stored = runtime.backbone.published if isinstance(runtime.backbone, StubBackbone) else []
    publishes = [{"subject": subject, "type": event["type"], "data": event.get("data")}
                 for subject, event in stored]
    return {
        "run_id": run.id,
        "state": run.state,
        "reason": run.reason.code if run.reason else None,
        "reason_message": run.reason.message if run.reason else None,
        "calls": [
            {"system": c.system, "operation": c.operation, "body": c.body}
            for c in stubs.logical_calls()
        ],
        "emits": emits,
        "publishes": publishes,  # what reached the (in-memory) backbone, once per event id
        "output": output,
        "steps": {sid: s["output"] for sid, s in steps.items()},
        "step_states": {sid: s["state"] for sid, s in steps.items()},
        "shadows": dict(shadow_results(detail)),  # step id -> its (last) shadow result
        "detail": detail,
    }
