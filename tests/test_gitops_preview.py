"""`syncline plan --samples DIR`: old and new mappings run on recorded payloads, between two
commits of a real git repository."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.gitops_kit import FILES, FLOW, MAPPING, commit, new_repo, run, write

SAMPLES = {
    "samples/order-flow/a.json": json.dumps({"Id": "A-1", "Amount": 10}),
    "samples/order-flow/b.yaml": "Id: B-2\nAmount: 20\n",
    "samples/order-flow/more.jsonl": json.dumps({"Id": "C-3", "Amount": 30}) + "\n"
    + json.dumps({"Id": "D-4", "Amount": "thirty"}) + "\n",
    "samples/wrapped.json": json.dumps({"trigger": "com.acme.order.requested",
                                        "data": {"Id": "E-5", "Amount": 50}}),
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Two commits: the base project with samples, then a changed mapping."""
    _, project = new_repo(tmp_path)
    commit(project, "base", {**FILES, **SAMPLES})
    return project


def change(project: Path, mapping: str) -> None:
    commit(project, "change the mapping", {"mappings/to-order.yaml": mapping})


def plan(project: Path, *extra: str, base: str = "HEAD~1",
         samples: str | None = None) -> tuple[int, str]:
    result = run("plan", str(project), "--base", base, "--samples",
                 samples or str(project / "samples"), *extra)
    return result.exit_code, result.output


def test_a_changed_field_is_shown_per_sample(project: Path) -> None:
    change(project, MAPPING.replace("status: {const: open}", "status: {const: won}"))
    code, output = plan(project, "--format", "json")
    assert code == 0, output
    preview = json.loads(output)["preview"]
    assert preview["samples"] == 5 and preview["unmatched"] == []
    [step] = preview["steps"]
    assert (step["flow"], step["step"], step["old"], step["new"]) == (
        "order-flow", "order", "to-order@1", "to-order@1")
    # D-4 fails in both (amount is not a number): still failing, not newly failing
    assert step["counts"] == {"unchanged": 0, "changed": 4, "newly_failing": 0,
                              "newly_passing": 0, "still_failing": 1}
    first = step["samples"][0]
    assert first["sample"].endswith("samples/order-flow/a.json")
    assert first["fields"] == [{"path": "status", "old": "open", "new": "won"}]


def test_newly_failing_and_newly_passing(project: Path) -> None:
    change(project, MAPPING.replace("amount: Amount", "amount: to_number(Amount)")
           .replace("id: Id", "id: to_number(Id)"))
    code, output = plan(project, "--fail-on", "failing")
    assert code == 1, output
    assert "0 unchanged, 0 changed, 4 newly failing, 0 newly passing" in output
    assert "error: mapping 'to-order@1' failed" in output
    change(project, MAPPING.replace("amount: Amount", "amount: to_number(Amount) || `0`"))
    code, output = plan(project, "--format", "json", base="HEAD~2")
    counts = json.loads(output)["preview"]["steps"][0]["counts"]
    assert counts["unchanged"] == 4 and counts["changed"] == 0
    assert counts["newly_passing"] == 1 and code == 0  # --fail-on never by default


def test_unchanged_mapping_reports_no_step_and_fail_on_changed(project: Path) -> None:
    commit(project, "a readme only", {"README.md": "x\n"})
    code, output = plan(project, "--fail-on", "changed")
    assert code == 0, output
    assert "Preview on 5 samples:\n  no mapping step changed." in output
    change(project, MAPPING.replace("amount: Amount", "amount: {const: 1}"))
    code, output = plan(project, "--fail-on", "changed", base="HEAD~2")
    assert code == 1
    assert "amount: 10 -> 1" in output


def test_markdown_for_a_pull_request(project: Path) -> None:
    change(project, MAPPING.replace("status: {const: open}", "status: {const: won}"))
    code, output = plan(project, "--format", "markdown")
    assert code == 0
    assert output.startswith("## Syncline plan\n\n```\nPlan for shop [dev]")
    assert "| `order-flow/order` | to-order@1 → to-order@1 | 0 | 4 | 0 | 0 |" in output
    assert "| `status` | `\"open\"` | `\"won\"` |" in output


def test_secrets_and_people_are_redacted(project: Path) -> None:
    write(project, {"samples/order-flow/a.json": json.dumps(
        {"Id": "jane.doe@example.com", "Amount": 10})})
    change(project, MAPPING.replace("id: Id", "id: \"join('', [Id, '!'])\""))
    code, output = plan(project)
    assert code == 0, output
    assert "jane.doe@example.com" not in output
    assert 'id: "[redacted]" -> "[redacted]!"' in output
    assert 'id: "B-2" -> "B-2!"' in output


