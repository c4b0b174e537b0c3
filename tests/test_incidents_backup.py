"""`syncline store backup|restore` (issue 18): a consistent copy taken while the server accepts
deliveries; restore refuses a live store, a file that is not a backup and a newer schema,
changing nothing; PostgreSQL is dumped and restored with its own tools."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import threading
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result
from incidentkit import CountingSystem, incident_project
from serverkit import LiveServer
from test_incidents_pause import deliver

from engine.cli import main as cli
from engine.store import open_store
from engine.store.base import EventRecord, NewRun
from engine.store.sqlite import MIGRATIONS


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def syncline(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def counts(path: Path) -> tuple[int, int]:
    """(runs, runs whose event is missing) of a store or backup file."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        orphans = conn.execute(
            "SELECT count(*) FROM runs WHERE event_id NOT IN (SELECT id FROM events)"
        ).fetchone()[0]
    return runs, orphans


def test_backup_while_serving_and_restore_once_stopped(tmp_path: Path) -> None:
    with CountingSystem() as erp:
        project = incident_project(tmp_path / "project", erp.url)
        backup = tmp_path / "nightly.db"
        with LiveServer(project, poll=0.05) as live, live.client() as http:
            for n in range(20):
                deliver(http, f"before-{n}")
            stop = threading.Event()

            def keep_delivering() -> None:
                n = 0
                while not stop.is_set():
                    deliver(http, f"during-{n}")
                    n += 1

            sender = threading.Thread(target=keep_delivering)
            sender.start()
            try:
                made = syncline("store", "backup", str(backup), "--project", str(project))
            finally:
                stop.set()
                sender.join()
            assert made.exit_code == 0, made.output
            assert made.output.startswith("backed up ")
            runs, orphans = counts(backup)
            assert runs >= 20 and orphans == 0  # one consistent snapshot

            live_store = project / ".syncline" / "syncline.db"
            refused = syncline("store", "restore", str(backup), "--project", str(project))
            assert refused.exit_code == 2
            assert "is in use" in refused.output
            assert "stop `syncline serve`" in refused.output
            deliver(http, "after-refusal")  # the live store was not touched
        total, _ = counts(live_store)
        assert total > runs

    restored = syncline("store", "restore", str(backup), "--project", str(project))
    assert restored.exit_code == 0, restored.output
    assert f"restored {runs:,} runs" in restored.output
    assert counts(live_store) == (runs, 0)
    [aside] = live_store.parent.glob("syncline.db.replaced-*")
    assert counts(aside)[0] == total  # the replaced store is kept


@pytest.fixture
def store_file(tmp_path: Path) -> Path:
    project = incident_project(tmp_path / "p", "http://127.0.0.1:9")
    made = syncline("systems", "pause", "erp", "--project", str(project))  # creates the store
    assert made.exit_code == 0, made.output
    return project / ".syncline" / "syncline.db"


def _refused(store_file: Path, backup: Path, message: str) -> None:
    before = store_file.read_bytes()
    project = store_file.parent.parent
    result = syncline("store", "restore", str(backup), "--project", str(project))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert store_file.read_bytes() == before
    assert not list(store_file.parent.glob("*.replaced-*"))


def test_restore_refuses_a_file_that_is_not_a_backup(store_file: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all\n" * 100)
    _refused(store_file, text, "is not a Syncline backup")
    plain = tmp_path / "copy.db"
    shutil.copy(store_file, plain)  # a store, not a backup
    _refused(store_file, plain, "is not a Syncline backup")
    _refused(store_file, tmp_path / "missing.db", "no backup file")


def test_restore_refuses_a_backup_of_a_newer_schema(store_file: Path, tmp_path: Path) -> None:
    backup = tmp_path / "b.db"
    project = store_file.parent.parent
    assert syncline("store", "backup", str(backup), "--project", str(project)).exit_code == 0
    with contextlib.closing(sqlite3.connect(backup)) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    _refused(store_file, backup, f"newer than this Syncline knows ({len(MIGRATIONS)})")


def test_backup_does_not_overwrite_a_file_that_is_not_a_backup(
    store_file: Path, tmp_path: Path
) -> None:
    precious = tmp_path / "precious.db"
    precious.write_text("keep me")
    project = store_file.parent.parent
    result = syncline("store", "backup", str(precious), "--project", str(project))
    assert result.exit_code == 2
    assert "is not a Syncline backup; not overwriting it" in result.output
    assert precious.read_text() == "keep me"


def test_a_postgresql_store_points_at_pg_dump(tmp_path: Path) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/test"
    result = syncline("store", "backup", str(tmp_path / "x"), "--database", url)
    assert result.exit_code == 2
    assert "pg_dump --format=custom" in result.output


@pytest.mark.anyio
@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed")
async def test_a_postgresql_store_survives_pg_dump_and_pg_restore(
    tmp_path: Path, postgres_url: str
) -> None:
    """What README's Operations section tells PostgreSQL users to do."""
    project = incident_project(tmp_path, "http://127.0.0.1:9")
    async with open_store(postgres_url, project) as store:
        event = EventRecord("ev-1", "webhook:/hooks/order", "crm", {"id": "o-1"})
        run = NewRun("run-1", "order-sync", 1, "d" * 64, "o-1", None, "corr-1")
        await store.accept(event, [run])
    schema = postgres_url.rsplit("%3D", 1)[1]
    base = postgres_url.split("?", 1)[0]
    dump = tmp_path / "store.dump"
    subprocess.run(
        ["pg_dump", "--format=custom", f"--schema={schema}", f"--file={dump}", base], check=True
    )
    with psycopg.connect(base, autocommit=True) as conn:  # the disaster
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
    subprocess.run(["pg_restore", f"--dbname={base}", str(dump)], check=True)
    async with open_store(postgres_url, project) as store:
        restored = await store.get_run("run-1")
    assert restored is not None and restored.correlation_id == "corr-1"
