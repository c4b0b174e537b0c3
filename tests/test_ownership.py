"""Domain ownership: owners are Systems, writes into a field's owner come from the owner's own
flows (or say why), and `syncline owners` prints the matrix. Broken projects for E_OWNERSHIP and
unknown owners are in tests/corpus/ownership."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.compiler import compile_project
from engine.errors import DefinitionErrors

ROOT = Path(__file__).parent.parent
Project = Callable[[dict[str, str]], Path]

SYSTEMS = """\
apiVersion: syncline/v1
kind: System
metadata: {name: crm}
spec:
  baseUrl: ${env.TARGET_URL}
  operations:
    update-account: {method: PATCH, path: "/accounts/{id}", schema: account}
  webhooks: {scheme: none}
---
apiVersion: syncline/v1
kind: System
metadata: {name: erp}
spec:
  baseUrl: ${env.TARGET_URL}
  operations:
    create-order: {method: POST, path: /orders, schema: account}
    cancel-order: {method: POST, path: "/orders/{id}/cancel", schema: account}
  webhooks: {scheme: none}
---
apiVersion: syncline/v1
kind: Schema
metadata: {name: account}
spec:
  owner: crm
  fieldOwners: {customer.erp_id: erp, plan: erp}
  jsonSchema: {type: object}
---
apiVersion: syncline/v1
kind: Mapping
metadata: {name: to-account}
spec:
  fields: {name: Name, plan: Plan, customer.erp_id: ErpId}
"""

ROUTER = """\
apiVersion: syncline/v1
kind: Flow
metadata: {name: router-{system}}
spec:
  trigger: {webhook: {path: /hooks/{system}, system: {system}}}
  steps:
    - id: out
      emit: {type: com.acme.{system}.changed}
"""


def _flow(trigger: str, steps: str) -> str:
    return f"""\
apiVersion: syncline/v1
kind: Flow
metadata: {{name: f}}
spec:
  trigger: {trigger}
  steps:
{steps}"""


def _compile(project: Project, trigger: str, steps: str) -> list[str]:
    root = project({"flows/systems.yaml": SYSTEMS, "flows/f.yaml": _flow(trigger, steps),
                    "flows/routers.yaml": ROUTER.replace("{system}", "erp") + "---\n"
                    + ROUTER.replace("{system}", "crm")})
    try:
        plan = compile_project(root, environ={})
    except DefinitionErrors as exc:
        return [d.format() for d in exc.diagnostics]
    return [d.format() for d in plan.warnings]


CRM_WRITE = """\
    - id: w
      call: {{system: crm, operation: update-account, params: {{id: data.id}}, body: {body}}}
"""


def test_a_write_into_the_owner_from_another_systems_flow_is_an_error(project: Project) -> None:
    found = _compile(project, "{webhook: {path: /hooks/x, system: erp}}",
                     CRM_WRITE.format(body='"{name: data.name, plan: data.plan}"'))
    assert found == [
        "flows/f.yaml:8:77: error[E_OWNERSHIP] step 'w' of flow 'f@1' writes field 'name' of "
        "'account@1' into 'crm', which owns it, from a flow triggered by 'erp': master data is "
        "changed only by its owner (give the step authority: {override: \"why\"} if this is "
        "intended)"]


def test_the_trigger_is_followed_through_events(project: Project) -> None:
    body = CRM_WRITE.format(body='"{name: data.name}"')
    from_crm = _compile(project, "{event: com.acme.crm.changed}", body)
    from_erp = _compile(project, "{event: com.acme.erp.changed}", body)
    assert from_crm == []  # the owner's own change written back to it
    assert len(from_erp) == 1 and "triggered by 'erp'" in from_erp[0]


def test_an_api_triggered_flow_is_nobody_s_change(project: Project) -> None:
    found = _compile(project, "{api: {path: /api/x}}", CRM_WRITE.format(body='"{name: data.n}"'))
    assert "from a flow no System's change triggers" in found[0]


def test_copies_into_non_owners_are_the_normal_sync(project: Project) -> None:
    steps = CRM_WRITE.format(body='"{plan: data.plan, customer: {erp_id: data.c}}"')
    assert _compile(project, "{webhook: {path: /hooks/x, system: erp}}", steps) == []


def test_an_override_says_why_and_passes(project: Project) -> None:
    override = "      authority: {override: legal renames come from the ERP}\n"
    steps = CRM_WRITE.format(body='"{name: data.name}"').replace(
        "    - id: w\n", "    - id: w\n" + override)
    assert _compile(project, "{webhook: {path: /hooks/x, system: erp}}", steps) == []


@pytest.mark.parametrize(("body", "field"), [
    ("{map: to-account}", "'customer.erp_id', 'plan'"),            # a mapping's targets
    ("{const: {customer: {erp_id: E1}}}", "'customer.erp_id'"),    # a const object
    ('"{customer: data.customer}"', "'customer'"),                 # the parent of erp's field
])
def test_written_fields_come_from_mappings_consts_and_multiselects(
        project: Project, body: str, field: str) -> None:
    steps = f"""\
    - id: w
      call: {{system: erp, operation: create-order, body: {body}}}