def test_redaction_list_from_syncline_yaml(project: Path) -> None:
    write(project, {"syncline.yaml": FILES["syncline.yaml"].replace(
        "spec:\n", "spec:\n  redact: ['stat*']\n")})
    change(project, MAPPING.replace("status: {const: open}", "status: {const: won}"))
    code, output = plan(project)
    assert code == 0, output
    assert 'status: "[redacted]" -> "[redacted]"' in output


def test_samples_matching_no_flow_are_reported(project: Path) -> None:
    write(project, {"samples/nobody/x.json": "{}",
                    "samples/top.yaml": "flow: gone\ndata: {Id: X}\n"})
    change(project, MAPPING.replace("status: {const: open}", "status: {const: won}"))
    code, output = plan(project)
    assert code == 0, output
    assert "'nobody' is no flow, event type or trigger path of the head" in output
    assert "top.yaml: 'gone' is no flow" in output


def test_a_sample_that_is_not_json_is_a_located_error(project: Path) -> None:
    change(project, MAPPING.replace("status: {const: open}", "status: {const: won}"))
    write(project, {"samples/order-flow/bad.json": '{"Id": "A",\n  oops}\n'})
    code, output = plan(project)
    assert code == 2
    assert "samples/order-flow/bad.json:2:3: error[E_SAMPLE] not JSON: " in output
    write(project, {"samples/order-flow/bad.json": None, "samples/order-flow/bad.yaml": "a: [\n"})
    code, output = plan(project)
    assert code == 2 and "bad.yaml:2:1: error[E_SAMPLE] not YAML" in output


def test_samples_stay_inside_the_project_and_are_bounded(project: Path, tmp_path: Path) -> None:
    change(project, MAPPING.replace("status: {const: open}", "status: {const: won}"))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "a.json").write_text("{}")
    result = run("plan", str(project), "--base", "HEAD~1", "--samples", str(outside))
    assert result.exit_code == 2
    assert f"--samples {outside}: outside the project" in result.output
    climbing = run("plan", str(project), "--base", "HEAD~1", "--samples",
                   str(project / "samples" / ".." / ".." / "elsewhere"))
    assert climbing.exit_code == 2 and "outside the project" in climbing.output

    (project / "samples" / "order-flow" / "passwd.yaml").symlink_to("/etc/passwd")
    code, output = plan(project)
    assert code == 2
    assert "passwd.yaml:1:1: error[E_SAMPLE] links to a file outside the project" in output
    (project / "samples" / "order-flow" / "passwd.yaml").unlink()

    write(project, {"samples/order-flow/deep.json": "[" * 100_000 + "]" * 100_000})
    code, output = plan(project)
    assert code == 2 and "deep.json:1:1000: error[E_SAMPLE] nests too deeply" in output
    assert "Traceback" not in output


def test_an_unknown_base_ref_is_a_usage_error(project: Path) -> None:
    result = run("plan", str(project), "--base", "no-such-ref", "--samples",
                 str(project / "samples"))
    assert result.exit_code == 2
    assert "neither a directory nor a git ref" in result.output


def test_preview_costs_a_small_multiple_of_running_the_mapping() -> None:
    """Old and new mapping plus the diff: a few times one mapping run, never an interpreter's
    hundreds (a ratio, not an absolute time; tests/bench/bench_preview.py prints both)."""
    from tests.bench.bench_preview import measure

    took, bare = measure(200)
    assert took / bare < 25, (took, bare)


