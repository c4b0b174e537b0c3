"""Every RetryPolicy rule against a real local HTTP server that answers 429 + Retry-After, 503,
slow responses and 4xx on demand (see runtime_kit.Target)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_kit import LiveTarget, Target, detail_json, flow, meta, running, until, write_project

pytestmark = pytest.mark.anyio

POLICIES = """\
apiVersion: syncline/v1
kind: RetryPolicy
metadata: {name: then-park, owner: qa}
spec:
  maxAttempts: 2
  backoff: {initial: 10ms, max: 10ms}
  onExhausted: park
---
apiVersion: syncline/v1
kind: RetryPolicy
metadata: {name: short-deadline, owner: qa}
spec:
  maxAttempts: 10
  backoff: {initial: 1s, jitter: none}
  deadline: 300ms
---
apiVersion: syncline/v1
kind: System
metadata: {name: down, owner: qa}
spec:
  baseUrl: "http://127.0.0.1:9"
  idempotencyHeader: Idempotency-Key
  operations:
    create: {method: POST, path: /orders}
"""

FLOWS = "---\n".join(
    [
        flow(
            "write",
            """
    - id: erp
      call: {system: erp, operation: create, body: data}
      retry: fast
""",
        ),
        flow(
            "write-park",
            """
    - id: erp
      call: {system: erp, operation: create, body: data}
      retry: then-park
""",
            trigger="{api: {path: /api/park}}",
        ),
        flow(
            "write-deadline",
            """
    - id: erp
      call: {system: erp, operation: create, body: data}
      retry: short-deadline
""",
            trigger="{api: {path: /api/deadline}}",
        ),
        flow(
            "write-down",
            """
    - id: erp
      call: {system: down, operation: create, body: data}
      retry: fast
""",
            trigger="{api: {path: /api/down}}",
        ),
        flow(
            "quick",
            """
    - id: s
      set: {x: "`1`"}
""",
            trigger="{api: {path: /api/quick}}",
        ),
    ]
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Target, Path]]:
    live = LiveTarget()
    with live as target:
        yield target, write_project(tmp_path, live.url, FLOWS, {"flows/policies.yaml": POLICIES})


async def run_once(root: Path, flow_name: str, data: object = None, **kw: object):
    async with running(root, **kw) as (runtime, plan):
        acceptance = await runtime.ingest(plan.flows[flow_name], data or {"n": 1}, meta(1))
        run = await runtime.wait(acceptance.run_id, 15)
        return run, await detail_json(runtime, run.id)


def attempts(detail: dict, step: str = "erp") -> list[dict]:
    return next(s for s in detail["steps"] if s["id"] == step)["attempts"]


async def test_5xx_is_retried_with_the_same_key_then_succeeds(env):
    target, root = env
    target.script["/orders"] = [503, 502]
    run, detail = await run_once(root, "write")
    assert run.state == "succeeded"
    requests = target.to("/orders")
    assert [r.key for r in requests] == [requests[0].key] * 3
    assert [a["status"] for a in attempts(detail)] == [503, 502, 201]
    assert [a["outcome"] for a in attempts(detail)] == ["status", "status", "ok"]
    assert len(target.writes) == 1


async def test_429_retry_after_is_honoured(env):
    target, root = env
    target.script["/orders"] = [("retry-after", 429, 1)]
    run, _ = await run_once(root, "write")
    assert run.state == "succeeded"
    first, second = target.to("/orders")
    assert second.at - first.at >= 0.95   # the policy's backoff alone would be <= 50 ms


async def test_attempt_timeout_is_retried_and_the_target_deduplicates(env):
    target, root = env
    target.script["/orders"] = [("sleep", 1.0)]   # longer than the policy's 500 ms timeout
    run, detail = await run_once(root, "write")
    assert run.state == "succeeded"
    assert attempts(detail)[0]["outcome"] == "timeout"
    assert len({r.key for r in target.to("/orders")}) == 1
    assert all(len(bodies) == 1 for bodies in target.writes.values())


async def test_4xx_parks_with_the_targets_error(env):
    target, root = env
    target.script["/orders"] = [400]
    run, _ = await run_once(root, "write")
    assert run.state == "parked"
    assert (run.reason.code, run.reason.step) == ("HTTP_400", "erp")
    assert "E400 scripted" in run.reason.message
    assert len(target.to("/orders")) == 1


async def test_409_succeeds_with_the_error_response_as_output(env):
    target, root = env
    target.script["/orders"] = [409]
    run, detail = await run_once(root, "write")
    assert run.state == "succeeded"
    output = next(s for s in detail["steps"] if s["id"] == "erp")["output"]
    assert output["status"] == 409 and output["body"]["error"]["code"] == "E409"


async def test_on_error_fail_applies_on_failure(env):
    target, root = env
    target.script["/orders"] = [422]
    run, _ = await run_once(root, "write")
    assert run.state == "parked" and run.reason.code == "HTTP_422"   # onFailure: park


async def test_exhausted_retries_dead_letter(env):
    target, root = env
    target.script["/orders"] = [503] * 4
    run, detail = await run_once(root, "write")
    assert run.state == "dead-lettered"
    assert run.reason.code == "RETRIES_EXHAUSTED"
    assert len(target.to("/orders")) == 4 and len(attempts(detail)) == 4


async def test_exhausted_retries_park_when_the_policy_says_so(env):
    target, root = env
    target.script["/orders"] = [500, 500]
    run, _ = await run_once(root, "write-park")
    assert run.state == "parked" and run.reason.code == "RETRIES_EXHAUSTED"


async def test_deadline_ends_retries_early(env):
    target, root = env
    target.script["/orders"] = [503]
    run, _ = await run_once(root, "write-deadline")
    assert run.state == "dead-lettered" and "deadline" in run.reason.message
    assert len(target.to("/orders")) == 1


async def test_network_errors_are_retried_then_dead_lettered(env):
    _, root = env
    run, detail = await run_once(root, "write-down")
    assert run.state == "dead-lettered"
    assert {a["outcome"] for a in attempts(detail)} == {"network"}


async def test_a_waiting_run_holds_no_worker(env):
    target, root = env
    target.script["/orders"] = [("retry-after", 429, 1)]
    async with running(root, concurrency=1) as (runtime, plan):
        slow = await runtime.ingest(plan.flows["write"], {"n": 1}, meta(1))
        await until(lambda: target.to("/orders"))
        quick = await runtime.ingest(plan.flows["quick"], {}, meta(2))
        done = await runtime.wait(quick.run_id, 5)
        finished_quick = time.monotonic()
        waited = await runtime.wait(slow.run_id, 10)
    assert done.state == "succeeded" and waited.state == "succeeded"
    assert finished_quick < target.to("/orders")[1].at   # ran while the other run waited
