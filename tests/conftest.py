"""Shared fixtures: a `project` writer for definition tests, a PostgreSQL schema per test."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import nats
import psycopg
import pytest
from nats.js.errors import NotFoundError

from tests.natskit import NATS_URL
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


# -- NATS JetStream: the backbone's tests run against the real server on this machine --------------
@pytest.fixture
def backbone() -> Iterator[dict[str, str]]:
    """A fresh stream name and subject prefix on the real server (the stream deleted afterwards).

    Without a reachable server the test is skipped, unless SYNCLINE_REQUIRE_NATS=1 (CI), where it
    fails."""
    host, port = NATS_URL.removeprefix("nats://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        if os.environ.get("SYNCLINE_REQUIRE_NATS") == "1":
            pytest.fail(f"no NATS server at {NATS_URL} (CI starts `nats-server -js`)")
        pytest.skip(f"no NATS server at {NATS_URL}")
    tag = uuid.uuid4().hex[:10]
    names = {"stream": f"T_{tag}", "prefix": f"t{tag}"}
    yield names

    async def drop() -> None:
        client = await nats.connect(NATS_URL)
        with suppress(NotFoundError):
            await client.jetstream().delete_stream(names["stream"])
        await client.close()

    asyncio.run(drop())


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: twice the cores (at most 8), since most tests wait on sockets, servers, the
    databases and the browser rather than the CPU (on 2 cores, measured back to back: 2m20s with
    4 workers, 2m41s with 3, 3m10s with 6, whose contention cost 45% more CPU)."""
    return max(2, min(2 * (os.cpu_count() or 1), 8))