def test_samples_export_writes_the_newest_events_redacted_and_plan_reads_them(
    project: Path,
) -> None:
    """Events accepted into the project's SQLite store become a committed sample set."""
    import asyncio

    from engine.store import EventRecord, NewRun, SQLiteStore

    async def record() -> None:
        async with SQLiteStore(project / ".syncline" / "syncline.db") as store:
            for n in range(5):
                data = {"Id": f"O-{n}", "Amount": n, "Contact": {"Email": f"p{n}@acme.example"}}
                event = EventRecord(id=f"ev-{n}", type="com.acme.order.requested",
                                    source="tests", data=data)
                run = NewRun(id=f"run-{n}", flow="order-flow", flow_version=1,
                             plan_digest="sha256:x", key=f"O-{n}", ordering_key=None,
                             correlation_id=f"c-{n}", state="succeeded")
                await store.accept(event, [run])

    (project / ".syncline").mkdir()
    asyncio.run(record())
    out = project / "exported"
    result = run("samples", "export", str(out), "--project", str(project), "--limit", "3")
    assert result.exit_code == 0, result.output
    assert "order-flow: 3 samples" in result.output
    files = sorted(p.name for p in (out / "order-flow").iterdir())
    assert files == ["ev-2.json", "ev-3.json", "ev-4.json"]  # the newest three
    written = json.loads((out / "order-flow" / "ev-4.json").read_text())
    assert written == {"Amount": 4, "Contact": {"Email": "[redacted]"}, "Id": "O-4"}
    change(project, MAPPING.replace("status: {const: open}", "status: {const: won}"))
    result = run("plan", str(project), "--base", "HEAD~1", "--samples", str(out))
    assert "0 unchanged, 3 changed" in result.output


def test_samples_export_without_a_store_is_a_usage_error(project: Path) -> None:
    result = run("samples", "export", str(project / "out"), "--project", str(project))
    assert result.exit_code == 2
    assert "no local store at" in result.output


def test_a_new_map_step_and_one_that_reads_a_call(project: Path) -> None:
    """A step the base has not: every field is new. A step reading a call's result cannot be
    run without calling: listed as not previewed, no sample counted."""
    flow = FLOW.replace(
        "    - {id: erp,",
        "    - {id: again, map: to-order}\n"
        "    - {id: after, map: to-order, input: steps.erp.body}\n    - {id: erp,")
    commit(project, "two more map steps", {"flows/order-flow.yaml": flow})
    code, output = plan(project, "--format", "json")
    assert code == 0, output
    steps = {s["step"]: s for s in json.loads(output)["preview"]["steps"]}
    assert set(steps) == {"again", "after"}
    assert steps["again"]["old"] is None and steps["again"]["counts"]["changed"] == 4
    assert steps["again"]["samples"][0]["fields"][0] == {"path": "amount", "new": 10}
    assert steps["after"]["not_previewed"] == (
        "reads step 'erp' (call), which preview does not run")
    assert sum(steps["after"]["counts"].values()) == 0


def test_markdown_without_samples_is_the_plan_only(project: Path) -> None:
    change(project, MAPPING.replace("status: {const: open}", "status: {const: won}"))
    result = run("plan", str(project), "--base", "HEAD~1", "--format", "markdown")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("## Syncline plan\n\n```\n")
    assert result.output.endswith("0 breaking.\n```\n") and "Preview" not in result.output


# -- flows: run old and new through the runtime, Systems stubbed ---------------------------------
STUBBED_FLOW = FLOW + """\
  tests:
    - name: an order reaches the ERP
      input: {Id: A-1, Amount: 10}
      responses:
        erp.create-order: {status: 201, body: {id: ERP-1}}
      expect: {state: succeeded}
"""


@pytest.fixture
def stubbed(tmp_path: Path) -> Path:
    """The base project with a flow test that stubs the ERP, and the samples."""
    _, project = new_repo(tmp_path)
    commit(project, "base", {**FILES, "flows/order-flow.yaml": STUBBED_FLOW, **SAMPLES})
    return project


def test_a_changed_mapping_shows_the_request_each_call_would_send(stubbed: Path) -> None:
    change(stubbed, MAPPING.replace("amount: Amount",
                                    'amount: {template: "{{ source.Amount * 100 }}"}'))
    code, output = plan(stubbed, "--format", "json")
    assert code == 0, output
    [flow] = json.loads(output)["preview"]["flows"]
    assert (flow["flow"], flow["old"], flow["new"]) == ("order-flow", "order-flow@1",
                                                        "order-flow@1")
    # D-4 ("thirty") fails its mapping in both (with another message): still failing
    assert flow["counts"] == {"unchanged": 0, "changed": 4, "newly_failing": 0,
                              "newly_passing": 0, "still_failing": 1, "not_previewed": 0}
    first = next(s for s in flow["samples"] if s["sample"].endswith("order-flow/a.json"))
    assert first["fields"] == [
        {"path": "calls.#1 erp.create-order.body.amount", "old": 10, "new": 1000},
        {"path": "steps.order.amount", "old": 10, "new": 1000},
    ]
    text = plan(stubbed)[1]
    assert ("~ flow order-flow: order-flow@1 -> order-flow@1: 0 unchanged, 4 changed, "
            "0 newly failing, 0 newly passing, 1 still failing") in text
    assert "calls.#1 erp.create-order.body.amount: 10 -> 1000" in text


