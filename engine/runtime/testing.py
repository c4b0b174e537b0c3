"""Flow `tests:` under `syncline test`: each test runs through the real Runtime, on a temporary
SQLite store, with its Systems stubbed (see `engine.runtime.stubs`); the result is compared with
`expect` (state, reason, calls, emits, output, step outputs) and a mismatch shows a diff."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.compiler.compiled import CompiledFlow
from engine.compiler.plan import Plan
from engine.compiler.records import FlowTest
from engine.errors import SynclineError
from engine.runtime.runtime import EventMeta, Runtime
from engine.runtime.stubs import StubTransport, placeholder_secrets
from engine.store.sqlite import SQLiteStore
from engine.testing import TestResult, _selected, diff, load_fixture

TEST_TIMEOUT = 30.0


def run_flow_tests(plan: Plan, root: Path, pattern: str | None = None) -> Iterator[TestResult]:
    """Every Flow test of the plan whose id matches `pattern`."""
    selected = [
        (flow, test)
        for flow in plan.flow_versions.values()
        for test in flow.tests
        if _selected(f"flow:{flow.ident}::{test.name}", pattern)
    ]
    if selected:
        yield from asyncio.run(_run_all(plan, root, selected))


async def _run_all(
    plan: Plan, root: Path, selected: list[tuple[CompiledFlow, FlowTest]]
) -> list[TestResult]:
    return [await run_flow_test(plan, root, flow, test) for flow, test in selected]


async def run_flow_test(plan: Plan, root: Path, flow: CompiledFlow, test: FlowTest) -> TestResult:
    """Run one test in a fresh store and compare what happened with `test.expect`."""

    def result(passed: bool, detail: str = "") -> TestResult:
        return TestResult("flow", flow.ident, test.name, passed, detail, flow.location)

    base = root / Path(flow.location.path).parent if flow.location else root
    try:
        data = load_fixture(test.input, test.input_file, base)
    except SynclineError as exc:
        return result(False, str(exc))
    stubs = StubTransport(plan, test.responses)
    try:
        actual = await _execute(plan, flow, data, stubs)
    except SynclineError as exc:
        return result(False, f"the run failed: {exc}")
    expected, actual = _comparable(test, actual)
    problems = [f"unstubbed call: {u}" for u in stubs.unstubbed]
    if expected != actual or problems:
        return result(False, "\n".join([*problems, diff(expected, actual)]).strip())
    return result(True)


async def _execute(
    plan: Plan, flow: CompiledFlow, data: Any, stubs: StubTransport
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="syncline-test-") as tmp:
        async with SQLiteStore(Path(tmp) / "test.db") as store:
            runtime = Runtime(
                store,
                plan,
                secrets=placeholder_secrets(plan),
                transport=stubs.transport(),
                poll=0.05,
            )
            await runtime.start()
            try:
                return await run_and_describe(runtime, flow, data, stubs)
            finally:
                await runtime.stop(grace=1)


async def run_and_describe(
    runtime: Runtime, flow: CompiledFlow, data: Any, stubs: StubTransport
) -> dict[str, Any]:
    """Ingest `data` for `flow`, wait for the run, and describe what it did."""
    meta = EventMeta(id=None, type=f"test:{flow.name}", source="syncline-test")
    acceptance = await runtime.ingest(flow, data, meta)
    run = await runtime.wait(acceptance.run_id, TEST_TIMEOUT)
    detail = await runtime.run_detail(run.id) or {}
    steps = {s["id"]: s for s in detail.get("steps", [])}
    output = None
    if run.state == "succeeded":
        output = (await runtime.api_result(run)).output
    emits = [
        {"type": s["output"]["type"], "data": s["output"]["data"]}
        for s in steps.values()
        if flow.step(s["id"]).kind == "emit" and s["state"] == "succeeded"
    ]
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
        "output": output,
        "steps": {sid: s["output"] for sid, s in steps.items()},
        "detail": detail,
    }


def _comparable(test: FlowTest, actual: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Expected and actual, restricted to what the test states."""
    expect = test.expect
    want: dict[str, Any] = {"state": expect.state}
    got: dict[str, Any] = {"state": actual["state"]}
    if actual["reason"] is not None or expect.reason is not None:
        want["reason"], got["reason"] = expect.reason, actual["reason"]
    if expect.calls is not None:
        want["calls"] = [_partial(asdict(c), c.body) for c in expect.calls]
        got["calls"] = [
            _partial(c, e.body if i < len(expect.calls) else c["body"])
            for i, (c, e) in enumerate(_pad(actual["calls"], expect.calls))
        ]
    if expect.emits is not None:
        want["emits"] = [_partial(asdict(e), e.data, "data") for e in expect.emits]
        got["emits"] = [
            _partial(a, e.data if i < len(expect.emits) else a["data"], "data")
            for i, (a, e) in enumerate(_pad(actual["emits"], expect.emits))
        ]
    if expect.output is not None:
        want["output"], got["output"] = expect.output, actual["output"]
    if expect.steps:
        want["steps"] = dict(expect.steps)
        got["steps"] = {k: actual["steps"].get(k) for k in expect.steps}
    return want, got


def _partial(item: dict[str, Any], expected: Any, name: str = "body") -> dict[str, Any]:
    """`item` without `name` when the expectation leaves it out."""
    return item if expected is not None else {k: v for k, v in item.items() if k != name}


def _pad(actual: list[Any], expected: Sequence[Any]) -> list[tuple[Any, Any]]:
    padded = list(expected) + [None] * max(0, len(actual) - len(expected))
    return list(zip(actual, padded, strict=False))
