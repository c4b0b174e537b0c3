"""Checkpoints of the SQLite store's WAL in a thread of the writer process, off the commit path.

Left to itself, SQLite checkpoints in the connection whose commit takes the WAL past 1,000 pages:
that commit copies the WAL into the database file and fsyncs both before it returns, and every
accept waiting on the writer process waits with it. Measured with tests/bench/bench_ingest.py
(ingest-only, 64 connections, on this 2-core machine): p99 41-167 ms with those checkpoints,
21-22 ms with none in the commit path.

So the writer's connection checkpoints never (``wal_autocheckpoint = 0``) and this thread, with
a connection of its own, runs a PASSIVE checkpoint each time `WRITES` writes have committed
since the last one: it copies what it can without waiting for the writer or any reader, while
the writer goes on committing (sqlite3 lets go of the GIL while a statement runs). Because
commits keep arriving meanwhile, a PASSIVE checkpoint rarely catches the WAL's end, and SQLite
writes the WAL from its beginning again only once a checkpoint has (else the file grows without
end): so once the WAL holds `CATCH_UP_FRAMES` pages, the writer itself runs the next PASSIVE
checkpoint right after a commit. It copies only the pages of the last few commits (the thread
copied the rest), nobody writes meanwhile, and the next transaction starts the WAL over. (A
RESTART checkpoint from the thread would do the same but hold the write lock while it waits
for readers.) The thread's report is what starts a catch-up, so a thread starved of CPU would let
the WAL grow (9,314 pages in a test on a saturated machine): the writer also catches up once
`LAG` times `WRITES` writes have committed without a checkpoint finishing.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from pathlib import Path

from engine.store.sqlite_schema import connect

WRITES = 256  # committed writes between two checkpoints (a batch's accept is a few pages)
CATCH_UP_FRAMES = 4096  # pages of WAL (16 MiB of 4 KiB pages) that make the writer catch up
LAG = 8  # WRITES-sized rounds without a finished checkpoint after which the writer catches up


class Checkpoints:
    """The checkpointing thread of one writer process; the writer calls `committed` after each
    commit."""

    def __init__(self, path: Path) -> None:
        self._conn = connect(path)
        self._pending = 0
        self._unchecked = 0  # writes committed since a checkpoint last finished
        self._catch_up = False  # the thread asks the writer to finish a checkpoint
        self._wake = threading.Event()
        self._closing = False
        self.checkpoints = 0  # checkpoints run (for tests)
        self._thread = threading.Thread(target=self._run, name="syncline-checkpoints", daemon=True)
        self._thread.start()

    def committed(self, writer: sqlite3.Connection, writes: int) -> None:
        """`writes` writes were committed on `writer` (called by the writer's thread)."""
        self._unchecked += writes
        if self._catch_up or self._unchecked >= LAG * WRITES:
            try:
                busy, frames, done = writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:  # the commit stands; the next one tries again
                print(f"syncline: SQLite checkpoint failed: {exc}", file=sys.stderr, flush=True)
            else:  # the thread's checkpoint or a reader may have been in the way: then again
                self._catch_up = bool(busy) or done < frames
                self._unchecked = 0
        self._pending += writes
        if self._pending >= WRITES:
            self._pending = 0
            self._wake.set()

    def close(self) -> None:
        """Stop the thread and close its connection (the writer's close then checkpoints the
        rest and removes the WAL, as the last connection to close does)."""
        self._closing = True
        self._wake.set()
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            try:
                self.checkpoint()
            except sqlite3.Error as exc:  # the next one tries again; the writer is unaffected
                print(f"syncline: SQLite checkpoint failed: {exc}", file=sys.stderr, flush=True)

    def checkpoint(self) -> None:
        _, frames, _ = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        self._unchecked = 0
        if frames >= CATCH_UP_FRAMES:
            self._catch_up = True
