"""Shared fixtures: a `project` writer for definition tests, a PostgreSQL schema per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.projectkit import write_project


@pytest.fixture
def project(tmp_path: Path) -> Callable[[dict[str, str]], Path]:
    """Write `{"flows/x.yaml": "..."}` (dedented) into a fresh project; syncline.yaml defaults."""
    return lambda files: write_project(tmp_path, files)


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


@pytest.fixture(params=["sqlite", "postgres"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """An open store of each kind: a SQLite file, and a fresh PostgreSQL schema (anyio tests)."""
    from engine.store import SQLiteStore
    from engine.store.postgres import PostgresStore

    if request.param == "sqlite":
        async with SQLiteStore(tmp_path / "syncline.db") as store:
            yield store
    else:
        async with PostgresStore(request.getfixturevalue("postgres_url")) as store:
            yield store
