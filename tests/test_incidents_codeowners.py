"""`syncline owners --codeowners` (issue 18): definition owners become the reviewers of their
files; CI checks the committed CODEOWNERS is current."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from engine.cli import main as cli

REPO = Path(__file__).resolve().parents[1]

PROJECT = """\
apiVersion: syncline/v1
kind: Project
metadata: {name: owned, owner: platform}
spec:
  paths: [flows]
  teams: {platform: "@acme/platform", finance: "@acme/finance", revops: "ops@acme.example"}
"""

SYSTEMS = """\
apiVersion: syncline/v1
kind: System
metadata: {name: erp, owner: finance}
spec: {baseUrl: "http://127.0.0.1:9"}
---
apiVersion: syncline/v1
kind: System
metadata: {name: crm, owner: revops}
spec: {baseUrl: "http://127.0.0.1:9"}
---
apiVersion: syncline/v1
kind: System
metadata: {name: billing, owner: finance}
spec: {baseUrl: "http://127.0.0.1:9"}
"""

POLICY = """\
apiVersion: syncline/v1
kind: RetryPolicy
metadata: {name: quick}
spec: {maxAttempts: 2}
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git work tree whose project lives in `integrations/`."""
    (tmp_path / ".git").mkdir()
    write(
        tmp_path / "integrations",
        {"syncline.yaml": PROJECT, "flows/systems.yaml": SYSTEMS, "flows/retry.yaml": POLICY},
    )
    return tmp_path


def owners(*args: str) -> Result:
    return CliRunner().invoke(cli, ["owners", *args])


def test_each_file_lists_every_owner_and_paths_start_at_the_repository_root(repo: Path) -> None:
    made = owners(str(repo / "integrations"), "--codeowners")
    assert made.exit_code == 0, made.output
    assert made.output == f"wrote {repo / 'CODEOWNERS'} (2 files)\n"
    lines = [
        line for line in (repo / "CODEOWNERS").read_text().splitlines() if not line.startswith("#")
    ]
    assert lines == [
        "/integrations/flows/systems.yaml @acme/finance ops@acme.example",  # each owner once
        "/integrations/syncline.yaml @acme/platform",
    ]  # flows/retry.yaml has no owner: not listed


def test_check_fails_on_a_stale_file_and_passes_on_a_current_one(repo: Path) -> None:
    project = str(repo / "integrations")
    assert owners(project, "--codeowners").exit_code == 0
    assert owners(project, "--codeowners", "--check").exit_code == 0
    systems = repo / "integrations" / "flows" / "systems.yaml"
    systems.write_text(systems.read_text().replace("owner: revops", "owner: platform"))
    stale = owners(project, "--codeowners", "--check")
    assert stale.exit_code == 1
    assert "is not current; run `syncline owners --codeowners`" in stale.output
    assert "+/integrations/flows/systems.yaml @acme/finance @acme/platform" in stale.output
    assert "ops@acme.example" in (repo / "CODEOWNERS").read_text()  # --check writes nothing


def test_an_owner_without_a_handle_is_a_located_error(repo: Path) -> None:
    systems = repo / "integrations" / "flows" / "systems.yaml"
    systems.write_text(systems.read_text().replace("owner: revops", "owner: sales"))
    result = owners(str(repo / "integrations"), "--codeowners")
    assert result.exit_code == 1
    assert (
        "flows/systems.yaml:8:23: error[E_OWNER] owner 'sales' has no handle in syncline.yaml "
        "spec.teams (teams: finance, platform, revops)"
    ) in result.output
    assert not (repo / "CODEOWNERS").exists()


def test_a_team_handle_must_look_like_one(project: object, tmp_path: Path) -> None:
    write(tmp_path, {"syncline.yaml": PROJECT.replace('"@acme/finance"', "finance-team")})
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "spec.teams.finance" in result.output


def test_the_reference_projects_codeowners_is_current() -> None:
    result = owners(str(REPO), "--codeowners", "--check")
    assert result.exit_code == 0, result.output


def test_the_example_ci_workflow_checks_codeowners() -> None:
    workflow = (REPO / "examples" / "ci" / "github-actions.yml").read_text()
    assert "run: syncline owners --codeowners --check" in workflow
