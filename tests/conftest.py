"""Shared fixtures: a `project` writer for definition tests."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

PROJECT_FILE = """\
apiVersion: syncline/v1
kind: Project
metadata: {name: test-project, owner: tests}
spec:
  paths: [flows, mappings, policies]
  environments:
    dev:
      vars: {TARGET_URL: "http://127.0.0.1:9"}
"""


@pytest.fixture
def project(tmp_path: Path) -> Callable[[dict[str, str]], Path]:
    """Write `{"flows/x.yaml": "..."}` (dedented) into a fresh project; syncline.yaml defaults."""

    def write(files: dict[str, str]) -> Path:
        files = {"syncline.yaml": PROJECT_FILE, **files}
        for name, text in files.items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        return tmp_path

    return write