def test_a_changed_flow_that_now_parks_is_newly_failing(stubbed: Path) -> None:
    guarded = STUBBED_FLOW.replace(
        "    - {id: erp,",
        "    - id: limit\n      validate: {input: steps.order, rules: [{assert: "
        "'steps.order.amount < `25`', code: OVER_LIMIT, message: over the limit}]}\n"
        "    - {id: erp, needs: [limit],")
    commit(stubbed, "a credit limit", {"flows/order-flow.yaml": guarded})
    code, output = plan(stubbed, "--fail-on", "failing")
    assert code == 1, output   # C-3 (30) and E-5 (50) no longer reach the ERP
    assert "0 changed, 2 newly failing, 0 newly passing" in output
    assert "error: parked (OVER_LIMIT)" in output
    assert "calls.#1 erp.create-order.request: \"POST /orders\" -> (absent)" in output
    markdown = plan(stubbed, "--format", "markdown")[1]
    assert "| `order-flow` | order-flow@1 → order-flow@1 | 3 | 0 | 2 | 0 | 0 |" in markdown


def test_a_call_without_a_stub_is_not_previewed(project: Path) -> None:
    change(project, MAPPING.replace("status: {const: open}", "status: {const: won}"))
    code, output = plan(project)
    assert code == 0, output
    assert "4 not previewed" in output
    assert "why: erp.create-order has no stubbed response" in output


# -- samples from a store or a running server, with the responses their runs recorded ---------
def _erp() -> Any:
    """A small real ERP: POST /orders answers 201 with the order's id."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def create(request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse({"id": f"ERP-{body['id']}", "status": "booked"}, 201)

    return Starlette(routes=[Route("/orders", create, methods=["POST"])])


def test_samples_from_the_store_and_from_a_server_replay_what_the_erp_answered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_gitops_drift import serving

    from engine.server.config import ServerConfig
    from engine.server.serve import build_server

    _, project = new_repo(tmp_path)
    with serving(_erp()) as erp_url:
        commit(project, "base", {**FILES, "syncline.yaml": FILES["syncline.yaml"].replace(
            "http://127.0.0.1:9", erp_url)})
        for n in range(3):
            payload = tmp_path / f"order-{n}.json"
            payload.write_text(json.dumps({"Id": f"S-{n}", "Amount": n}))
            result = run("run", "order-flow", "--input", str(payload), "--project", str(project))
            assert result.exit_code == 0, result.output
    # the ERP is gone: its answers come from the runs' lineage, the flow has no test stubs
    change(project, MAPPING.replace("status: {const: open}", "status: {const: won}"))
    code, output = plan(project, "--format", "json", samples="store")
    assert code == 0, output
    [flow] = json.loads(output)["preview"]["flows"]
    assert flow["counts"]["changed"] == 3 and flow["counts"]["not_previewed"] == 0, flow
    assert {"path": "calls.#1 erp.create-order.body.status", "old": "open", "new": "won"} in \
        flow["samples"][0]["fields"]

    from authkit import TOKENS, tokens_yaml

    (tmp_path / "tokens.yaml").write_text(tokens_yaml())
    monkeypatch.setenv("SYNCLINE_TOKEN", TOKENS["viewer"])  # reading runs is a viewer's right
    config = ServerConfig.from_environ({"SYNCLINE_TOKENS_FILE": str(tmp_path / "tokens.yaml")},
                                       project=project, watch=False)
    app, _ = build_server(config, environ={}, secrets={},
                          database=str(project / ".syncline" / "syncline.db"))
    with serving(app, lifespan="on") as url:
        code, remote = plan(project, "--samples-limit", "2", "--url", url, samples="store")
    assert code == 0, remote
    assert "~ flow order-flow: order-flow@1 -> order-flow@1: 0 unchanged, 2 changed" in remote
    assert "calls.#1 erp.create-order.body.status: \"open\" -> \"won\"" in remote


def test_samples_store_needs_a_store_and_the_store_options_need_it(project: Path) -> None:
    change(project, MAPPING.replace("status: {const: open}", "status: {const: won}"))
    code, output = plan(project, samples="store")
    assert code == 2 and "--samples store: no local store at" in output
    code, output = plan(project, "--database", "x.db")
    assert code == 2 and "--database and --url go with --samples store" in output
