"""The SQLite writer checkpoints its WAL in a thread, never in a commit, and the WAL stays
bounded however continuously commits arrive (engine/store/sqlite_checkpoints.py)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from engine.store import EventRecord, NewRun, sqlite_writes
from engine.store import sqlite_checkpoints as checkpoints
from engine.store.rows import event_row, run_rows
from engine.store.sqlite_writes import close_writer, commit_batch, open_writer, tx_accept
from engine.store.writer_child import Job

PAGE = 4096


def accepts(first: int, count: int) -> list[Job]:
    """`count` accept jobs of ~2 KB events, as the writer process gets them."""
    rows = run_rows(
        [
            (
                event_row(EventRecord(f"ev-{n}", "t", "tests", {"n": n, "pad": "x" * 2000}), 1.0),
                [NewRun(f"r{n}", "sync", 1, "sha256:p", f"k{n}", f"acct-{n % 7}", f"c{n}")],
            )
            for n in range(first, first + count)
        ]
    )
    return [Job(first + i, tx_accept, row) for i, row in enumerate(rows)]


def wal_pages(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size // PAGE if wal.exists() else 0


def test_the_write_connection_never_checkpoints_in_a_commit(tmp_path: Path) -> None:
    conn, _ = open_writer(tmp_path / "s.db")
    try:
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    finally:
        close_writer(conn)


def test_the_wal_starts_over_while_commits_never_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint racing the commits never reaches the WAL's end, so without the writer's
    catch-up SQLite would never write the WAL from its beginning again: it would hold every page
    written (14,377 here when measured). How large it gets before it starts over depends on how
    much CPU the checkpoint thread gets (1,277 to 9,314 pages on a loaded machine), so what is
    asserted is that it starts over, again and again, while the commits go on."""
    monkeypatch.setattr(checkpoints, "WRITES", 16)
    monkeypatch.setattr(checkpoints, "CATCH_UP_FRAMES", 256)
    path = tmp_path / "s.db"
    conn, _ = open_writer(path)
    sequences, batches = set(), 400
    try:
        for b in range(batches):
            jobs = accepts(b * 10, 10)
            assert commit_batch(conn, jobs)
            assert all(job.error is None for job in jobs)
            sequences.add(wal_sequence(path))
        written = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        close_writer(conn)
    assert written == batches * 10
    assert len(sequences) >= 4, f"the WAL started over {len(sequences) - 1} times"
    with sqlite3.connect(path) as check:  # closing checkpointed everything and removed the WAL
        assert check.execute("SELECT count(*) FROM runs").fetchone()[0] == batches * 10
    check.close()
    assert wal_pages(path) == 0


def wal_sequence(path: Path) -> int:
    """The WAL header's checkpoint sequence number: it grows each time the WAL starts over."""
    with open(path.with_name(path.name + "-wal"), "rb") as wal:
        return int.from_bytes(wal.read(16)[12:16], "big")


def test_a_starved_checkpoint_thread_does_not_let_the_wal_grow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a saturated machine the thread may not run for a long while (the WAL once reached 9,314
    pages with 4,096 to catch up at): the writer then catches up on its own."""
    monkeypatch.setattr(checkpoints, "WRITES", 16)
    monkeypatch.setattr(checkpoints.Checkpoints, "checkpoint", lambda self: None)  # never runs
    path = tmp_path / "s.db"
    conn, _ = open_writer(path)
    largest = 0
    try:
        for b in range(200):
            assert commit_batch(conn, accepts(b * 10, 10))
            largest = max(largest, wal_pages(path))
    finally:
        close_writer(conn)
    # every 8 x 16 writes the writer checkpoints: a few hundred pages at most (7,000 without)
    assert largest < 1500, f"the WAL grew to {largest} pages"


def test_the_thread_checkpoints_as_writes_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoints, "WRITES", 16)
    path = tmp_path / "s.db"
    conn, _ = open_writer(path)
    try:
        thread = sqlite_writes._checkpoints
        assert thread is not None and thread.checkpoints == 0
        for b in range(20):
            assert commit_batch(conn, accepts(b * 10, 10))
        deadline = time.monotonic() + 10
        while thread.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert thread.checkpoints >= 1
        thread.close()  # no checkpoint may be writing the file while it is read as immutable
        # what it copied is in the database file itself (the writer's connection never copies)
        with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as raw:
            assert raw.execute("SELECT count(*) FROM events").fetchone()[0] > 0
        raw.close()
    finally:
        close_writer(conn)
