"""Durable state: the `Store` interface and its SQLite implementation."""

from engine.store.base import (
    TERMINAL_STATES,
    Acceptance,
    Attempt,
    Checkpoint,
    EventRecord,
    NewRun,
    OutboxItem,
    Reason,
    RunRecord,
    StepRecord,
    Store,
)
from engine.store.sqlite import SQLiteStore

__all__ = [
    "TERMINAL_STATES",
    "Acceptance",
    "Attempt",
    "Checkpoint",
    "EventRecord",
    "NewRun",
    "OutboxItem",
    "Reason",
    "RunRecord",
    "SQLiteStore",
    "StepRecord",
    "Store",
]
