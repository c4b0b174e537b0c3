"""The SQLite store's writer process (engine/store/writer.py): what happens when it dies, when
signals reach it, when its parent dies, and when it is asked for a write it does not know."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import StoreError
from engine.store import EventRecord, NewRun, SQLiteStore, writer_forkserver

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def run(run_id: str) -> NewRun:
    return NewRun(run_id, "sync", 1, "sha256:plan", run_id, None, f"corr-{run_id}")


async def add(store: SQLiteStore, run_id: str) -> str:
    [acceptance] = await store.accept(EventRecord(f"ev-{run_id}", "t", "tests", {}), [run(run_id)])
    return acceptance.run_id


def writer_pid(store: SQLiteStore) -> int:
    assert store._writer is not None and store._writer.pid is not None
    return store._writer.pid


def gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie waiting to be reaped counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


async def wait_until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_killed_writer_fails_the_writes_in_flight_and_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteStore(path) as store:
        await add(store, "before")
        first = writer_pid(store)
        # Another connection holds the write lock, so this write is in flight, not committed,
        # when the writer dies.
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        in_flight = asyncio.ensure_future(add(store, "in-flight"))
        await asyncio.sleep(0.2)
        os.kill(first, signal.SIGKILL)
        with pytest.raises(StoreError, match="exited.* with writes in flight; retry the write"):
            await in_flight
        blocker.execute("ROLLBACK")
        blocker.close()
        assert await add(store, "after") == "after"  # a new writer took over
        assert writer_pid(store) != first
        assert await store.get_run("before") is not None
        assert await store.get_run("in-flight") is None  # its transaction never committed
        assert await store.get_run("after") is not None


async def test_the_writer_ignores_sigint_and_sigterm(tmp_path: Path) -> None:
    # Ctrl-C in a terminal or a service manager signals the whole process group: the parent
    # shuts down gracefully and its last checkpoints must still reach the database.
    async with SQLiteStore(tmp_path / "s.db") as store:
        pid = writer_pid(store)
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
        await asyncio.sleep(0.2)
        assert await add(store, "r1") == "r1"
        assert writer_pid(store) == pid and not gone(pid)
    assert gone(pid)  # closing the store ends it


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policy")
async def test_the_writer_and_its_threads_run_as_a_batch_process(tmp_path: Path) -> None:
    # Waking up, the writer must not preempt the event loop that answers deliveries.
    async with SQLiteStore(tmp_path / "s.db") as store:
        pid = writer_pid(store)
        threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        assert len(threads) >= 2  # the writer and the thread that checkpoints its WAL
        assert {os.sched_getscheduler(t) for t in threads} == {os.SCHED_BATCH}
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the parent keeps its own


async def test_an_unknown_write_fails_alone(tmp_path: Path) -> None:
    def _tx_nonsense(conn: sqlite3.Connection) -> None:
        raise AssertionError("never runs: the writer only runs its own writes")

    async with SQLiteStore(tmp_path / "s.db") as store:
        with pytest.raises(StoreError, match="no write named '_tx_nonsense'"):
            await store._write(_tx_nonsense)
        assert await add(store, "r1") == "r1"


PARENT = """
import asyncio, sys
from engine.store import EventRecord, NewRun, SQLiteStore, writer_forkserver

async def main():
    store = SQLiteStore(sys.argv[1])
    await store.open()
    run = NewRun("r1", "sync", 1, "sha256:plan", "r1", None, "c1")
    await store.accept(EventRecord("e1", "t", "s", {}), [run])
    print(store._writer.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_the_writer_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    parent.stdout.close()
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    await wait_until(lambda: gone(pid))
    async with SQLiteStore(path) as store:  # what the dead parent was told is committed, is
        assert await store.get_run("r1") is not None


async def test_a_failed_open_leaves_no_writer_behind(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = live_writers()
    store = SQLiteStore(path)
    with pytest.raises(StoreError, match="newer than this Syncline understands"):
        await store.open()
    assert store._writer is None
    await asyncio.sleep(0.3)  # no replacement writer is started for a refused open
    assert live_writers() - before == set()


def live_writers() -> set[int]:
    """The writer processes alive: the fork server's children (none before it started)."""
    server = writer_forkserver.server_pid()
    if server is None:
        return set()
    children = Path(f"/proc/{server}/task/{server}/children").read_text().split()
    return {int(pid) for pid in children if not gone(int(pid))}


async def test_writers_are_forked_by_one_server_that_ends_with_its_parent(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "a.db") as a, SQLiteStore(tmp_path / "b.db") as b:
        server = writer_forkserver.server_pid()
        assert server is not None
        writers = {writer_pid(a), writer_pid(b)}
        assert len(writers) == 2 and writers <= live_writers()
        assert {parent_of(pid) for pid in writers} == {server}
    assert not writers & live_writers()  # closed, and reaped
    # A process that opened stores and exits leaves neither the server nor a writer behind.
    parent = subprocess.run([sys.executable, "-c", SERVER_OF, str(tmp_path / "c.db")],
                            capture_output=True, text=True, check=True, timeout=60)
    pids = [int(pid) for pid in parent.stdout.split()]
    await wait_until(lambda: all(gone(pid) for pid in pids))


SERVER_OF = """
import asyncio, sys
from engine.store import SQLiteStore
from engine.store import writer_forkserver

async def main():
    store = SQLiteStore(sys.argv[1])
    await store.open()  # and never closed: the process just exits
    print(writer_forkserver.server_pid(), store._writer.pid)

asyncio.run(main())
"""


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


class Opaque:
    """Pickled by reference to this test module, which the writer process cannot import."""


async def test_a_write_the_writer_cannot_read_fails_and_the_writer_goes_on(tmp_path: Path) -> None:
    from engine.store.sqlite_writes import tx_audit

    async with SQLiteStore(tmp_path / "s.db") as store:
        assert store._writer is not None
        unreadable = store._writer.submit(tx_audit, (Opaque(),))
        with pytest.raises(StoreError, match="answer was lost .*ModuleNotFoundError.*retry it"):
            await unreadable
        assert await add(store, "r1") == "r1"
        assert await store.get_run("r1") is not None



async def test_a_write_that_cannot_be_pickled_fails_alone(tmp_path: Path) -> None:
    from engine.store.sqlite_writes import tx_audit

    async with SQLiteStore(tmp_path / "s.db") as store:
        assert store._writer is not None
        bad = store._writer.submit(tx_audit, (lambda: None,))
        good = store.accept(EventRecord("ev-r1", "t", "tests", {}), [run("r1")])
        with pytest.raises(StoreError, match="cannot send write tx_audit to the writer process"):
            await bad
        assert [a.run_id for a in await good] == ["r1"]


def test_the_writer_process_imports_no_compiler() -> None:
    """Every SQLite store open spawns the writer; loading the compiler there cost seconds."""
    import subprocess
    import sys

    code = ("import sys, engine.store.sqlite_writes; print(sorted(m for m in sys.modules if "
            "m.startswith(('engine.compiler', 'engine.runtime', 'jinja2', 'pydantic'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
