"""The embedded store: one SQLite file (the runtime uses `<project>/.syncline/syncline.db`).

How it is built, and why:

- WAL journal with ``synchronous=NORMAL``. In WAL mode a commit appends the transaction to the
  -wal file with write(2) before COMMIT returns, so a committed (acknowledged) write survives the
  *process* dying at any point, SIGKILL included: the data is in the OS page cache and the next
  open recovers it from the WAL. Only an OS crash or power loss can lose the last commits; the WAL
  is fsynced when it is checkpointed. FULL would fsync on every commit and, per BASELINES.md,
  costs ~40% of acceptance throughput.
- One writer *process* owns the only write connection (engine/store/writer.py says why a
  process). Every write is a named job function with its arguments; the writer takes everything
  that queued, runs each job in its own SAVEPOINT inside one transaction (a failing write rolls
  back only itself), commits once and then answers the callers' futures. No linger: a batch is
  whatever queued while the previous commit ran, which BASELINES.md measured as the winner.
  Durability costs one commit per batch, not per event.
- Reads run on a small pool of read-only connections in worker threads. Every read is its own
  read transaction, so it sees everything committed before it started (and one consistent
  snapshot when it runs several queries).
- The schema is a numbered list of SQL scripts; ``PRAGMA user_version`` records how many ran.
"""

from __future__ import annotations

from engine.store.base import Store
from engine.store.sqlite.audit import SQLiteAudit
from engine.store.sqlite.core import WRITER_MODULE, SQLiteCore
from engine.store.sqlite.events import SQLiteEvents
from engine.store.sqlite.execution import SQLiteExecution
from engine.store.sqlite.metrics import SQLiteMetrics
from engine.store.sqlite.reads import SQLiteReads
from engine.store.sqlite.triggers import SQLiteTriggers
from engine.store.sqlite_schema import MIGRATIONS

__all__ = ["MIGRATIONS", "WRITER_MODULE", "SQLiteStore"]


class SQLiteStore(
    SQLiteExecution,
    SQLiteEvents,
    SQLiteReads,
    SQLiteMetrics,
    SQLiteTriggers,
    SQLiteAudit,
    SQLiteCore,
    Store,
):
    """The embedded `Store`: one SQLite file in WAL mode, group-committed by a writer process.

    `path` is the database file; missing parent directories are created. `max_batch` caps how
    many queued writes one commit carries (default: all that queued; 1 gives one commit per write,
    the baseline the benchmark compares against). Use ``async with SQLiteStore(path) as store:``
    or call `open()` and `close()`.

    `commits` and `writes` count committed transactions and the writes they carried.
    `migrations_applied` lists the schema migrations the last `open()` applied.

    Each concern of the interface is a mixin of its own module (execution, events, reads,
    metrics, triggers, audit) over `SQLiteCore`, which owns the writer process and the readers.
    """
