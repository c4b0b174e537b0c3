"""Backing up and restoring the embedded store (`syncline store backup|restore`).

A backup is a consistent copy of the SQLite file taken while the store serves: SQLite's online
backup API copies every page in one step, inside one read transaction, so it sees one committed
state while the writer goes on appending to the WAL. The copy is written next to the target and
renamed into place, so a backup file is always whole; it is a plain SQLite file (rollback
journal, no WAL) marked with its own `application_id`, which is how `restore` recognises one.

`restore` refuses, changing nothing:
- a file that is not a Syncline backup (not SQLite, or without the mark);
- a backup of a newer schema than this Syncline knows (upgrade Syncline first);
- a backup that fails SQLite's integrity check;
- a target store that a process still has open (`syncline serve`, `worker`, a CLI command):
  SQLite cannot leave WAL mode while another connection is open, which is the test.
An existing target store is not deleted: it is renamed aside (`<file>.replaced-<UTC time>`).

PostgreSQL stores are backed up with PostgreSQL's own tools (README: Operations).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.errors import StoreError, UsageError
from engine.store.sqlite import MIGRATIONS

BACKUP_ID = 0x53594E42  # "SYNB": PRAGMA application_id of a Syncline backup file


@dataclass(frozen=True)
class Copied:
    """What a backup or restore did."""

    path: Path  # the file written
    schema: int  # its schema version
    runs: int  # runs it holds
    bytes: int  # its size
    seconds: float  # how long it took
    replaced: Path | None = None  # restore: where the store it replaced went


def backup(store: Path, target: Path) -> Copied:
    """Copy the SQLite store at `store` into the backup file `target` (see the module
    docstring). An existing `target` is replaced only if it is itself a backup."""
    started = time.monotonic()
    if not store.is_file():
        raise UsageError(f"no store at {store}")
    if target.exists() and not _is_backup(target):
        raise UsageError(f"{target} exists and is not a Syncline backup; not overwriting it")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        with _connect(store) as source, _connect(partial) as copy:
            source.backup(copy)  # one step: one consistent snapshot
            copy.execute(f"PRAGMA application_id = {BACKUP_ID}")
            copy.execute("PRAGMA journal_mode = DELETE")
            schema, runs = _describe(copy)
        os.replace(partial, target)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise StoreError(f"backing up {store} failed: {exc}") from exc
    return Copied(target, schema, runs, target.stat().st_size, time.monotonic() - started)


def restore(source: Path, store: Path) -> Copied:
    """Make the backup `source` the store at `store` (see the module docstring)."""
    started = time.monotonic()
    schema = check_backup(source)
    if store.exists():
        _quiesce(store)  # before the copy, not only after it: say so at once
    store.parent.mkdir(parents=True, exist_ok=True)
    partial = store.with_name(store.name + ".restoring")
    partial.unlink(missing_ok=True)
    try:
        with _connect(source) as backup_file, _connect(partial) as copy:
            backup_file.backup(copy)
            copy.execute("PRAGMA application_id = 0")  # a store again, not a backup
            _, runs = _describe(copy)
        replaced = _set_aside(store) if store.exists() else None
        os.replace(partial, store)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise StoreError(f"restoring {source} failed: {exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return Copied(store, schema, runs, store.stat().st_size, time.monotonic() - started, replaced)


def check_backup(path: Path) -> int:
    """The schema version of a usable backup file; UsageError naming what is wrong if not."""
    if not path.is_file():
        raise UsageError(f"no backup file {path}")
    if not _is_backup(path):
        raise UsageError(f"{path} is not a Syncline backup (make one with `syncline store backup`)")
    with _connect(path) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise UsageError(
                f"{path} is a backup of schema version {version}, newer than this Syncline "
                f"knows ({len(MIGRATIONS)}); restore it with a newer Syncline"
            )
        problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise UsageError(f"{path} is damaged: {'; '.join(problems[:5])}")
    return int(version)


def _is_backup(path: Path) -> bool:
    try:
        with _connect(path) as conn:
            return bool(conn.execute("PRAGMA application_id").fetchone()[0] == BACKUP_ID)
    except sqlite3.DatabaseError:  # not SQLite at all
        return False


def _quiesce(store: Path) -> None:
    """Fold the store's WAL into its file; UsageError if a process has it open (leaving WAL
    mode needs sole access)."""
    try:
        with _connect(store) as conn:
            conn.execute("PRAGMA journal_mode = DELETE")
    except sqlite3.OperationalError as exc:
        raise UsageError(
            f"the store {store} is in use ({exc}); stop `syncline serve` and every worker "
            "using it, then restore"
        ) from None


def _set_aside(store: Path) -> Path:
    """Rename a store nobody has open out of the way; UsageError if one has it open."""
    _quiesce(store)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = store.with_name(f"{store.name}.replaced-{stamp}")
    os.replace(store, aside)
    for suffix in ("-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    return aside


@contextlib.contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        yield conn
    finally:
        conn.close()


def _describe(conn: sqlite3.Connection) -> tuple[int, int]:
    schema = conn.execute("PRAGMA user_version").fetchone()[0]
    runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0] if schema else 0
    return int(schema), int(runs)
