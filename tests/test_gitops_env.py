"""Environments: `--env` reaches validate, test, graph, plan and serve (each shown by something
that differs between two environments), and a plan's digest covers the environment's resolved
values while secrets stay references, their values never printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.compiler import compile_project
from engine.tls import tls_context
from tests.gitops_kit import FILES, FLOW, MAPPING, SYSTEM, run, write
from tests.test_gitops_drift import free_port

TLS = tls_context()  # one CA load for the module, not one per client (50-80 ms each)


PROJECT = """\
apiVersion: syncline/v1
kind: Project
metadata: {name: shop, owner: tests}
spec:
  environments:
    dev:
      vars: {ERP_URL: "http://127.0.0.1:9", STATUS: open}
    prod:
      vars: {ERP_URL: "https://erp.example.com", STATUS: won}
      pins: {order-flow: 1}
"""

# The mapping's status is the environment's STATUS; its test expects dev's value.
MAPPING_BY_ENV = MAPPING.replace("status: {const: open}", 'status: {const: "${env.STATUS}"}') + (
    "  tests:\n"
    "    - name: status\n"
    "      input: {Id: '1', Amount: 5}\n"
    "      expect: {id: '1', status: open, amount: 5}\n"
)
FLOW_V2 = FLOW.replace("version: 1", "version: 2").replace("body: steps.order", "body: data")
SECRET = "s3cr3t-value-never-printed"
SYSTEM_WITH_SECRET = SYSTEM.replace(
    "  operations:", '  auth: {type: bearer, token: "${secret.ERP_TOKEN}"}\n  operations:'
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """dev runs order-flow@2, prod pins @1; the System's token is a secret that is set."""
    monkeypatch.delenv("SYNCLINE_ENV", raising=False)
    monkeypatch.setenv("SYNCLINE_SECRET_ERP_TOKEN", SECRET)
    write(
        tmp_path,
        {
            **FILES,
            "syncline.yaml": PROJECT,
            "mappings/to-order.yaml": MAPPING_BY_ENV,
            "flows/systems.yaml": SYSTEM_WITH_SECRET,
            "flows/order-flow-v2.yaml": FLOW_V2,
        },
    )
    return tmp_path


def test_validate_compiles_for_the_environment(project: Path) -> None:
    dev = json.loads(run("validate", str(project), "--format", "json").output)
    prod = json.loads(run("validate", str(project), "--env", "prod", "--format", "json").output)
    assert (dev["ok"], dev["environment"]) == (True, "dev")  # the first one without --env
    assert (prod["ok"], prod["environment"]) == (True, "prod")
    assert dev["digest"] != prod["digest"]
    assert dev["digest"] == compile_project(project, environment="dev", environ={}).digest
    result = run("validate", str(project), "--env", "qa")
    assert result.exit_code == 1
    assert "error[E_ENV] unknown environment 'qa' (known: dev, prod)" in result.output


