"""Shadow calls against a real HTTP target and a real SQLite store: the candidate gets the same
request with its own idempotency key, the comparison lands in the lineage and the metrics, the
run's outcome and output are the primary's whatever the candidate does, a slow candidate never
holds the primary's connections, and `syncline shadow report` sums it up."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from runtime_kit import (
    CLOUD_SYSTEM,
    LiveTarget,
    Target,
    detail_json,
    flow,
    meta,
    running,
    write_project,
)

from engine.cli import main
from engine.compiler import compile_project
from engine.errors import DefinitionErrors
from engine.runtime.calls import Calls
from engine.runtime.shadow import differences
from engine.runtime.steps import build_request
from engine.server.metrics import Metrics

pytestmark = pytest.mark.anyio

# The erp step's policy: `fast` from runtime_kit, with room for the primary's deliberate 0.3 s
# (see `_slow_primary`) however loaded the machine is, so the step makes one attempt.
STEADY = """\
apiVersion: syncline/v1
kind: RetryPolicy
metadata: {name: steady, owner: qa}
spec:
  maxAttempts: 4
  backoff: {initial: 50ms, multiplier: 2, max: 200ms, jitter: full}
  timeout: 5s
  retryOn: [timeout, network, "429", "5xx"]
"""
CLOUD = f"{CLOUD_SYSTEM}---\n{STEADY}"



def _flow(compare: str = "{echo: body.echo}", extra: str = "") -> str:
    return flow("shadowed", f"""
    - id: erp
      call: {{system: erp, operation: create, params: {{ref: data.n}}, body: data}}
      shadow: {{system: erp-cloud, compare: "{compare}"{extra}}}
      retry: steady
    """)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def target() -> Iterator[tuple[Target, str]]:
    live = LiveTarget()
    with live as target:
        yield target, live.url


async def _runs(root: Path, n: int = 1, metrics: Metrics | None = None) -> list[dict[str, Any]]:
    async with running(root, observer=metrics) as (runtime, plan):
        accepted = [await runtime.ingest(plan.flows["shadowed"], {"n": i}, meta(i))
                    for i in range(n)]
        for a in accepted:
            await runtime.wait(a.run_id, 10)
        return [await detail_json(runtime, a.run_id) for a in accepted]


def _slow_primary(tgt: Target) -> None:
    """Give the candidate time to answer whatever the machine's load: the step waits for it at
    most as long as the primary took."""
    tgt.delay["/orders"] = 0.3


def _erp(detail: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in detail["steps"] if s["id"] == "erp")


async def test_a_matching_shadow_is_recorded_and_counted(
        tmp_path: Path, target: tuple[Target, str]) -> None:
    tgt, url = target
    _slow_primary(tgt)
    root = write_project(tmp_path, url, _flow(), {"flows/cloud.yaml": CLOUD})
    metrics = Metrics()
    [detail] = await _runs(root, metrics=metrics)
    assert detail["state"] == "succeeded"
    [primary] = tgt.to("/orders")
    [mirrored] = tgt.to("/cloud/v2/orders/0")
    assert mirrored.body == primary.body == {"n": 0}
    assert mirrored.key and primary.key and mirrored.key != primary.key
    step = _erp(detail)
    assert step["output"]["body"]["path"] == "/orders"          # the primary's answer
    assert step["attempts"][0]["response"]["shadow"] == {
        "system": "erp-cloud", "result": "match", "status": 201}
    assert ('syncline_shadow_total{flow="shadowed",result="match",step="erp",system="erp-cloud"} '
            "1.0") in metrics.render().decode()


async def test_a_mismatch_names_the_paths(tmp_path: Path, target: tuple[Target, str]) -> None:
    tgt, url = target
    _slow_primary(tgt)
    root = write_project(tmp_path, url, _flow("{id: body.id, echo: body.echo}"),
                         {"flows/cloud.yaml": CLOUD})
    [detail] = await _runs(root)
    assert detail["state"] == "succeeded"
    shadow = _erp(detail)["attempts"][0]["response"]["shadow"]
    assert (shadow["result"], shadow["paths"]) == ("mismatch", ["id"])


@pytest.mark.parametrize("answer", [500, 409, ("sleep", 1.5)])
async def test_a_failing_or_slow_candidate_never_changes_the_run(
        tmp_path: Path, target: tuple[Target, str], answer: Any) -> None:
    tgt, url = target
    tgt.script["/cloud/v2/orders/0"] = [answer]
    root = write_project(tmp_path, url, _flow(), {"flows/cloud.yaml": CLOUD})
    [detail] = await _runs(root)
    assert detail["state"] == "succeeded"
    step = _erp(detail)
    assert len(step["attempts"]) == 1 and step["output"]["status"] == 201
    shadow = step["attempts"][0]["response"]["shadow"]
    assert shadow["result"] == "error"
    if isinstance(answer, int):
        assert shadow["status"] == answer
    else:  # waited at most the primary's latency, not the candidate's 1.5 s
        assert shadow["error"].endswith("(the primary's latency)")
        attempt = step["attempts"][0]
        assert attempt["duration_ms"] < 1500
    assert len(tgt.to("/cloud/v2/orders/0")) == 1   # never retried


async def test_a_failed_primary_attempt_records_no_comparison(
        tmp_path: Path, target: tuple[Target, str]) -> None:
    tgt, url = target
    _slow_primary(tgt)
    tgt.script["/orders"] = [503]
    root = write_project(tmp_path, url, _flow(), {"flows/cloud.yaml": CLOUD})
    [detail] = await _runs(root)
    assert detail["state"] == "succeeded"
    first, second = _erp(detail)["attempts"]
    assert "shadow" not in (first["response"] or {})
    assert second["response"]["shadow"]["result"] == "match"
    keys = {r.key for r in tgt.to("/cloud/v2/orders/0")}
    assert len(keys) == 1   # a retried shadow keeps its own idempotency key


async def test_a_slow_candidate_cannot_hold_the_primarys_connections(
        tmp_path: Path, target: tuple[Target, str]) -> None:
    tgt, url = target
    tgt.delay["/cloud/v2/orders/1"] = 2.0
    root = write_project(tmp_path, url, _flow(), {"flows/cloud.yaml": CLOUD})
    plan = compile_project(root)
    shadowed = plan.flows["shadowed"].steps[0].action
    systems = plan.systems.values()
    async with Calls(systems, {}, connections=2) as calls:
        context = {"data": {"n": 1}, "steps": {}, "run": {}, "env": {}, "event": {}}
        fake: Any = _Run()
        slow = [asyncio.create_task(calls.send(
            build_request(shadowed.shadow.call, context, fake, f"s{i}"),  # type: ignore[union-attr]
            timeout=5, shadow=True)) for i in range(8)]
        await asyncio.sleep(0.2)
        primary = await calls.send(build_request(shadowed, context, fake, "p"), timeout=5)
        assert primary.status == 201
        assert not any(task.done() for task in slow)   # the candidate is still busy
        for task in slow:
            task.cancel()
        await asyncio.gather(*slow, return_exceptions=True)


class _Run:
    """The few run fields a request is built from."""

    id = "run-1"
    generation = 1
    correlation_id = "corr-1"
    traceparent = None


def test_values_compare_as_json() -> None:
    assert differences({"a": 100, "b": [1, {"c": "x"}]}, {"b": [1.0, {"c": "x"}], "a": 100.0}) == []
    assert differences({"a": 1, "b": [1]}, {"a": True, "b": [1, 2], "c": None}) == ["a", "b"]
    assert differences({"t": {"x": 1}}, {"t": {"x": 2, "y": 3}}) == ["t.x", "t.y"]


def _errors(tmp_path: Path, flows: str) -> list[str]:
    root = write_project(tmp_path, "http://127.0.0.1:9", flows, {"flows/cloud.yaml": CLOUD})
    with pytest.raises(DefinitionErrors) as caught:
        compile_project(root)
    return [d.format() for d in caught.value.diagnostics]


def test_a_shadow_of_a_read_is_refused(tmp_path: Path) -> None:
    flows = flow("shadowed", """
    - id: erp
      call: {system: erp, operation: lookup}
      shadow: {system: erp-cloud}
    """)
    [error] = _errors(tmp_path, flows)
    assert error.startswith("flows/flows.yaml:9:7: error[E_SHADOW] step 'erp' shadows 'lookup', "
                            "which writes nothing")


def test_a_shadow_onto_the_calls_own_system_is_refused(tmp_path: Path) -> None:
    flows = _flow().replace("shadow: {system: erp-cloud", "shadow: {system: erp")
    assert _errors(tmp_path, flows) == [
        "flows/flows.yaml:9:16: error[E_SHADOW] step 'erp' shadows its call onto 'erp', which "
        "the call itself goes to"]


def test_the_candidate_needs_the_operation(tmp_path: Path) -> None:
    flows = _flow().replace("operation: create", "operation: slow")
    assert _errors(tmp_path, flows) == [
        "flows/flows.yaml:9:16: error[E_REF] system 'erp-cloud' has no operation 'slow' "
        "(a shadow's System needs the call's operation)"]


def test_a_shadow_without_a_call_is_refused(tmp_path: Path) -> None:
    flows = flow("shadowed", """
    - id: erp
      set: {x: data.x}
      shadow: {system: erp-cloud}
    """)
    [error] = _errors(tmp_path, flows)
    assert "error[E_SHADOW] step 'erp' has a shadow but no call to mirror" in error


async def test_shadow_report_sums_up_the_runs(tmp_path: Path, target: tuple[Target, str]) -> None:
    tgt, url = target
    _slow_primary(tgt)
    tgt.script["/cloud/v2/orders/1"] = [("json", 201, {"echo": {"n": "different"}})]
    tgt.script["/cloud/v2/orders/2"] = [500]
    root = write_project(tmp_path, url, _flow(), {"flows/cloud.yaml": CLOUD})
    await _runs(root, n=4)
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, main, ["shadow", "report", "--project",
                                                            str(root), "--format", "json"])
    assert result.exit_code == 0, result.output
    [group] = json.loads(result.output)["shadows"]
    assert (group["match"], group["mismatch"], group["error"]) == (2, 1, 1)
    assert group["paths"] == {"echo.n": 1}
    text = await asyncio.to_thread(runner.invoke, main, ["shadow", "report", "--project",
                                                          str(root), "--flow", "shadowed"])
    assert text.output.splitlines()[0] == (
        "shadowed erp -> erp-cloud: 2 of 4 matched, 1 mismatched (echo.n x1), 1 errors")


async def test_a_candidate_request_that_cannot_be_built_is_the_shadows_error(
        tmp_path: Path, target: tuple[Target, str]) -> None:
    tgt, url = target
    root = write_project(tmp_path, url, _flow(), {"flows/cloud.yaml": CLOUD})
    async with running(root) as (runtime, plan):
        accepted = await runtime.ingest(plan.flows["shadowed"], {"m": 1}, meta(1))  # no `n`
        await runtime.wait(accepted.run_id, 10)
        detail = await detail_json(runtime, accepted.run_id)
    assert detail["state"] == "succeeded"
    assert _erp(detail)["attempts"][0]["response"]["shadow"] == {
        "system": "erp-cloud", "result": "error",
        "error": "request not sent: path '/v2/orders/{ref}' needs a value for 'ref'"}
    assert [r.path for r in tgt.requests] == ["/orders"]


ROUTED_SHADOW = flow("shadowed", """
    - id: erp
      call:
        system: {route: data.entity, cases: {EU: erp-cloud, US: erp}}
        operation: create
        params: {ref: data.n}
        body: data
      shadow: {system: erp-cloud, compare: "{echo: body.echo}"}
