"""Routing (`system: {route, cases, default}`) on `call` and `compensate`: checked at compile time,
sent to the System the run's data picks (real SQLite store, real HTTP target), recorded in the
run's lineage, drawn as a branch by `syncline graph`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from runtime_kit import CLOUD_SYSTEM as CLOUD
from runtime_kit import LiveTarget, Target, detail_json, flow, meta, running, write_project

from engine.cli import main
from engine.compiler import compile_project
from engine.errors import DefinitionErrors

pytestmark = pytest.mark.anyio


ROUTED = flow("routed", """
    - id: erp
      call:
        system: {route: data.entity, cases: {EU: erp-cloud, US: erp}, default: erp}
        operation: create
        params: {ref: data.Id}
        body: "{ref: data.Id}"
      compensate:
        system: {route: data.entity, cases: {EU: erp-cloud}, default: erp}
        operation: cancel
        params: {id: steps.erp.body.id}
    - id: fail
      needs: [erp]
      validate:
        input: data
        rules: [{assert: "!(data.fail)", code: FAILED, message: asked to fail}]
""", extra="  onFailure: compensate\n")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def target() -> Iterator[tuple[Target, str]]:
    live = LiveTarget()
    with live as target:
        yield target, live.url


async def _run(root: Path, data: dict[str, object]) -> dict[str, object]:
    async with running(root) as (runtime, plan):
        accepted = await runtime.ingest(plan.flows["routed"], data, meta(str(data["Id"])))
        await runtime.wait(accepted.run_id, 10)
        return await detail_json(runtime, accepted.run_id)


@pytest.mark.parametrize(("entity", "path", "system"), [
    ("EU", "/cloud/v2/orders/O-EU", "erp-cloud"),
    ("US", "/orders", "erp"),
    ("APAC", "/orders", "erp"),       # no case: the default
    (7, "/orders", "erp"),            # a number is compared as its JSON text
])
async def test_a_routed_call_goes_where_the_data_says_and_the_run_records_it(
        tmp_path: Path, target: tuple[Target, str], entity: object, path: str,
        system: str) -> None:
    tgt, url = target
    root = write_project(tmp_path, url, ROUTED, {"flows/cloud.yaml": CLOUD})
    detail = await _run(root, {"Id": "O-EU" if entity == "EU" else "O1", "entity": entity})
    assert detail["state"] == "succeeded", detail
    assert [r.path for r in tgt.requests] == [path]
    erp = next(s for s in detail["steps"] if s["id"] == "erp")  # type: ignore[union-attr]
    request = erp["attempts"][0]["request"]
    value = entity if isinstance(entity, str) else "7"
    assert request["route"] == {"by": "data.entity", "value": value, "system": system}


async def test_a_compensate_is_routed_too(tmp_path: Path, target: tuple[Target, str]) -> None:
    tgt, url = target
    root = write_project(tmp_path, url, ROUTED, {"flows/cloud.yaml": CLOUD})
    detail = await _run(root, {"Id": "O-EU", "entity": "EU", "fail": True})
    assert detail["state"] == "compensated", detail
    assert [(r.method, r.path) for r in tgt.requests] == [
        ("PUT", "/cloud/v2/orders/O-EU"), ("DELETE", "/cloud/v2/orders/X1")]


async def test_no_case_and_no_default_parks_before_writing(
        tmp_path: Path, target: tuple[Target, str]) -> None:
    tgt, url = target
    flows = ROUTED.replace(", default: erp}\n        operation: create",
                           "}\n        operation: create")
    root = write_project(tmp_path, url, flows, {"flows/cloud.yaml": CLOUD})
    detail = await _run(root, {"Id": "O2", "entity": "APAC"})
    assert detail["state"] == "parked"
    assert detail["reason"] == {
        "code": "NO_ROUTE", "step": "erp", "message": 'route data.entity is "APAC": no case '
        "names a System for it and there is no default"}
    assert tgt.requests == []


def _errors(tmp_path: Path, flows: str, cloud: str = CLOUD) -> list[str]:
    root = write_project(tmp_path, "http://127.0.0.1:9", flows, {"flows/cloud.yaml": cloud})
    with pytest.raises(DefinitionErrors) as caught:
        compile_project(root)
    return [d.format() for d in caught.value.diagnostics]


def test_every_routed_system_needs_the_operation(tmp_path: Path) -> None:
    cloud = CLOUD.replace("    create: {method: PUT", "    create-order: {method: PUT")
    assert _errors(tmp_path, ROUTED, cloud) == [
        "flows/flows.yaml:10:46: error[E_REF] system 'erp-cloud' has no operation 'create' "
        "(did you mean 'create-order'?) (every System a call routes to needs it)"]


def test_a_route_to_an_unknown_system_is_located(tmp_path: Path) -> None:
    flows = ROUTED.replace("cases: {EU: erp-cloud, US: erp}", "cases: {EU: erp-clod, US: erp}")
    assert _errors(tmp_path, flows) == [
        "flows/flows.yaml:10:46: error[E_REF] flow refers to unknown System 'erp-clod' "
        "(did you mean 'erp-cloud'?)"]


def test_each_routed_system_gets_the_params_its_path_needs(tmp_path: Path) -> None:
    flows = ROUTED.replace("        params: {ref: data.Id}\n", "")
    found = _errors(tmp_path, flows)
    assert len(found) == 1 and "operation 'create' of system 'erp-cloud' path " in found[0]


def test_graph_draws_a_route_as_a_branch(tmp_path: Path) -> None:
    root = write_project(tmp_path, "http://127.0.0.1:9", ROUTED, {"flows/cloud.yaml": CLOUD})
    result = CliRunner().invoke(main, ["graph", str(root)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert '  route_step_routed_erp_create{"route data.entity"}' in lines
    assert "  step_routed_erp ==>|calls| route_step_routed_erp_create" in lines
    assert '  route_step_routed_erp_create ==>|"EU"| system_erp_cloud' in lines
    assert '  route_step_routed_erp_create ==>|"default"| system_erp' in lines
