"""Helpers for the GitOps tests: real git repositories in tmp_path, and a small project."""

from __future__ import annotations

import subprocess
from pathlib import Path

from click.testing import CliRunner, Result

from engine.cli import main
from tests.projectkit import write_files

PROJECT = """\
apiVersion: syncline/v1
kind: Project
metadata: {name: shop, owner: tests}
spec:
  environments:
    dev:
      vars: {ERP_URL: "http://127.0.0.1:9"}
    prod:
      vars: {ERP_URL: "https://erp.example.com"}
      pins: {order-flow: 1}
"""

SCHEMA = """\
apiVersion: syncline/v1
kind: Schema
metadata: {name: order, version: 1, owner: finance}
spec:
  jsonSchema:
    type: object
    required: [id]
    properties:
      id: {type: string}
      status: {type: string, enum: [open, won, lost]}
      amount: {type: number}
"""

MAPPING = """\
apiVersion: syncline/v1
kind: Mapping
metadata: {name: to-order, version: 1, owner: revops}
spec:
  target: order@1
  fields:
    id: Id
    status: {const: open}
    amount: Amount
"""

SYSTEM = """\
apiVersion: syncline/v1
kind: System
metadata: {name: erp, owner: finance}
spec:
  baseUrl: ${env.ERP_URL}
  operations:
    create-order: {method: POST, path: /orders}
"""

FLOW = """\
apiVersion: syncline/v1
kind: Flow
metadata: {name: order-flow, version: 1, owner: revops}
spec:
  trigger: {event: com.acme.order.requested}
  steps:
    - {id: order, map: to-order}
    - {id: erp, call: {system: erp, operation: create-order, body: steps.order}}
"""

FILES = {
    "syncline.yaml": PROJECT,
    "mappings/order.yaml": SCHEMA,
    "mappings/to-order.yaml": MAPPING,
    "flows/systems.yaml": SYSTEM,
    "flows/order-flow.yaml": FLOW,
}


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` with a fixed identity; its stdout."""
    identity = [
        "-c",
        "user.name=Syncline Tests",
        "-c",
        "user.email=tests@example.com",
        "-c",
        "commit.gpgsign=false",
        "-c",
        "init.defaultBranch=main",
    ]
    done = subprocess.run(
        ["git", *identity, *args], cwd=repo, check=True, capture_output=True, text=True
    )
    return done.stdout


write = write_files  # the GitOps tests' name for it


def commit(repo: Path, message: str, files: dict[str, str | None]) -> str:
    """Write files, commit everything, return the commit id."""
    write(repo, files)
    git(repo, "add", "-A", ".")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def new_repo(tmp_path: Path, prefix: str = "") -> tuple[Path, Path]:
    """An empty git repository and the project directory inside it (`prefix`)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    project = repo / prefix if prefix else repo
    project.mkdir(parents=True, exist_ok=True)
    return repo, project


def run(*args: str) -> Result:
    """The real CLI, in-process."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False)
