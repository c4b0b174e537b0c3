"""The writer process's side (see engine/store/writer.py): `run`, in a process the fork server
forked (engine/store/writer_forkserver.py). Of the engine it imports only the store module it runs
(and what that needs), not the parent's side."""

from __future__ import annotations

import collections
import contextlib
import importlib
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import StoreError
from engine.store.writer_frames import Frames, Unreadable, frame

_POLL = 0.0002  # the child's wait between reads while writes keep coming (see _Channel.receive)
_IDLE = 0.05  # and how long without any before it blocks on the socket instead
_READ = 1 << 20  # bytes a read takes at most


class Job:
    """One write in the child: the job function, its arguments, and what came of it."""

    __slots__ = ("id", "fn", "args", "result", "error")

    def __init__(self, job_id: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.id = job_id
        self.fn = fn
        self.args = args
        self.result: Any = None
        self.error: BaseException | None = None


def run(module_name: str, fd: int, path: str, max_batch: int) -> None:
    """Be the writer of store module `module_name` on database `path`, talking on the socket
    `fd`, until the parent asks it to stop or goes away. Exits 1 if the store cannot open."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _batch_priority()
    module = importlib.import_module(module_name)
    channel = _Channel(socket.socket(fileno=fd))
    try:
        conn, applied = module.open_writer(Path(path))
    except Exception as exc:  # noqa: BLE001 - whatever it is, the parent reports it
        channel.send(frame(("failed", str(exc))))
        sys.exit(1)
    channel.send(frame(("ready", applied)))
    try:
        _serve(channel, module, conn, max_batch)
    finally:
        module.close_writer(conn)


def _batch_priority() -> None:
    """Run as a batch process (Linux's SCHED_BATCH, inherited by the threads started after):
    the same share of the CPU, but waking up, the writer does not preempt whoever runs. On a
    busy machine that is the event loop answering deliveries, and while the writer waits for
    its turn more writes queue, so it commits them in fewer, larger transactions."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux: no such policy
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def _serve(channel: _Channel, module: Any, conn: Any, max_batch: int) -> None:
    writes: dict[str, Callable[..., Any]] = module.WRITES
    backlog: collections.deque[Job] = collections.deque()
    commits = written = 0
    stopping = False
    while backlog or not stopping:
        if not backlog:
            stopping = _take(channel, channel.receive(block=True), writes, backlog)
        while not stopping:  # and whatever else queued meanwhile: no linger
            frames = channel.receive(block=False)
            if not frames:
                break
            stopping = _take(channel, frames, writes, backlog)
        batch = [backlog.popleft() for _ in range(min(max_batch, len(backlog)))]
        if not batch:
            continue
        if module.commit_batch(conn, batch):
            commits += 1
            written += len(batch)
        outcomes = [_outcome(job) for job in batch]
        try:
            answer = frame(("done", commits, written, outcomes))
        except Exception:  # noqa: BLE001 - some result cannot be pickled: find it, say so
            answer = frame(("done", commits, written, [_sendable(o) for o in outcomes]))
        channel.send(answer)


def _take(
    channel: _Channel, frames: list[Any], writes: dict[str, Callable[..., Any]], backlog: Any
) -> bool:
    """Queue the jobs of `frames`; True once the parent asked to stop (or went away)."""
    for received in frames:
        if received is None:
            return True
        if isinstance(received, Unreadable):
            channel.send(frame(("broken", received.why)))
            continue
        for job_id, name, args in received:
            backlog.append(Job(job_id, writes.get(name) or _unknown(name), args))
    return False


def _unknown(name: str) -> Callable[..., Any]:
    def unknown(conn: Any, *args: Any) -> None:
        raise StoreError(f"the writer process has no write named {name!r}")

    return unknown


def _outcome(job: Job) -> tuple[int, BaseException | None, BaseException | None, Any]:
    """What the parent hears of `job`: (id, error, the error's cause, result)."""
    error = job.error
    return (job.id, error, None if error is None else error.__cause__, job.result)


def _sendable(outcome: tuple[int, Any, Any, Any]) -> tuple[int, Any, Any, Any]:
    """`outcome`, or a StoreError in its place if it cannot be pickled: the parent must hear of
    every job."""
    try:
        pickle.dumps(outcome, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001
        return (outcome[0], StoreError(f"a write's outcome cannot be sent back: {exc}"), None, None)
    return outcome


class _Channel:
    """Blocking framed I/O on the child's end of the socket pair."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._frames = Frames()
        self._eof = False
        self._scratch = memoryview(bytearray(_READ))  # read into: no new 1 MiB buffer a read

    def send(self, frame: bytes) -> None:
        """Send one frame (made by `frame`)."""
        with contextlib.suppress(OSError):  # the parent is gone: nobody waits for the answer
            self._sock.sendall(frame)

    def receive(self, *, block: bool) -> list[Any]:
        """The frames that arrived (waiting for one if `block`); ``[None]`` at end of file.

        Waiting, it polls before it blocks: a process that sends to a reader asleep on the socket
        pays for waking it (on this machine's VM, a frame's send took 41 us instead of 6 on the
        ingest benchmark, a tenth of the event loop's time), so while writes keep coming the
        child sleeps on a timer between non-blocking reads, and waits on the socket only after
        `_IDLE` seconds without any."""
        frames = self._read(socket.MSG_DONTWAIT)
        if frames or not block:
            return frames
        idle_until = time.monotonic() + _IDLE
        while time.monotonic() < idle_until:
            time.sleep(_POLL)
            if frames := self._read(socket.MSG_DONTWAIT):
                return frames
        while not frames:
            frames = self._read(0)
        return frames

    def _read(self, flags: int) -> list[Any]:
        """One read: the frames it completed (none if nothing was waiting, with MSG_DONTWAIT);
        ``[None]`` at end of file."""
        if self._eof:
            return [None]
        try:
            size = self._sock.recv_into(self._scratch, _READ, flags)
        except BlockingIOError:
            return []
        except OSError:
            size = 0
        if not size:
            self._eof = True
            return [None]
        return self._frames.feed(self._scratch[:size])
