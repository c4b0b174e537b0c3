"""Writing projects in tests, the one way every kit and test does it (as dbt's functional tests
write a project into tmp_path): `write_files` for any files, `write_project` for a project with
a default `syncline.yaml`."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

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


def write_files(root: Path, files: Mapping[str, str | None]) -> Path:
    """Write each file (its text dedented) under `root`, or delete it where the text is None;
    returns `root`."""
    for name, text in files.items():
        path = root / name
        if text is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def write_project(root: Path, files: Mapping[str, str | None]) -> Path:
    """`files` under `root`, with PROJECT_FILE as syncline.yaml unless `files` has one."""
    return write_files(root, {"syncline.yaml": PROJECT_FILE, **files})
