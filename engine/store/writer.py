"""Group commit in a writer process: the SQLite store's writes run in a child process of their own.

Why a process and not a thread: an ingest node spends its event loop's time on HTTP, signature
checks and JSON, and every accept must also be written to SQLite. A writer *thread* needs the GIL
to bind parameters and to hand results back, so under load the loop and the writer take turns
on one lock, and each turn costs the loop more than the write itself (measured with
tests/bench/bench_ingest.py: the thread cost the loop about twice the writer's own 20 us per
accept). A writer process owns the write connection, has its own interpreter, and runs on the
other core; the loop only pickles a batch of small tuples onto a socket and reads one answer per
batch.

The protocol is frames on a Unix socket pair (a 4-byte little-endian length, then a pickle):

- child -> parent, once: ``("ready", migrations_applied)`` or ``("failed", message)``;
- parent -> child: a list of ``(job id, job name, args)``, in submission order; ``None`` asks
  the child to commit what it has and exit (so does end of file: a parent that died);
- child -> parent: ``("done", commits, writes, [(job id, error, error's cause, result), ...])``
  once the batch is committed (or, if the commit failed, with every job's error); or
  ``("broken", why)`` if a frame from the parent could not be unpickled (whose jobs it held is
  unknown, so the parent fails every write in flight, as it does for a frame it cannot read).

The child takes whatever has queued (up to `max_batch` jobs) and calls the store module's
`commit_batch` on it: one transaction per batch, as with a thread. It ignores SIGINT and SIGTERM,
so that a terminal's Ctrl-C or a service manager's signal to the whole process group lets the
parent shut down gracefully and flush its last writes first; it exits when the parent closes its
end. If the child dies, the writes in flight fail with `StoreError` (they may or may not have
been committed; each is idempotent to retry) and a new child takes over.

The store module (``engine.store.sqlite_writes``) provides ``open_writer(path) -> (connection,
migrations applied)``, ``commit_batch(connection, jobs)`` (sets each job's `result` or `error`),
``close_writer(connection)`` and ``WRITES``, the job functions a parent may name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import StoreError
from engine.store.writer_forkserver import ForkedWriter, fork_writer
from engine.store.writer_frames import Frames, Unreadable, frame

log = logging.getLogger("syncline.store")

_BUFFER = 4 << 20  # socket buffers: a burst of accepts fits without waiting for the child
_STOP_TIMEOUT = 60.0
# A frame goes out at the end of each event-loop turn, or at once when this many writes wait: a
# burst of requests (64 connections answered together come back together) then reaches the child
# in slices, and it commits the first while the loop still parses the rest. Measured with
# tests/bench/bench_ingest.py: 16 beats 8 (more, smaller commits) and 32 or once per turn (the
# loop and the child take turns instead of working at the same time).
_SLICE = 16


# -- the parent's side ---------------------------------------------------------------------------
class WriterProcess:
    """Starts the writer process of the store module `module` on the database `path`, submits
    writes to it from the event loop that started it, and stops it."""

    def __init__(self, module: str, path: Path, max_batch: int) -> None:
        self._module = module
        self._path = path
        self._max_batch = max_batch
        self.commits = 0  # transactions committed
        self.writes = 0  # writes those transactions carried
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proc: ForkedWriter | None = None
        self._transport: asyncio.Transport | None = None
        self._hello: asyncio.Future[Any] | None = None
        self._gone: asyncio.Future[None] | None = None
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._outgoing: list[tuple[int, str, tuple[Any, ...]]] = []
        self._flush_scheduled = False
        self._next_id = 0
        self._stopping = False
        self._failure: StoreError | None = None  # set when no writer can be started

    @property
    def pid(self) -> int | None:
        """The writer process's id (None when none runs)."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> list[int]:
        """Start the child; return the schema migrations it applied. Raises StoreError."""
        self._loop = asyncio.get_running_loop()
        hello = await self._spawn()
        if hello[0] != "ready":
            self._stopping = True
            await self._disconnect()
            raise StoreError(hello[1])
        return list(hello[1])

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Queue `fn(conn, *args)` (a function of the store module's `WRITES`); the future
        resolves once its transaction is committed."""
        loop = self._loop
        assert loop is not None, "the writer was not started"
        if asyncio.get_running_loop() is not loop:
            raise StoreError("the SQLite store is used from an event loop other than its own")
        future = loop.create_future()
        if self._failure is not None or self._stopping:
            future.set_exception(self._failure or StoreError("the SQLite store is closed"))
            return future
        job_id = self._next_id
        self._next_id += 1
        self._waiting[job_id] = future
        self._outgoing.append((job_id, fn.__name__, args))
        if len(self._outgoing) >= _SLICE:
            self._flush()
        elif not self._flush_scheduled:  # one frame for what is submitted in this loop turn
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    async def stop(self) -> None:
        """Commit what was submitted, then end the child (waits for it)."""
        if self._stopping:
            return
        self._stopping = True
        self._flush()
        if self._transport is not None:
            self._transport.write(frame(None))
        await self._disconnect()
        self._fail_waiting(StoreError("the SQLite store was closed before this write ran"))

    # -- internals -------------------------------------------------------------------------------
    async def _disconnect(self) -> None:
        """Wait for the child to close its end (it does once it has answered everything it
        was sent), close ours, and reap it."""
        if self._transport is not None and self._gone is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._gone), _STOP_TIMEOUT)
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        await self._reap()

    async def _spawn(self) -> Any:
        loop = self._loop
        assert loop is not None
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for end in (parent, child):
            with contextlib.suppress(OSError):
                end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
                end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
        try:
            self._proc = await asyncio.to_thread(
                fork_writer, self._module, child.fileno(), self._path, self._max_batch
            )
        except StoreError:
            parent.close()
            raise
        finally:
            child.close()
        self._hello = loop.create_future()
        self._gone = loop.create_future()
        transport, _ = await loop.create_unix_connection(lambda: _Protocol(self), sock=parent)
        self._transport = transport
        return await self._hello

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._outgoing or self._transport is None:
            return  # nothing to send, or a new child is starting: it sends on connection
        jobs, self._outgoing = self._outgoing, []
        try:
            data = frame(jobs)
        except Exception:  # noqa: BLE001 - an argument that cannot be pickled: fail that job alone
            jobs, refused = _picklable(jobs)
            for job_id, error in refused:
                self._settle(job_id, error, None)
            data = frame(jobs)
        self._transport.write(data)

    def _received(self, message: Any) -> None:
        if isinstance(message, Unreadable):  # from the child, or a `broken` report of it
            message = ("broken", message.why)
        kind = message[0]
        if kind == "broken":
            log.error("the SQLite writer process's channel lost a frame: %s", message[1])
            self._fail_waiting(StoreError(f"a write's answer was lost ({message[1]}); retry it"))
        elif kind == "done":
            _, self.commits, self.writes, results = message
            for job_id, error, cause, result in results:
                if cause is not None:  # pickling an exception drops its cause: it came apart
                    error.__cause__ = cause
                self._settle(job_id, error, result)
        elif self._hello is not None and not self._hello.done():  # ready | failed
            self._hello.set_result(message)

    def _settle(self, job_id: int, error: BaseException | None, result: Any) -> None:
        future = self._waiting.pop(job_id, None)
        if future is None or future.done():  # the caller was cancelled; the write happened
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def _lost(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        if self._hello is not None and not self._hello.done():
            self._hello.set_result(("failed", self._exit_message("before opening the store")))
            return
        if self._stopping:
            return
        # Unexpected: the writes in flight may or may not have been committed.
        message = self._exit_message("with writes in flight")
        log.error("%s; starting a new one", message)
        self._fail_waiting(StoreError(f"{message}; retry the write"))
        assert self._loop is not None
        self._loop.create_task(self._restart())

    async def _restart(self) -> None:
        await self._reap()
        try:
            hello = await self._spawn()
        except StoreError as exc:
            hello = ("failed", str(exc))
        if hello[0] != "ready":
            self._failure = StoreError(f"the SQLite writer process cannot restart: {hello[1]}")
            log.error("%s", self._failure)
            self._fail_waiting(self._failure)
            return
        self._flush()

    def _exit_message(self, when: str) -> str:
        status = self._proc.poll() if self._proc is not None else None
        how = "" if status is None else f" with status {status}"  # None: it is still exiting
        return f"the SQLite writer process for {self._path} exited{how} {when}"

    def _fail_waiting(self, error: StoreError) -> None:
        self._outgoing = []
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(error)

    async def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            await asyncio.to_thread(proc.wait, _STOP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await asyncio.to_thread(proc.wait, None)


def _picklable(
    jobs: list[tuple[int, str, tuple[Any, ...]]],
) -> tuple[list[tuple[int, str, tuple[Any, ...]]], list[tuple[int, StoreError]]]:
    """The jobs that pickle, and an error for each job (by id) that does not."""
    kept, refused = [], []
    for job in jobs:
        try:
            pickle.dumps(job, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001
            error = StoreError(f"cannot send write {job[1]} to the writer process: {exc}")
            refused.append((job[0], error))
        else:
            kept.append(job)
    return kept, refused


class _Protocol(asyncio.Protocol):
    def __init__(self, writer: WriterProcess) -> None:
        self._writer = writer
        self._frames = Frames()

    def data_received(self, data: bytes) -> None:
        for message in self._frames.feed(data):
            self._writer._received(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._writer._lost()