""")


async def test_a_call_routed_to_the_candidate_itself_is_not_shadowed(
        tmp_path: Path, target: tuple[Target, str]) -> None:
    tgt, url = target
    _slow_primary(tgt)
    root = write_project(tmp_path, url, ROUTED_SHADOW, {"flows/cloud.yaml": CLOUD})
    async with running(root) as (runtime, plan):
        eu = await runtime.ingest(plan.flows["shadowed"], {"n": 1, "entity": "EU"}, meta(1))
        us = await runtime.ingest(plan.flows["shadowed"], {"n": 2, "entity": "US"}, meta(2))
        details = [await runtime.wait(a.run_id, 10) and await detail_json(runtime, a.run_id)
                   for a in (eu, us)]
    responses = [_erp(d)["attempts"][0]["response"] for d in details]
    assert "shadow" not in responses[0]
    assert responses[1]["shadow"]["result"] == "match"
    assert sorted(r.path for r in tgt.requests) == [
        "/cloud/v2/orders/1", "/cloud/v2/orders/2", "/orders"]


def test_a_shadow_onto_the_only_system_a_routed_call_goes_to_is_refused(tmp_path: Path) -> None:
    flows = ROUTED_SHADOW.replace("cases: {EU: erp-cloud, US: erp}", "cases: {EU: erp-cloud}")
    [error] = _errors(tmp_path, flows)
    assert "error[E_SHADOW] step 'erp' shadows its call onto 'erp-cloud'" in error


EXAMPLE = Path(__file__).parent.parent / "examples" / "erp-migration"


def test_the_erp_migration_example_validates_and_its_tests_pass() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["validate", str(EXAMPLE)]).exit_code == 0
    tested = runner.invoke(main, ["test", str(EXAMPLE)])
    assert tested.exit_code == 0 and tested.output.splitlines()[-1] == "3 passed", tested.output
    graph = runner.invoke(main, ["graph", str(EXAMPLE)]).output.splitlines()
    assert "  step_deal_to_erp_order_erp -.->|shadow| system_erp_cloud" in graph


def test_a_served_project_counts_shadows_and_reports_them_over_its_admin_api(
        tmp_path: Path, target: tuple[Target, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from serverkit import LiveServer

    tgt, url = target
    _slow_primary(tgt)
    tgt.script["/cloud/v2/orders/2"] = [("json", 201, {"echo": {"n": 2, "extra": True}})]
    root = write_project(tmp_path, url, _flow(), {"flows/cloud.yaml": CLOUD})
    with LiveServer(root, admin_token="t0ken", secrets={}) as live, live.client() as http:
        runs = [http.post("/hooks/x", json={"n": n}, headers={"webhook-id": f"d{n}"}).json()
                for n in (1, 2)]
        auth = {"Authorization": "Bearer t0ken"}
        for run in runs:
            for _ in range(200):
                if http.get(f"/api/v1/runs/{run['run_id']}", headers=auth).json()["state"] \
                        == "succeeded":
                    break
                time.sleep(0.05)
        metrics = http.get("/metrics").text
        monkeypatch.setenv("SYNCLINE_ADMIN_TOKEN", "t0ken")
        result = CliRunner().invoke(main, ["shadow", "report", "--url", live.url])
    assert ('syncline_shadow_total{flow="shadowed",result="match",step="erp",system="erp-cloud"} '
            "1.0") in metrics
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "shadowed erp -> erp-cloud: 1 of 2 matched, 1 mismatched (echo.extra x1), 0 errors"]
