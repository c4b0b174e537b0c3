"""The durable store's interface: what the runtime and the server need, nothing more.

`Store` composes one abstract class per concern (engine/store/interface/: lifecycle, execution,
events, reads, metrics, triggers, audit); the records it takes and answers live in
engine/store/records.py and are importable from here too.

Every method is async. Implementations: `sqlite.SQLiteStore` (the embedded default) and
`postgres.PostgresStore` (several replicas on one database); the executor and the server only
ever see `Store`, and `engine.store.open_store` picks one from a `--database` value.

Invariants every implementation keeps:
- `accept` commits the event, its runs and their dedup keys in one transaction: an event that was
  acknowledged is never lost, and a duplicate (flow, key) never creates a second run.
- `checkpoint` commits a step's result, its attempts, the run's new state and any emitted events
  (the outbox) in one transaction.
- Writes from many concurrent callers are group-committed: one commit carries whatever queued
  while the previous commit ran.
- The audit log is append-only.
"""

from __future__ import annotations

from engine.store.interface.audit import AuditLog
from engine.store.interface.events import Events
from engine.store.interface.execution import Execution
from engine.store.interface.lifecycle import Lifecycle
from engine.store.interface.metrics import Metrics
from engine.store.interface.reads import RunReads
from engine.store.interface.triggers import Triggers
from engine.store.records import (
    CANCEL_ENDS,
    CANCELLED,
    RUNNABLE_STATES,
    TERMINAL_STATES,
    Acceptance,
    Attempt,
    Checkpoint,
    CorrectedData,
    EventRecord,
    NewRun,
    OutboxItem,
    Reason,
    ReceivedJSON,
    RunQuery,
    RunRecord,
    RunState,
    StateChange,
    StepRecord,
)

__all__ = [
    "Acceptance",
    "Attempt",
    "CANCELLED",
    "CANCEL_ENDS",
    "Checkpoint",
    "CorrectedData",
    "EventRecord",
    "NewRun",
    "OutboxItem",
    "RUNNABLE_STATES",
    "Reason",
    "ReceivedJSON",
    "RunQuery",
    "RunRecord",
    "RunState",
    "StateChange",
    "StepRecord",
    "Store",
    "TERMINAL_STATES",
]


class Store(Lifecycle, Execution, Events, RunReads, Metrics, Triggers, AuditLog):
    """Durable state of the runtime. Implementations must be safe for concurrent async callers.

    ``async with store:`` opens it and closes it."""
