"""The compiler's faces through the real CLI: `syncline test` and `syncline graph`."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from engine.cli import main

ROOT = Path(__file__).parent.parent

SCHEMA_AND_MAPPING = """\
apiVersion: syncline/v1
kind: Schema
metadata: {name: order, owner: finance}
spec:
  jsonSchema:
    type: object
    required: [id, total]
    properties:
      id: {type: string}
      code: {type: string}
      total: {type: number}
      customer: {type: object, properties: {name: {type: string}}}
---
apiVersion: syncline/v1
kind: Mapping
metadata: {name: to-order, owner: finance}
spec:
  target: order
  fields:
    id: Id
    code: {template: "{{ source.Code }}"}
    total: {expr: Amount, default: 0}
    customer.name: {expr: Account.Name, required: true}
  tests:
    - name: full
      input: {Id: "1", Code: "00123", Amount: 5, Account: {Name: Acme}}
      expect: {id: "1", code: "00123", total: 5, customer: {name: Acme}}
    - name: wrong expectation
      input: {Id: "2", Code: "7", Account: {Name: Beta}}
      expect: {id: "2", code: "7", total: 1, customer: {name: Beta}}
    - name: missing required
      input: {Id: "3"}
      expectError: REQUIRED
    - name: from files
      inputFile: fixtures/in.json
      expectFile: fixtures/out.yaml
"""


def _project(project) -> Path:
    return project({
        "mappings/order.yaml": SCHEMA_AND_MAPPING,
        "mappings/fixtures/in.json": (
            '{"Id": "4", "Code": "0", "Amount": 1.5, "Account": {"Name": "C"}}'
        ),
        "mappings/fixtures/out.yaml": "{id: '4', code: '0', total: 1.5, customer: {name: C}}\n",
    })


def test_reference_mapping_tests_pass() -> None:
    result = CliRunner().invoke(main, ["test", str(ROOT), "-k", "mapping:"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("passed")


def test_failing_mapping_test_prints_a_diff_and_exits_1(project) -> None:
    result = CliRunner().invoke(main, ["test", str(_project(project))])
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == ".F.."
    assert "___ mapping:to-order@1::wrong expectation ___" in result.output
    assert '-  "total": 1\n+  "total": 0' in result.output
    assert result.output.strip().endswith("3 passed, 1 failed")


def test_k_selects_tests(project) -> None:
    result = CliRunner().invoke(main, ["test", str(_project(project)), "-k", "missing"])
    assert result.exit_code == 0
    assert result.output.strip().endswith("1 passed")


def test_json_report(project) -> None:
    result = CliRunner().invoke(main, ["test", str(_project(project)), "--format", "json"])
    report = json.loads(result.output)
    assert [(r["id"].split("::")[1], r["passed"]) for r in report] == [
        ("full", True), ("wrong expectation", False), ("missing required", True),
        ("from files", True)]


def test_graph_formats_show_flows_steps_systems_and_events() -> None:
    runner = CliRunner()
    as_json = json.loads(runner.invoke(main, ["graph", str(ROOT), "--format", "json"]).output)
    kinds = {n["kind"] for n in as_json["nodes"]}
    assert kinds == {"flow", "step", "system", "event", "route"}
    edges = {(e["source"], e["target"], e["kind"]) for e in as_json["edges"]}
    assert ("step:closed-won-to-order.order", "step:closed-won-to-order.check", "depends") in edges
    # the ERP migration: the order write is a branch per entity, and shadowed onto the cloud ERP
    route = "route:step:closed-won-to-order.erp.create-sales-order"
    assert ("step:closed-won-to-order.erp", route, "calls") in edges
    cases = {(e["target"], e["label"]) for e in as_json["edges"] if e["source"] == route}
    assert cases == {("system:erp-cloud", "EU"), ("system:erp", "default")}
    assert ("step:closed-won-to-order.erp", "system:erp-cloud", "shadow") in edges
    assert ("step:closed-won-to-order.parent", "system:crm", "calls") in edges
    assert ("system:crm", "flow:crm-opportunity-events", "triggers") in edges
    closed_won = "event:com.acme.opportunity.closed-won"
    assert (closed_won, "flow:closed-won-to-order", "triggers") in edges
    mermaid = runner.invoke(main, ["graph", str(ROOT)]).output
    assert mermaid.startswith("flowchart LR\n")
    assert ("step_closed_won_to_order_erp ==>|calls| "
            "route_step_closed_won_to_order_erp_create_sales_order" in mermaid)
    assert ('route_step_closed_won_to_order_erp_create_sales_order ==>|"EU"| system_erp_cloud'
            in mermaid)
    assert "step_closed_won_to_order_erp -.->|shadow| system_erp_cloud" in mermaid
    dot = runner.invoke(main, ["graph", str(ROOT), "--format", "dot"]).output
    assert dot.startswith('digraph "acme-revops" {')
    assert '"step:closed-won-to-order.parent" -> "system:crm" [label="calls"];' in dot
    assert (f'"{route}" -> "system:erp-cloud" [label="EU"' in dot), dot


BIG_MAPPING = """\
apiVersion: syncline/v1
kind: Mapping
metadata: {name: big, owner: finance}
spec:
  fields:
    a: {template: "{% for i in range(7) %}{{ 'x' * 100000 }}{% endfor %}"}
    b: {template: "{% for i in range(source.n) %}{{ 'y' * 100000 }}{% endfor %}"}
  tests:
    - name: each field is within its budget, but not the two together
      input: {n: 7}
      expectError: RESULT_TOO_LARGE
---
apiVersion: syncline/v1
kind: Flow
metadata: {name: big, owner: finance}
spec:
  trigger: {event: big.requested}
  steps:
    - {id: m, map: big}
  tests:
    - name: the step fails with MAPPING_FAILED and the run parks
      input: {n: 7}
      expect: {state: parked, reason: MAPPING_FAILED}
    - name: a smaller one passes
      input: {n: 1}
      expect: {state: succeeded}
"""


def test_a_mapping_result_over_one_mebibyte_fails_the_step(project) -> None:
    result = CliRunner().invoke(main, ["test", str(project({"flows/big.yaml": BIG_MAPPING})),
                                       "-v"])
    assert result.exit_code == 0, result.output
    assert "3 passed" in result.output


def test_flow_tests_that_park_on_purpose_print_no_runtime_log_lines(project) -> None:
    import subprocess
    import sys

    root = project({"flows/big.yaml": BIG_MAPPING})
    done = subprocess.run([sys.executable, "-m", "engine.cli", "test", str(root)],
                          capture_output=True, text=True, check=False,
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
    assert done.stderr == ""  # not "run ... parked: MAPPING_FAILED" from the runtime's log
