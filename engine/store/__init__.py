"""Durable state: the `Store` interface, the embedded SQLite store and the PostgreSQL one.

`open_store` is the one place a `--database` value becomes a store."""

from pathlib import Path

from engine.errors import UsageError
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


def open_store(database: str | None, project: Path) -> Store:
    """The store `--database` names (not opened yet): ``postgresql://...`` (or ``postgres://``)
    is PostgreSQL; a path or ``sqlite:///PATH`` is a SQLite file; none is the project's own
    ``<project>/.syncline/syncline.db``. Raises UsageError for anything else."""
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
