"""Durable state: the `Store` interface, the embedded SQLite store and the PostgreSQL one.

`open_store` is the one place a `--database` value becomes a store.

The names below load on first use (PEP 562): the SQLite writer process imports modules of this
package and must not pay for the store classes, asyncio and the rest at each start."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import UsageError

if TYPE_CHECKING:
    from engine.store.base import (
        TERMINAL_STATES,
        Acceptance,
        Attempt,
        Checkpoint,
        CorrectedData,
        EventRecord,
        NewRun,
        OutboxItem,
        Reason,
        RunQuery,
        RunRecord,
        StateChange,
        StepRecord,
        Store,
    )
    from engine.store.sqlite import SQLiteStore

__all__ = [
    "TERMINAL_STATES",
    "Acceptance",
    "Attempt",
    "Checkpoint",
    "CorrectedData",
    "EventRecord",
    "NewRun",
    "OutboxItem",
    "Reason",
    "RunQuery",
    "RunRecord",
    "SQLiteStore",
    "StateChange",
    "StepRecord",
    "Store",
    "open_store",
]


def __getattr__(name: str) -> Any:
    if name == "SQLiteStore":
        return importlib.import_module("engine.store.sqlite").SQLiteStore
    if name in __all__ and name != "open_store":
        return getattr(importlib.import_module("engine.store.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(database: str | None, project: Path) -> Store:
    """The store `--database` names (not opened yet): ``postgresql://...`` (or ``postgres://``)
    is PostgreSQL; a path or ``sqlite:///PATH`` is a SQLite file; none is the project's own
    ``<project>/.syncline/syncline.db``. Raises UsageError for anything else."""
    from engine.store.sqlite import SQLiteStore

    if not database:
        return SQLiteStore(project / ".syncline" / "syncline.db")
    if database.startswith(("postgresql://", "postgres://")):
        from engine.store.postgres import PostgresStore  # psycopg loads only when it is used

        return PostgresStore(database)
    if database.startswith("sqlite:"):
        # SQLAlchemy's convention: sqlite:///relative/path, sqlite:////absolute/path
        if not database.startswith("sqlite:///") or database == "sqlite:///":
            raise UsageError(f"--database {database!r}: expected sqlite:///PATH")
        return SQLiteStore(database.removeprefix("sqlite:///"))
    if "://" in database:
        raise UsageError(
            f"--database {database!r}: expected postgresql://..., a SQLite path or sqlite:///PATH"
        )
    return SQLiteStore(database)