"""
    found = _compile(project, "{webhook: {path: /hooks/x, system: crm}}", steps)
    assert len(found) == 1 and f"writes field{'s' if ',' in field else ''} {field} of" in found[0]
    assert "into 'erp'" in found[0]


def test_a_map_steps_output_as_body_is_known(project: Project) -> None:
    steps = """\
    - id: m
      map: to-account
    - id: w
      call: {system: crm, operation: update-account, params: {id: data.id}, body: steps.m}
"""
    found = _compile(project, "{webhook: {path: /hooks/x, system: erp}}", steps)
    assert "writes field 'name' of" in found[0]


def test_compensate_is_a_write_too(project: Project) -> None:
    steps = """\
    - id: w
      call: {system: crm, operation: update-account, params: {id: data.id}, body: "{plan: data.p}"}
      compensate: {system: erp, operation: cancel-order, params: {id: data.id},
                   body: {const: {plan: cancelled}}}
"""
    found = _compile(project, "{webhook: {path: /hooks/x, system: crm}}", steps)
    assert len(found) == 1 and "step 'w#compensate'" in found[0] and "field 'plan'" in found[0]


@pytest.mark.parametrize("body", ['{template: "{{ data }}"}', "data.account", "steps.m.name"])
def test_unknowable_fields_warn_and_still_compile(project: Project, body: str) -> None:
    steps = f"""\
    - id: m
      map: to-account
    - id: w
      call: {{system: crm, operation: update-account, params: {{id: data.id}}, body: {body}}}
"""
    found = _compile(project, "{webhook: {path: /hooks/x, system: erp}}", steps)
    assert len(found) == 1 and "warning[W_OWNERSHIP_UNKNOWN] step 'w' of flow 'f@1'" in found[0]


def test_the_reference_project_declares_owners_and_passes() -> None:
    plan = compile_project(ROOT, environ={})
    assert not [d for d in plan.warnings if "OWNERSHIP" in d.code]
    result = CliRunner().invoke(main, ["owners", str(ROOT), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {(r["entity"], r["field"]): r for r in json.loads(result.output)}
    owners = {entity.split("@")[0]: r["owner"] for (entity, field), r in rows.items()
              if field == "*"}
    for entity in ("customer", "product", "price", "sales-order", "invoice", "entitlement"):
        assert entity in owners  # customer, product, pricing, contract, invoice, entitlement
    account = rows[("crm-account@1", "*")]["writes"]
    assert {"flow": "invoice-paid@1", "step": "crm", "system": "crm", "operation":
            "update-account", "kind": "override",
            "override": "payment collection decides whether an account is Active"} in account
    assert {w["kind"] for w in rows[("entitlement@1", "*")]["writes"]} == {"copy"}


@pytest.mark.parametrize(("fmt", "expected"), [
    ("text", "crm-account@1       Seats__c                billing  subscription-amended@1 crm "
             "-> crm (copy)"),
    ("markdown", "| crm-account@1 | `Seats__c` | **billing** | subscription-amended@1 crm -> crm "
                 "(copy) |"),
    ("mermaid", "  sys_billing ==>|owns| f_crm_account_1_Seats__c"),
])
def test_owners_prints_the_matrix_for_people(fmt: str, expected: str) -> None:
    result = CliRunner().invoke(main, ["owners", str(ROOT), "--format", fmt])
    assert result.exit_code == 0
    assert expected in result.output.splitlines()


def test_owners_of_a_broken_project_reports_and_exits_1() -> None:
    result = CliRunner().invoke(main, ["owners", str(ROOT / "tests/corpus/ownership")])
    assert result.exit_code == 1
    assert "error[E_OWNERSHIP]" in result.output


def test_every_system_a_call_routes_to_is_checked(project: Project) -> None:
    steps = """\
    - id: w
      call:
        system: {route: data.region, cases: {EU: erp}, default: crm}
        operation: update-account
        params: {id: data.id}
        body: "{name: data.name}"
"""
    systems = SYSTEMS.replace("    create-order: {method: POST, path: /orders, schema: account}\n",
                              "    create-order: {method: POST, path: /orders, schema: account}\n"
                              "    update-account: {method: PATCH, path: \"/a/{id}\", "
                              "schema: account}\n")
    root = project({"flows/systems.yaml": systems,
                    "flows/f.yaml": _flow("{webhook: {path: /hooks/x, system: erp}}", steps)})
    with pytest.raises(DefinitionErrors) as caught:
        compile_project(root, environ={})
    [error] = [d.format() for d in caught.value.diagnostics]
    assert "writes field 'name' of 'account@1' into 'crm'" in error  # the default, not erp


def test_owners_lists_writes_it_cannot_check_as_unknown(project: Project) -> None:
    steps = CRM_WRITE.format(body="data.account")
    root = project({"flows/systems.yaml": SYSTEMS,
                    "flows/f.yaml": _flow("{webhook: {path: /hooks/x, system: erp}}", steps)})
    result = CliRunner().invoke(main, ["owners", str(root), "--format", "json"])
    assert result.exit_code == 0
    assert "warning[W_OWNERSHIP_UNKNOWN]" in result.stderr
    rows = {(r["entity"], r["field"]): r["writes"] for r in json.loads(result.stdout)}
    assert rows[("account@1", "*")] == [{"flow": "f@1", "step": "w", "system": "crm",
                                         "operation": "update-account", "kind": "unknown"}]
    assert rows[("account@1", "plan")] == []
