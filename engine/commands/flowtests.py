"""Flow `tests:` under `syncline test`: each test runs through the real Runtime on a temporary
store (`engine.commands.harness`), with its Systems stubbed (see `engine.runtime.stubs`); the
result is compared with `expect` (state, reason, calls, emits, publishes, output, step outputs)
and a mismatch shows a diff, plus the steps that were skipped because their `when` was false."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.commands.harness import local_runtime, run_and_describe
from engine.commands.results import TestResult, diff, fixture_base, load_fixture, located, selected
from engine.compiler.compiled import CompiledFlow
from engine.compiler.plan import Plan
from engine.compiler.records import EarlierWrite, FlowTest
from engine.errors import SynclineError
from engine.runtime.calls import OutboundRequest
from engine.runtime.echo import Fingerprints
from engine.runtime.runtime import Runtime
from engine.runtime.stubs import StubTransport, placeholder_secrets
from engine.source import SourceLocation
from engine.store.echoes import Echoes

TEST_TIMEOUT = 30.0
# Flow tests running at once, each on its own runtime and temporary store: a test mostly waits
# (for its store's writer process to start, for its run's polls), so a few at once finish the
# whole set several times sooner without competing much for the CPU.
CONCURRENT_TESTS = 4


def run_flow_tests(plan: Plan, root: Path, pattern: str | None = None) -> list[TestResult]:
    """Every Flow test of the plan whose id matches `pattern`."""
    chosen = [
        (flow, test, where)
        for flow in plan.flow_versions.values()
        for test, where in located(flow.tests, flow.test_locations, flow.location)
        if selected(f"flow:{flow.ident}::{test.name}", pattern)
    ]
    if not chosen:
        return []
    return asyncio.run(_run_all(plan, root, chosen))


async def _run_all(
    plan: Plan, root: Path, chosen: list[tuple[CompiledFlow, FlowTest, SourceLocation | None]]
) -> list[TestResult]:
    """The results in the order of `chosen`; up to CONCURRENT_TESTS tests run at once."""
    gate = asyncio.Semaphore(CONCURRENT_TESTS)

    async def one(flow: CompiledFlow, test: FlowTest, where: SourceLocation | None) -> TestResult:
        async with gate:
            return await run_flow_test(plan, root, flow, test, where)

    return list(await asyncio.gather(*(one(*item) for item in chosen)))


async def run_flow_test(
    plan: Plan, root: Path, flow: CompiledFlow, test: FlowTest, where: SourceLocation | None
) -> TestResult:
    """Run one test in a fresh store and compare what happened with `test.expect`."""

    def result(passed: bool, detail: str = "") -> TestResult:
        return TestResult("flow", flow.ident, test.name, passed, detail, where)

    try:
        data = load_fixture(test.input, test.input_file, fixture_base(root, flow.location), root)
    except SynclineError as exc:
        return result(False, str(exc))
    stubs = StubTransport(plan, test.responses)
    try:
        async with local_runtime(
            plan, secrets=placeholder_secrets(plan), transport=stubs.transport()
        ) as runtime:
            await fingerprint_earlier_writes(runtime, plan, test.written)
            actual = await run_and_describe(runtime, flow, data, stubs, TEST_TIMEOUT)
    except SynclineError as exc:
        return result(False, f"the run failed: {exc}")
    expected, got = _comparable(test, actual)
    if expected == got and not stubs.unstubbed:
        return result(True)
    problems = [f"unstubbed call: {u}" for u in stubs.unstubbed]
    problems += [
        f"step '{step.id}' was skipped: its `when` ({step.when.text}) was false"
        for step in flow.steps
        if actual["step_states"].get(step.id) == "skipped" and step.when is not None
    ]
    return result(False, "\n".join([*problems, diff(expected, got)]).strip())


async def fingerprint_earlier_writes(runtime: Runtime, plan: Plan,
                                     written: Sequence[EarlierWrite]) -> None:
    """A test's `written:`: the fingerprints those writes leave, stored as a run's are (before
    sending, then completed from the answer), so the test's delivery may be their echo."""
    fingerprints = Fingerprints(Echoes(runtime.store), runtime.clock.now)
    for n, write in enumerate(written):
        system = plan.system(write.system)
        operation = system.operations[write.operation]
        request = OutboundRequest(
            system=system, operation=write.operation, method=operation.method,
            path=operation.path, query={}, headers={}, body=write.body, idempotency_key=None,
            correlation_id="test", traceparent=None, params=dict(write.params))
        mark = fingerprints.write(request, f"written-{n + 1}", write.operation)
        if mark is None:
            continue
        await mark.before()
        answer = write.response
        await mark.answered(*((None, None) if answer is None else (answer.status, answer.body)))


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
    if expect.publishes is not None:
        want["publishes"] = [_partial(asdict(p), p.data, "data") for p in expect.publishes]
        got["publishes"] = [
            _partial(a, e.data if i < len(expect.publishes) else a["data"], "data")
            for i, (a, e) in enumerate(_pad(actual["publishes"], expect.publishes))
        ]
    if expect.output is not None:
        want["output"], got["output"] = expect.output, actual["output"]
    if expect.steps:
        want["steps"] = dict(expect.steps)
        got["steps"] = {k: actual["steps"].get(k) for k in expect.steps}
    if expect.shadows:  # only the keys each expectation states (result, paths, system ...)
        want["shadows"] = {k: dict(v) for k, v in expect.shadows.items()}
        got["shadows"] = {k: {f: (actual["shadows"].get(k) or {}).get(f) for f in v}
                          for k, v in expect.shadows.items()}
    return want, got


def _partial(item: dict[str, Any], expected: Any, name: str = "body") -> dict[str, Any]:
    """`item` without `name` when the expectation leaves it out."""
    return item if expected is not None else {k: v for k, v in item.items() if k != name}


def _pad(actual: list[Any], expected: Sequence[Any]) -> list[tuple[Any, Any]]:
    padded = list(expected) + [None] * max(0, len(actual) - len(expected))
    return list(zip(actual, padded, strict=False))
