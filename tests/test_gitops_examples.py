"""The CI examples are valid YAML and call real `syncline` commands with real options."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML

from engine.cli import main
from tests.gitops_kit import FILES, MAPPING, SCHEMA, commit, git, write

CI = Path(__file__).resolve().parents[1] / "examples" / "ci"


def commands(text: str) -> list[list[str]]:
    """Every `syncline ...` command line in a text (shell continuations joined)."""
    joined = text.replace("\\\n", " ")
    found = re.findall(r"(?:^|[\s|;&])(syncline [^|\n#'\"]*(?:\"[^\"]*\"[^|\n#]*)*)", joined)
    return [shlex.split(line) for line in found]


@pytest.mark.parametrize("name", ["github-actions.yml", "pre-commit-hooks.yaml"])
def test_example_commands_exist(name: str) -> None:
    text = (CI / name).read_text()
    YAML(typ="safe").load(text)
    found = commands(text)
    assert found
    for argv in found:
        command = main.commands[argv[1]]
        known = {
            opt for param in command.params if isinstance(param, click.Option) for opt in param.opts
        }
        assert {a for a in argv[2:] if a.startswith("--")} <= known, argv


def test_the_workflow_plans_against_the_base_branch_on_pull_requests() -> None:
    workflow = YAML(typ="safe").load((CI / "github-actions.yml").read_text())
    assert "pull_request" in workflow["on"]
    runs = " ".join(step.get("run", "") for step in workflow["jobs"]["check"]["steps"])
    assert "syncline validate" in runs and "syncline test" in runs
    assert "--fail-on breaking" in runs


# How GitHub Actions runs a `run:` script on Linux, by the step's `shell`.
SHELLS = {
    None: ["bash", "-e", "{0}"],
    "bash": ["bash", "--noprofile", "--norc", "-eo", "pipefail", "{0}"],
    "sh": ["sh", "-e", "{0}"],
}


def run_workflow(workflow: dict, clone: Path, tmp_path: Path, env: str) -> dict[str, int]:
    """Run the `check` job's steps for one matrix environment in `clone`, as the runner would
    (after checkout; `syncline` installed). Returns each named step's exit code."""
    job = workflow["jobs"]["check"]
    assert env in job["strategy"]["matrix"]["env"]
    shims = tmp_path / "bin"
    shims.mkdir(exist_ok=True)
    (shims / "syncline").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m engine.cli "$@"\n')
    (shims / "syncline").chmod(0o755)
    environ = {
        **os.environ,
        "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(CI.parents[1]),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
    }
    for name, value in job["env"].items():
        environ[name] = value.replace("${{ matrix.env }}", env)
    codes = {}
    for step in job["steps"]:
        script = step.get("run")
        if script is None or "pip install" in script:  # `uses:` actions and the install
            continue
        script = script.replace("${{ github.base_ref }}", "main")
        assert "${{" not in script, script
        (tmp_path / "step.sh").write_text(script)
        shell = step.get("shell")
        argv = SHELLS[shell] if shell in SHELLS else shlex.split(shell)
        argv = [str(tmp_path / "step.sh") if a == "{0}" else a for a in argv]
        done = subprocess.run(argv, cwd=clone, env=environ, capture_output=True, text=True)
        codes[step["name"]] = done.returncode
    return codes


def test_the_workflow_runs_and_fails_a_breaking_pull_request(tmp_path: Path) -> None:
    """The workflow's own scripts, on a clone with a pull request branch: a compatible change
    passes every step, a breaking one fails the plan step, and the plan lands in the summary."""
    workflow = YAML(typ="safe").load((CI / "github-actions.yml").read_text())
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q")
    teams = '  teams: {tests: "@shop/tests", finance: "@shop/finance", revops: "@shop/revops"}\n'
    sample = {"samples/order-flow/a.json": '{"Id": "A", "Amount": 1}'}
    commit(origin, "the project",
           {**FILES, **sample, "syncline.yaml": FILES["syncline.yaml"] + teams})
    CliRunner().invoke(main, ["owners", str(origin), "--codeowners"])
    commit(origin, "its CODEOWNERS", {})
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    git(clone, "checkout", "-q", "-b", "feature")
    write(clone, {"mappings/order.yaml": SCHEMA + "      note: {type: string}\n"})
    git(clone, "commit", "-q", "-am", "an optional field")
    codes = run_workflow(workflow, clone, tmp_path, "prod")
    assert list(codes) == [
        "Validate", "CODEOWNERS is current", "Mapping and flow tests",
        "Plan against the base branch", "Preview on recorded samples",
    ]
    assert set(codes.values()) == {0}, codes
    summary = (tmp_path / "summary.md").read_text()
    assert "  ~ Schema order@1\n      + spec.jsonSchema.properties.note:" in summary
    assert "Plan: 0 to add, 1 to change, 0 to remove; 0 breaking." in summary

    order2 = SCHEMA.replace("version: 1", "version: 2").replace("amount: {type: number}", "")
    to_order2 = MAPPING.replace("order@1", "order@2").replace("    amount: Amount\n", "")
    commit(clone, "order@2 drops amount", {
        "mappings/order-v2.yaml": order2, "mappings/to-order.yaml": to_order2,
    })
    CliRunner().invoke(main, ["owners", str(clone), "--codeowners"])  # order-v2.yaml: finance
    commit(clone, "its CODEOWNERS", {})
    (tmp_path / "summary.md").unlink()
    codes = run_workflow(workflow, clone, tmp_path, "prod")
    assert codes == {
        "Validate": 0, "CODEOWNERS is current": 0, "Mapping and flow tests": 0,
        "Plan against the base branch": 1, "Preview on recorded samples": 0,
    }
    summary = (tmp_path / "summary.md").read_text()
    assert "  ! Schema order@1 -> order@2: removed field 'amount'\n" in summary
    assert "| `order-flow/order` | to-order@1 → to-order@1 | 0 | 1 | 0 | 0 |" in summary
    assert (clone / "preview.md").read_text().startswith("## Syncline plan\n")


def test_the_pre_commit_hooks_run_on_definition_files(tmp_path: Path) -> None:
    """Each hook is a complete pre-commit manifest entry; its `files` pattern picks definition
    files only; its `entry`, run as pre-commit runs it (no file names, in the repository root),
    passes a valid project and fails a broken one."""
    hooks = YAML(typ="safe").load((CI / "pre-commit-hooks.yaml").read_text())
    assert [hook["id"] for hook in hooks] == ["syncline-validate", "syncline-test"]
    write(tmp_path, dict(FILES))
    for hook in hooks:
        assert {"id", "name", "entry", "language"} <= set(hook)
        assert hook["pass_filenames"] is False
        picks = re.compile(hook["files"])
        assert all(picks.search(name) for name in FILES)
        assert not picks.search("README.md") and not picks.search("engine/cli.py")
        argv = shlex.split(hook["entry"])
        assert argv[0] == "syncline"
        assert run_in(tmp_path, argv[1:]) == 0
    write(tmp_path, {"mappings/to-order.yaml": MAPPING.replace("order@1", "order@7")})
    assert [run_in(tmp_path, shlex.split(hook["entry"])[1:]) for hook in hooks] == [1, 1]


def run_in(cwd: Path, args: list[str]) -> int:
    """The exit code of `syncline ARGS` run in `cwd`."""
    argv = [sys.executable, "-m", "engine.cli", *args]
    environ = {**os.environ, "PYTHONPATH": str(CI.parents[1])}
    return subprocess.run(argv, cwd=cwd, env=environ, capture_output=True).returncode
