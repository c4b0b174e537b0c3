"""`syncline plan --base REF|DIR` between commits of real git repositories."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.gitops_kit import FILES, FLOW, MAPPING, SCHEMA, commit, git, new_repo, run, write

FLOW_V2 = FLOW.replace("version: 1", "version: 2").replace("body: steps.order", "body: data")


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, list[str]]:
    """A repository whose project sits in `integrations/`, with four commits."""
    repo, project = new_repo(tmp_path, "integrations")
    commit(repo, "readme", {"README.md": "not a definition\n"})
    first = commit(project, "initial project", dict(FILES))
    second = commit(project, "flow v2, dev only", {"flows/order-flow-v2.yaml": FLOW_V2})
    third = commit(
        project,
        "promote v2 to prod; raise the ERP rate",
        {
            "syncline.yaml": FILES["syncline.yaml"].replace(
                "pins: {order-flow: 1}", "pins: {order-flow: 2}"
            ),
        },
    )
    fourth = commit(project, "retire v1", {"flows/order-flow.yaml": None})
    return project, [first, second, third, fourth]


def test_no_changes_against_head(history: tuple[Path, list[str]]) -> None:
    project, _ = history
    result = run("plan", str(project), "--base", "HEAD", "--env", "prod")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Plan for shop [prod]: HEAD (") and lines[0].endswith(
        f") -> {project}"
    )
    assert "No changes." in lines
    assert lines[-1] == "Plan: 0 to add, 0 to change, 0 to remove; 0 breaking."


def test_an_added_flow_version_in_dev(history: tuple[Path, list[str]]) -> None:
    project, commits = history
    git(project, "checkout", "-q", commits[1])
    result = run("plan", str(project), "--base", commits[0], "--env", "dev")
    assert result.exit_code == 0, result.output
    body = result.output.split("\n\n", 1)[1]
    assert body == (
        "  + Flow order-flow@2\n"
        "\n"
        "Active versions:\n"
        "  ~ Flow order-flow: 1 -> 2\n"
        "\n"
        "Plan: 1 to add, 0 to change, 0 to remove; 0 breaking.\n"
    )


def test_prod_keeps_its_pin_until_promoted(history: tuple[Path, list[str]]) -> None:
    project, commits = history
    git(project, "checkout", "-q", commits[1])
    result = run("plan", str(project), "--base", commits[0], "--env", "prod")
    assert "Active versions:" not in result.output  # prod still pins order-flow@1
    git(project, "checkout", "-q", commits[2])
    result = run("plan", str(project), "--base", commits[1], "--env", "prod")
    assert result.exit_code == 0, result.output
    assert "  ~ environment prod\n      ~ pins.order-flow: 1 -> 2\n" in result.output
    assert "Active versions:\n  ~ Flow order-flow: 1 -> 2\n" in result.output
    assert result.output.endswith("Plan: 0 to add, 1 to change, 0 to remove; 0 breaking.\n")


def test_a_version_no_flow_uses_is_not_active(tmp_path: Path) -> None:
    _, project = new_repo(tmp_path)
    pinned_flow = FLOW.replace("map: to-order}", "map: to-order@1}")
    commit(project, "base", {**FILES, "flows/order-flow.yaml": pinned_flow})
    mapping_v2 = MAPPING.replace("version: 1", "version: 2").replace("status: {const: open}",
                                                                     "status: {const: won}")
    commit(project, "to-order@2, not used yet", {"mappings/to-order-v2.yaml": mapping_v2})
    result = run("plan", str(project), "--base", "HEAD~1", "--env", "dev")
    assert result.exit_code == 0, result.output
    assert "  + Mapping to-order@2\n" in result.output
    assert "Active versions:" not in result.output  # order-flow still maps with to-order@1
    commit(project, "use it", {"flows/order-flow.yaml": FLOW})  # `map: to-order`: the newest
    result = run("plan", str(project), "--base", "HEAD~1", "--env", "dev")
    assert "Active versions:\n  ~ Mapping to-order: 1 -> 2\n" in result.output


def test_a_removed_flow_across_several_commits(history: tuple[Path, list[str]]) -> None:
    project, commits = history
    result = run("plan", str(project), "--base", "HEAD~3", "--env", "prod")
    assert result.exit_code == 0, result.output
    assert "  - Flow order-flow@1\n  + Flow order-flow@2\n" in result.output
    assert result.output.endswith("Plan: 1 to add, 1 to change, 1 to remove; 0 breaking.\n")


def test_field_level_changes_of_a_spec(history: tuple[Path, list[str]]) -> None:
    project, _ = history
    edited = FLOW_V2.replace("body: data", "body: steps.order").replace(
        "steps:\n", "filter: data.ok\n  steps:\n"
    )
    write(project, {"flows/order-flow-v2.yaml": edited})  # uncommitted: the working tree
    dot_git = project.parent / ".git"
    untouched = {name: (dot_git / name).read_bytes() for name in ("HEAD", "index")}
    result = run("plan", str(project), "--base", "HEAD", "--env", "dev")
    assert {name: (dot_git / name).read_bytes() for name in untouched} == untouched
    assert result.exit_code == 0, result.output
    assert (
        "  ~ Flow order-flow@2\n"
        '      ~ spec.steps[1].call.body: "data" -> "steps.order"\n'
        '      + spec.filter: "data.ok"\n'
    ) in result.output
    assert git(project, "status", "--porcelain") == " M integrations/flows/order-flow-v2.yaml\n"


KINDS = {  # per kind: a document whose NAME and VALUE vary, and the field path of VALUE
    "Flow": (
        "spec:\n  trigger: {event: com.acme.NAME.done}\n  steps:\n    - {id: a, set: {x: VALUE}}\n",
        "spec.steps[0].set.x",
        ("data.x", "data.y"),
    ),
    "Mapping": (
        "spec:\n  target: order@1\n  fields: {id: VALUE}\n",
        "spec.fields.id",
        ("Id", "Key"),
    ),
    "Schema": (
        "spec:\n  jsonSchema: {type: object, title: VALUE}\n",
        "spec.jsonSchema.title",
        ("Old", "New"),
    ),
    "System": (
        "spec:\n  baseUrl: https://NAME.example.com\n"
        "  operations: {get: {method: GET, path: VALUE}}\n",
        "spec.operations.get.path",
        ("/a", "/b"),
    ),
    "RetryPolicy": ("spec: {maxAttempts: VALUE}\n", "spec.maxAttempts", (3, 5)),
    "GovernancePolicy": (
        "spec:\n  rules:\n    - {id: r, match: {kind: Flow}, assert: metadata.owner, "
        "message: VALUE, severity: warning}\n",
        "spec.rules[0].message",
        ("old", "new"),
    ),
}


def _documents(kind: str, *named: tuple[str, object]) -> str:
    spec = KINDS[kind][0]
    return "---\n".join(
        f"apiVersion: syncline/v1\nkind: {kind}\nmetadata: {{name: {name}, owner: t}}\n"
        + spec.replace("NAME", name).replace("VALUE", str(value))
        for name, value in named
    )


@pytest.mark.parametrize("kind", list(KINDS))
def test_added_removed_and_changed_of_every_kind(tmp_path: Path, kind: str) -> None:
    """Between two commits: `gone` removed, `keep` changed field by field, `new` added."""
    _, path, (old, new) = KINDS[kind]
    _, project = new_repo(tmp_path)
    base = _documents(kind, ("gone", old), ("keep", old))
    commit(project, "base", {**FILES, "policies/extra.yaml": base})
    commit(project, "head", {"policies/extra.yaml": _documents(kind, ("keep", new), ("new", new))})
    result = run("plan", str(project), "--base", "HEAD~1", "--env", "dev")
    assert result.exit_code == 0, result.output
    assert (
        f"\n  - {kind} gone@1\n"
        f"  ~ {kind} keep@1\n"
        f"      ~ {path}: {json.dumps(old)} -> {json.dumps(new)}\n"
        f"  + {kind} new@1\n"
    ) in result.output
    assert result.output.endswith("Plan: 1 to add, 1 to change, 1 to remove; 0 breaking.\n")
    report = json.loads(run("plan", str(project), "--base", "HEAD~1", "--format", "json").output)
    assert [(r["op"], r["kind"], r["name"]) for r in report["resources"]] == [
        ("-", kind, "gone"), ("~", kind, "keep"), ("+", kind, "new")
    ]
    assert report["resources"][1]["changes"] == [{"path": path, "op": "~", "old": old, "new": new}]


def test_json_format(history: tuple[Path, list[str]]) -> None:
    project, _ = history
    result = run("plan", str(project), "--base", "HEAD~2", "--env", "prod", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True
    assert report["environment"] == "prod"
    assert report["base"].startswith("HEAD~2 (")
    assert [(r["op"], r["kind"], r["name"], r["version"]) for r in report["resources"]] == [
        ("-", "Flow", "order-flow", 1)
    ]
    assert report["settings"] == [{"path": "pins.order-flow", "op": "~", "old": 1, "new": 2}]
    assert report["active"] == [{"kind": "Flow", "name": "order-flow", "old": 1, "new": 2}]
    assert report["summary"] == {"add": 0, "change": 1, "remove": 1, "breaking": 0}


def test_base_directory(history: tuple[Path, list[str]], tmp_path: Path) -> None:
    project, _ = history
    other = tmp_path / "other"
    shutil.copytree(project, other)
    write(other, {"mappings/to-order.yaml": MAPPING.replace("amount: Amount", "amount: Total")})
    result = run("plan", str(project), "--base", str(other), "--env", "dev")
    assert result.exit_code == 0, result.output
    assert (
        '  ~ Mapping to-order@1\n      ~ spec.fields.amount: "Total" -> "Amount"\n' in result.output
    )


def test_a_base_without_the_project_adds_everything(tmp_path: Path) -> None:
    repo, project = new_repo(tmp_path, "svc")
    commit(repo, "unrelated", {"README.md": "hello\n"})
    commit(project, "the project", dict(FILES))
    result = run("plan", str(project), "--base", "HEAD~1")
    assert result.exit_code == 0, result.output
    assert "  + Flow order-flow@1\n" in result.output
    assert '  ~ environment dev\n      + vars.ERP_URL: "http://127.0.0.1:9"\n' in result.output
    assert result.output.endswith("Plan: 4 to add, 1 to change, 0 to remove; 0 breaking.\n")


def test_an_unknown_ref_is_a_usage_error(history: tuple[Path, list[str]]) -> None:
    project, _ = history
    result = run("plan", str(project), "--base", "no-such-branch")
    assert result.exit_code == 2
    assert "'no-such-branch' is neither a directory nor a git ref" in result.output


def test_a_base_that_does_not_compile(history: tuple[Path, list[str]]) -> None:
    project, _ = history
    commit(project, "broken", {"mappings/to-order.yaml": MAPPING.replace("order@1", "order@9")})
    commit(project, "fixed", {"mappings/to-order.yaml": MAPPING})
    result = run("plan", str(project), "--base", "HEAD~1")
    assert result.exit_code == 1
    assert "the base HEAD~1 does not compile:" in result.output
    assert "mappings/to-order.yaml:5:" in result.output


def test_fail_on_breaking_across_commits(history: tuple[Path, list[str]]) -> None:
    project, _ = history
    order2 = SCHEMA.replace("version: 1", "version: 2").replace(
        "      amount: {type: number}\n", ""
    )
    commit(
        project,
        "order@2 drops amount",
        {
            "mappings/order-v2.yaml": order2,
            "mappings/to-order.yaml": MAPPING.replace("order@1", "order@2").replace(
                "    amount: Amount\n", ""
            ),
        },
    )
    result = run("plan", str(project), "--base", "HEAD~1", "--fail-on", "breaking")
    assert result.exit_code == 1, result.output
    assert "  ! Schema order@1 -> order@2: removed field 'amount'\n" in result.output
    assert result.output.endswith("Plan: 1 to add, 1 to change, 0 to remove; 1 breaking.\n")
    assert run("plan", str(project), "--base", "HEAD~1").exit_code == 0


REFERENCE = Path(__file__).parent.parent
FIRST_REFERENCE = "960df3a"  # the commit that first shipped the reference order@1


def test_the_reference_project_versions_its_breaking_schema_change() -> None:
    """order@1 was released; the breaking edit is order@2, so the plan shows no in-place edit."""
    known = subprocess.run(
        ["git", "-C", str(REFERENCE), "cat-file", "-e", f"{FIRST_REFERENCE}^{{commit}}"],
        capture_output=True,
    )
    if known.returncode != 0:
        pytest.skip("the checkout's history does not reach the first reference commit")
    result = run("plan", str(REFERENCE), "--base", FIRST_REFERENCE)
    assert result.exit_code == 0, result.output
    assert "E_SCHEMA_INPLACE" not in result.output
    assert "! Schema order@1 -> order@2: removed field 'status'" in result.output
