"""`syncline run`, `syncline runs ...` and flow tests under `syncline test`, via the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from runtime_kit import LiveTarget, Target, flow, write_project

from engine.cli import main

FLOW_WITH_TESTS = flow(
    "tested",
    """
    - id: check
      validate:
        input: data
        rules:
          - {assert: "data.amount > `0`", code: BAD_AMOUNT, message: amount must be positive}
    - id: erp
      needs: [check]
      call: {system: erp, operation: create, body: "{amount: data.amount}"}
      retry: fast
    - id: done
      emit: {type: com.acme.created, data: "{id: steps.erp.body.id}"}
""",
    extra="""\
  output: steps.erp.body
  tests:
    - name: creates the order
      input: {amount: 5}
      responses:
        erp.create: [{status: 503}, {status: 201, body: {id: SO-1}}]
      expect:
        state: succeeded
        calls: [{system: erp, operation: create, body: {amount: 5}}]
        emits: [{type: com.acme.created, data: {id: SO-1}}]
        output: {id: SO-1}
    - name: parks a bad amount
      input: {amount: 0}
      expect: {state: parked, reason: BAD_AMOUNT, calls: []}
    - name: wrong on purpose
      input: {amount: 5}
      responses:
        erp.create: {status: 201, body: {id: SO-2}}
      expect:
        state: succeeded
        output: {id: SO-999}
""",
)


@pytest.fixture
def live() -> Iterator[tuple[Target, str]]:
    server = LiveTarget()
    with server as target:
        yield target, server.url


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_flow_tests_pass_and_fail_with_a_diff(tmp_path: Path):
    root = write_project(tmp_path, "http://127.0.0.1:9", FLOW_WITH_TESTS)
    code, out = invoke("test", str(root))
    assert code == 1, out
    assert "2 passed, 1 failed" in out
    assert "flow:tested@1::wrong on purpose" in out
    assert '-    "id": "SO-999"' in out and '+    "id": "SO-2"' in out
    code, out = invoke("test", str(root), "-k", "creates")
    assert code == 0 and "1 passed" in out


def test_run_dry_run_prints_the_calls_and_stores_nothing(tmp_path: Path):
    root = write_project(tmp_path, "http://127.0.0.1:9", FLOW_WITH_TESTS)
    (tmp_path / "in.json").write_text('{"amount": 3}')
    code, out = invoke(
        "run", "tested", "--input", str(tmp_path / "in.json"), "--dry-run", "--project", str(root)
    )
    assert code == 0, out
    assert "would call erp.create: POST http://127.0.0.1:9/orders" in out
    assert '"amount": 3' in out and "idempotency-key:" in out
    assert ": succeeded" in out
    assert not (root / ".syncline").exists()


def test_run_then_operate_on_runs_from_the_cli(tmp_path: Path, live):
    target, url = live
    target.script["/orders"] = [400]
    root = write_project(tmp_path, url, FLOW_WITH_TESTS)
    (tmp_path / "in.json").write_text('{"amount": 3}')
    code, out = invoke(
        "run", "tested", "--input", str(tmp_path / "in.json"), "--project", str(root)
    )
    assert code == 1 and ": parked" in out and "HTTP_400" in out, out
    code, out = invoke("runs", "list", "--project", str(root), "--format", "json")
    [run] = json.loads(out)["runs"]
    assert run["state"] == "parked"
    code, out = invoke("runs", "retry", run["id"], "--project", str(root))
    assert code == 2 and "is parked; retry needs a dead-lettered or failed run" in out
    (tmp_path / "fixed.json").write_text('{"amount": 4}')
    code, out = invoke(
        "runs",
        "resume",
        run["id"],
        "--data",
        str(tmp_path / "fixed.json"),
        "--project",
        str(root),
        "--format",
        "json",
    )
    assert code == 0 and json.loads(out)["state"] == "pending"
    code, out = invoke("runs", "show", "nope", "--project", str(root))
    assert code == 2 and "no run 'nope'" in out
    code, out = invoke("runs", "show", run["id"], "--project", str(root))
    assert code == 0 and ": pending" in out
    assert "audit: resume by" in out  # the actions taken on the run


def test_run_refuses_naming_missing_secrets(tmp_path: Path):
    secret_system = """\
    apiVersion: syncline/v1
    kind: System
    metadata: {name: vault, owner: qa}
    spec:
      baseUrl: http://127.0.0.1:9
      auth: {type: bearer, token: "${secret.VAULT_TOKEN}"}
      operations: {get: {method: GET, path: /x}}
    """
    root = write_project(
        tmp_path, "http://127.0.0.1:9", FLOW_WITH_TESTS, {"flows/vault.yaml": secret_system}
    )
    (tmp_path / "in.json").write_text('{"amount": 3}')
    code, out = invoke(
        "run", "tested", "--input", str(tmp_path / "in.json"), "--project", str(root)
    )
    assert code == 2 and "missing secrets: VAULT_TOKEN" in out


def test_runs_on_a_postgresql_store_with_database(tmp_path: Path, postgres_url: str):
    import asyncio

    from engine.compiler import compile_project
    from engine.store import EventRecord, NewRun
    from engine.store.postgres import PostgresStore

    root = write_project(tmp_path, "http://127.0.0.1:9", FLOW_WITH_TESTS)
    plan = compile_project(root)

    async def accept() -> None:
        async with PostgresStore(postgres_url) as store:
            await store.save_plan(plan.digest, dict(plan.bundle))
            run = NewRun("run-pg-1", "tested", 1, plan.digest, "k1", None, "corr-1")
            await store.accept(EventRecord("ev-1", "cli:tested", "tests", {"amount": 3}), [run])

    asyncio.run(accept())
    where = ["--project", str(root), "--database", postgres_url]
    code, out = invoke("runs", "list", *where, "--format", "json")
    assert code == 0, out
    assert [(r["id"], r["state"]) for r in json.loads(out)["runs"]] == [("run-pg-1", "pending")]
    code, out = invoke("runs", "cancel", "run-pg-1", *where)
    assert code == 0 and ": cancelled" in out, out
    assert not (root / ".syncline").exists()  # nothing went to a local SQLite file
