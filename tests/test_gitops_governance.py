"""GovernancePolicy: the shipped house rules (policies/governance.yaml), one violating and one
passing project per rule, asserting code, file and line; plus how rules match and fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.compiler import compile_project
from engine.errors import DefinitionErrors
from engine.source import Diagnostic
from tests.projectkit import write_files

REPO = Path(__file__).resolve().parents[1]
HOUSE_RULES = (REPO / "policies" / "governance.yaml").read_text()

PROJECT = """\
apiVersion: syncline/v1
kind: Project
metadata: {name: governed, owner: tests}
spec:
  environments:
    dev:
      vars: {ERP_URL: "http://127.0.0.1:9"}
    prod:
      vars: {ERP_URL: "https://erp.example.com"}
"""

RETRY = """\
apiVersion: syncline/v1
kind: RetryPolicy
metadata: {name: saas-api, owner: platform}
spec: {maxAttempts: 3}
"""

SYSTEM = """\
apiVersion: syncline/v1
kind: System
metadata: {name: erp, owner: finance}
spec:
  baseUrl: ${env.ERP_URL}
  retry: saas-api
  idempotencyHeader: Idempotency-Key
  operations:
    create-order: {method: POST, path: /orders}
"""

FLOW = """\
apiVersion: syncline/v1
kind: Flow
metadata: {name: order-created, owner: revops}
spec:
  trigger: {event: com.acme.order.requested}
  steps:
    - {id: erp, call: {system: erp, operation: create-order, body: data}}
    - {id: done, emit: {type: com.acme.order.created, data: steps.erp.body}}
"""


def write(tmp_path: Path, **overrides: str) -> Path:
    """A governed project: the shipped house rules plus passing definitions, some replaced."""
    files = {
        "syncline.yaml": PROJECT,
        "policies/governance.yaml": HOUSE_RULES,
        "policies/retry.yaml": RETRY,
        "flows/systems.yaml": SYSTEM,
        "flows/order.yaml": FLOW,
    }
    files.update(
        {
            name.replace("__", "/").replace("_yaml", ".yaml"): text
            for name, text in overrides.items()
        }
    )
    return write_files(tmp_path, files)


def violations(root: Path, env: str = "dev") -> list[Diagnostic]:
    with pytest.raises(DefinitionErrors) as caught:
        compile_project(root, environment=env, environ={})
    return sorted(caught.value.diagnostics)


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_the_reference_project_obeys_the_house_rules(env: str) -> None:
    plan = compile_project(REPO, environment=env, environ={})
    assert not [w for w in plan.warnings if w.code == "W_POLICY"]


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_a_compliant_project_passes(tmp_path: Path, env: str) -> None:
    compile_project(write(tmp_path), environment=env, environ={})


def test_owner_required(tmp_path: Path) -> None:
    root = write(tmp_path, policies__retry_yaml=RETRY.replace(", owner: platform", ""))
    (d,) = violations(root)
    assert (d.code, d.location.path, d.location.line) == ("E_POLICY", "policies/retry.yaml", 3)
    assert d.message == (
        "owner-required: every definition needs an owner (metadata.owner, the "
        "team that owns it) (RetryPolicy 'saas-api@1', policy 'house-rules')"
    )


def test_event_type_naming_for_emits(tmp_path: Path) -> None:
    root = write(tmp_path, flows__order_yaml=FLOW.replace("com.acme.order.created", "OrderCreated"))
    (d,) = violations(root)
    assert (d.code, d.location.path, d.location.line) == ("E_POLICY", "flows/order.yaml", 5)
    assert d.message.startswith("event-type-naming: event types follow reverse-DNS naming")


def test_event_type_naming_for_triggers(tmp_path: Path) -> None:
    root = write(
        tmp_path, flows__order_yaml=FLOW.replace("com.acme.order.requested", "com.acme..requested")
    )
    (d,) = violations(root)
    assert (d.code, d.location.path, d.location.line) == ("E_POLICY", "flows/order.yaml", 5)


def test_write_calls_need_idempotency_header(tmp_path: Path) -> None:
    root = write(
        tmp_path, flows__systems_yaml=SYSTEM.replace("  idempotencyHeader: Idempotency-Key\n", "")
    )
    (d,) = violations(root)
    assert (d.code, d.location.path, d.location.line) == ("E_POLICY", "flows/systems.yaml", 7)
    assert d.message.startswith("write-calls-are-safe: a system with write operations declares")


def test_write_calls_need_retry(tmp_path: Path) -> None:
    root = write(tmp_path, flows__systems_yaml=SYSTEM.replace("  retry: saas-api\n", ""))
    (d,) = violations(root)
    assert (d.code, d.location.path, d.location.line) == ("E_POLICY", "flows/systems.yaml", 7)


def test_write_calls_may_inherit_the_projects_default_retry(tmp_path: Path) -> None:
    """Every call falls back to syncline.yaml's defaults.retry: a system need not repeat it,
    but the idempotency header is the system's alone."""
    with_default = PROJECT.replace("spec:\n", "spec:\n  defaults: {retry: saas-api}\n")
    no_retry = SYSTEM.replace("  retry: saas-api\n", "")
    root = write(tmp_path, syncline_yaml=with_default, flows__systems_yaml=no_retry)
    compile_project(root, environ={})
    root = write(
        tmp_path,
        syncline_yaml=with_default,
        flows__systems_yaml=no_retry.replace("  idempotencyHeader: Idempotency-Key\n", ""),
    )
    (d,) = violations(root)
    assert (d.code, d.location.path, d.location.line) == ("E_POLICY", "flows/systems.yaml", 6)
    assert d.message.startswith("write-calls-are-safe: ")


