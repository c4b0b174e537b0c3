"""The CI examples are valid YAML and call real `syncline` commands with real options."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from ruamel.yaml import YAML

from engine.cli import main

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