def test_test_runs_with_the_environments_values(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run("test", str(project), "--env", "dev")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "1 passed"
    result = run("test", str(project), "--env", "prod")
    assert result.exit_code == 1, result.output
    assert '-  "status": "open"\n+  "status": "won"' in result.output
    monkeypatch.setenv("SYNCLINE_ENV", "prod")  # the default of --env
    assert run("test", str(project)).exit_code == 1


def test_graph_shows_the_environments_active_flow_versions(project: Path) -> None:
    def graph(env: str) -> tuple[set[str], set[tuple[str, str, str]]]:
        result = run("graph", str(project), "--env", env, "--format", "json")
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        labels = {n["label"] for n in data["nodes"] if n["kind"] == "flow"}
        return labels, {(e["source"], e["target"], e["kind"]) for e in data["edges"]}

    depends = ("step:order-flow.order", "step:order-flow.erp", "depends")  # @1's body
    dev_flows, dev_edges = graph("dev")
    prod_flows, prod_edges = graph("prod")
    assert (dev_flows, prod_flows) == ({"order-flow@2"}, {"order-flow@1"})
    assert depends in prod_edges and depends not in dev_edges


def test_plan_is_made_for_one_environment(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("base")
    write(base, dict(FILES))  # before STATUS existed
    for env, status in (("dev", "open"), ("prod", "won")):
        result = run("plan", str(project), "--base", str(base), "--env", env, "--format", "json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["environment"] == env
        assert report["digest"]["head"] == compile_project(
            project, environment=env, environ=os.environ
        ).digest
        assert {"path": "vars.STATUS", "op": "+", "old": None, "new": status} in report[
            "settings"
        ]


def test_the_digest_covers_resolved_values_and_secrets_by_reference(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def digest() -> str:
        return str(json.loads(run("validate", str(project), "--format", "json").output)["digest"])

    plan = compile_project(project, environ=os.environ)
    bundle = json.dumps(plan.bundle)
    assert '"token": "${secret.ERP_TOKEN}"' in bundle and SECRET not in bundle
    assert '"baseUrl": "http://127.0.0.1:9"' in bundle  # ${env.ERP_URL}, resolved
    first = digest()
    assert first == plan.digest and first.startswith("sha256:")
    monkeypatch.setenv("SYNCLINE_SECRET_ERP_TOKEN", "another-value")
    assert digest() == first  # a secret's value is not part of the plan
    allowing = PROJECT.replace("spec:\n", "spec:\n  processEnv: [ROUTE]\n", 1)
    write(project, {"syncline.yaml": allowing.replace("127.0.0.1:9", "127.0.0.1:10")})
    assert digest() != first  # a var is
    changed = digest()
    routed = SYSTEM_WITH_SECRET.replace("/orders", '"${env.ROUTE}"')
    write(project, {"flows/systems.yaml": routed})
    monkeypatch.setenv("ROUTE", "/orders")  # not in vars: the process variable processEnv allows
    assert digest() == changed  # the resolved value is what counts: it is the same
    monkeypatch.setenv("ROUTE", "/v2/orders")
    assert digest() not in (changed, "None")


def test_no_output_shows_a_secrets_value(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("base")
    write(base, {**FILES, "syncline.yaml": PROJECT})
    outputs = [
        run("validate", str(project), "--format", "json"),
        run("validate", str(project), "--env", "prod"),
        run("graph", str(project), "--format", "json"),
        run("plan", str(project), "--base", str(base)),
        run("plan", str(project), "--base", str(base), "--format", "json"),
        run("promote", "--from", "dev", "--to", "prod", "--project", str(project)),
    ]
    shown = "".join(result.output for result in outputs)
    # the plan shows the auth it adds, by reference
    assert '      + spec.auth: {"type": "bearer", "token": "${secret.ERP_TOKEN}"}\n' in shown
    assert '"token": "${secret.ERP_TOKEN}"' in outputs[4].output
    assert SECRET not in shown


@pytest.fixture
def served_prod(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`syncline serve PROJECT --env prod` in its own process; yields its URL."""
    monkeypatch.setenv("SYNCLINE_ADMIN_TOKEN", "env-test-token")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "serve", str(project), "--env", "prod",
         "--port", str(port), "--no-watch"],
        env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "serve did not become ready"
            try:
                if httpx.get(f"{url}/readyz", timeout=1, verify=TLS).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_serve_runs_the_environment_it_is_given(project: Path, served_prod: str) -> None:
    status = httpx.get(
        f"{served_prod}/api/v1/status", headers={"Authorization": "Bearer env-test-token"},
        verify=TLS,
    ).json()
    assert status["environment"] == "prod"
    assert status["flows"]["order-flow"]["version"] == 1  # prod's pin, not dev's newest
    assert status["digest"] == compile_project(project, environment="prod", environ={}).digest
    result = run("status", "--url", served_prod, "--project", str(project))
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"in sync: {served_prod} runs sha256:")
    assert result.output.endswith(" [prod]\n")
    result = run("status", "--url", served_prod, "--env", "dev", "--project", str(project))
    assert result.exit_code == 1, result.output
    assert "  flow order-flow: the server runs @1, the project has @2\n" in result.output
