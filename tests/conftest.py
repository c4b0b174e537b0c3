"""Shared fixtures: a `project` writer for definition tests, a PostgreSQL schema per test."""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
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


# -- PostgreSQL: the scale-out store's tests run against the real server on this machine ----------
POSTGRES = os.environ.get("SYNCLINE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A connection URL whose search_path is a fresh, empty schema (dropped afterwards).

    Without a reachable server the test is skipped, unless SYNCLINE_REQUIRE_POSTGRES=1 (CI),
    where it fails."""
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("SYNCLINE_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES}: {exc}")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            separator = "&" if "?" in POSTGRES else "?"
            yield f"{POSTGRES}{separator}options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