def test_read_only_systems_need_neither(tmp_path: Path) -> None:
    read_only = (
        SYSTEM.replace("  retry: saas-api\n", "")
        .replace("  idempotencyHeader: Idempotency-Key\n", "")
        .replace("method: POST", "method: GET")
    )
    compile_project(write(tmp_path, flows__systems_yaml=read_only), environ={})


def test_prod_https_applies_only_to_prod(tmp_path: Path) -> None:
    root = write(tmp_path, syncline_yaml=PROJECT.replace("https://erp", "http://erp"))
    compile_project(root, environment="dev", environ={})
    (d,) = violations(root, "prod")
    assert (d.code, d.location.path, d.location.line) == ("E_POLICY", "flows/systems.yaml", 5)
    assert d.message == (
        "prod-https: prod systems use https (System 'erp@1', policy 'house-rules')"
    )


def test_warnings_are_printed_but_do_not_fail_validate(tmp_path: Path) -> None:
    rules = HOUSE_RULES.replace(
        "message: prod systems use https\n      severity: error",
        "message: prod systems use https\n      severity: warning",
    )
    root = write(
        tmp_path,
        policies__governance_yaml=rules,
        syncline_yaml=PROJECT.replace("https://erp", "http://erp"),
    )
    result = CliRunner().invoke(main, ["validate", str(root), "--env", "prod"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        "flows/systems.yaml:5:3: warning[W_POLICY] prod-https: prod systems use https "
        "(System 'erp@1', policy 'house-rules')"
    )
    assert result.output.splitlines()[1].startswith("ok: ")


def test_errors_fail_validate_with_file_and_line(tmp_path: Path) -> None:
    root = write(tmp_path, policies__retry_yaml=RETRY.replace(", owner: platform", ""))
    result = CliRunner().invoke(main, ["validate", str(root), "--format", "json"])
    assert result.exit_code == 1
    (d,) = json.loads(result.output)["diagnostics"]
    assert (d["code"], d["file"], d["line"], d["col"]) == ("E_POLICY", "policies/retry.yaml", 3, 1)


CUSTOM = """\
apiVersion: syncline/v1
kind: GovernancePolicy
metadata: {name: custom, owner: platform}
spec:
  rules:
    - id: {id}
      match: {match}
      assert: "{assert_}"
      message: {id} failed
"""


def custom(tmp_path: Path, match: str, assert_: str, rule_id: str = "r") -> Path:
    text = CUSTOM.replace("{id}", rule_id).replace("{match}", match).replace("{assert_}", assert_)
    return write(tmp_path, policies__custom_yaml=text)


def test_invalid_assert_is_e_jmespath_at_the_rule(tmp_path: Path) -> None:
    (d,) = violations(custom(tmp_path, '{kind: "*"}', "metadata.[owner"))
    assert (d.code, d.location.path, d.location.line) == ("E_JMESPATH", "policies/custom.yaml", 8)
    assert d.message.startswith("r: invalid JMESPath 'metadata.[owner'")


def test_unknown_kind_in_match_is_reported(tmp_path: Path) -> None:
    (d,) = violations(custom(tmp_path, "{kind: Flwo}", "metadata.owner"))
    assert (d.code, d.location.line) == ("E_POLICY", 7)
    assert d.message == "r: unknown kind 'Flwo' (did you mean 'Flow'?)"


def test_match_by_name_glob_and_labels(tmp_path: Path) -> None:
    root = custom(
        tmp_path, "{kind: System, name: 'er*', labels: {tier: gold}}", "metadata.description"
    )
    compile_project(root, environ={})  # erp has no tier label: the rule does not apply
    (tmp_path / "flows/systems.yaml").write_text(
        SYSTEM.replace("owner: finance}", "owner: finance, labels: {tier: gold}}")
    )
    (d,) = violations(root)
    assert (d.code, d.location.path, d.location.line) == ("E_POLICY", "flows/systems.yaml", 3)
    (tmp_path / "policies/custom.yaml").write_text(
        CUSTOM.replace("{id}", "r")
        .replace("{match}", "{kind: System, name: 'crm*'}")
        .replace("{assert_}", "metadata.description")
    )
    compile_project(root, environ={})  # the glob does not match erp


def test_zero_is_true_as_jmespath_counts_it(tmp_path: Path) -> None:
    compile_project(custom(tmp_path, "{kind: RetryPolicy}", "`0`"), environ={})


def test_a_host_allowlist_per_environment(tmp_path: Path) -> None:
    allowlist = """\
apiVersion: syncline/v1
kind: GovernancePolicy
metadata: {name: egress, owner: security}
spec:
  rules:
    - id: prod-hosts
      match: {kind: System, environments: [prod]}
      assert: "spec.baseUrl == 'https://erp.example.com' || starts_with(spec.baseUrl, 'https://erp.example.com/')"
      message: prod systems call only allowed hosts
"""
    root = write(tmp_path, policies__egress_yaml=allowlist)
    compile_project(root, environment="prod", environ={})
    evil = PROJECT.replace("https://erp.example.com", "https://erp.example.com.evil.io")
    root = write(tmp_path, policies__egress_yaml=allowlist, syncline_yaml=evil)
    compile_project(root, environment="dev", environ={})
    (d,) = violations(root, "prod")
    assert d.code == "E_POLICY" and d.message.startswith("prod-hosts:")
