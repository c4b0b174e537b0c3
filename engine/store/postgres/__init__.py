"""The scale-out store: PostgreSQL, shared by several `serve` and `worker` replicas.

`syncline serve --database postgresql://...` runs the same runtime on it (SPEC section 8). How
it keeps the `Store` invariants when several processes write at once:

- Every write is one transaction on a pooled connection, except that concurrent accepts are
  batched: one transaction carries whatever queued while the previous batches committed (see
  `accept`). Across transactions, group commit is PostgreSQL's own: the backend that flushes the
  WAL flushes every commit record queued behind it.
- Deduplication is the unique index on (flow, key) itself (`ON CONFLICT ... DO NOTHING`): two
  replicas accepting the same delivery at the same instant create one run; the loser answers
  `duplicate` naming the winner's run.
- Arrival order: a run's `seq` comes from an identity column, and an accept first takes a
  transaction-scoped advisory lock on each of its ordering keys. Two accepts for one ordering
  key therefore commit in `seq` order, so no reader ever sees a later run of a key before an
  earlier one (which would let a worker start it first).
- Claiming leases runs with `FOR UPDATE SKIP LOCKED`: replicas never wait for, nor double-claim,
  each other's runs. A replica that dies leaves runs `running` under a lease nobody renews; when
  it expires, any other replica claims and finishes them (completed steps are checkpointed, and
  calls repeat with the same idempotency keys).
- Migrations are numbered like SQLite's and applied under an advisory lock, so replicas starting
  together apply each one once.
"""

from __future__ import annotations

from engine.store.base import Store
from engine.store.postgres.audit import PostgresAudit
from engine.store.postgres.core import BATCHES_IN_FLIGHT, PostgresCore
from engine.store.postgres.events import PostgresEvents
from engine.store.postgres.execution import PostgresExecution
from engine.store.postgres.metrics import PostgresMetrics
from engine.store.postgres.reads import PostgresReads
from engine.store.postgres.triggers import PostgresTriggers

__all__ = ["BATCHES_IN_FLIGHT", "PostgresStore"]


class PostgresStore(
    PostgresExecution,
    PostgresEvents,
    PostgresReads,
    PostgresMetrics,
    PostgresTriggers,
    PostgresAudit,
    PostgresCore,
    Store,
):
    """The `Store` on PostgreSQL (psycopg 3 with a connection pool).

    `url` is a libpq connection string or URL (``postgresql://user@host:5432/db``; a
    ``?options=-csearch_path%3Dname`` parameter selects a schema). `pool_size` caps the
    connections this process opens; `open()` gives up after `connect_timeout` seconds. Use
    ``async with PostgresStore(url) as store:`` or call `open()` and `close()`.
    `migrations_applied` lists what the last `open()` applied.

    Each concern of the interface is a mixin of its own module (execution, events, reads,
    metrics, triggers, audit) over `PostgresCore`, which owns the connection pool.
    """

    shared = True
