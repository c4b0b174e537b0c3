"""Writer processes are forked from a fork server, not started as new interpreters.

A writer started as ``python -c ...`` cost about 110 ms of CPU: 36 ms for the interpreter and 75
ms importing the store module, before it opened the database (7 ms). A process that opens many
stores paid that for each (the test suite: about 400 stores, 45 s of CPU). The first writer a
process needs starts the fork server instead, which costs what that writer would have; the server
keeps the store modules imported and forks every writer from itself, in about 10 ms.

The parent holds one end of a SOCK_SEQPACKET socket pair (`fork_writer`), the server the other
(`main`):

- parent -> server, one record per writer: the pickle of ``(module, path, max_batch)`` with two
  file descriptors attached: the writer's end of its channel (see writer.py) and the write end of
  a status pipe;
- server -> parent, on the status pipe: the writer's pid (4 bytes, little-endian), then, once it
  has exited, its exit code as `subprocess` reports it (negative: killed by that signal); then
  the pipe closes. A pipe closing without an exit code means the server died: the writer's
  channel still tells when the writer ends, only its exit code is unknown.

The server exits once the parent's end closes: the parent closes it at exit (and reaps the
server), or died. A writer still running then (its store was never closed) ends on its own when
its channel closes with the parent. Like the writers, the server ignores SIGINT and SIGTERM, so a
signal to the process group leaves it to report the writers' exits while the parent shuts down.
Standard library only: the server imports this module at start.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import traceback
from pathlib import Path

from engine.errors import StoreError
from engine.store import writer_child

_CODE = "from engine.store.writer_forkserver import main; main()"
_INT = 4
_EXIT_TIMEOUT = 5.0


# -- the parent's side ---------------------------------------------------------------------------
class ForkedWriter:
    """A writer process forked by the server: its pid, and its exit code once it has exited."""

    def __init__(self, pid: int, status: int) -> None:
        self.pid = pid
        self._status = status  # the read end of its status pipe; -1 once read to the end
        self._returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code; None while it runs (or when the server died before reporting it)."""
        self._read(0)
        return self._returncode

    def wait(self, timeout: float | None) -> None:
        """Wait until it has exited (or its exit can no longer be reported); TimeoutError."""
        if not self._read(timeout):
            raise TimeoutError(f"the SQLite writer process {self.pid} did not exit")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def _read(self, timeout: float | None) -> bool:
        """Read the exit code if it is there (waiting up to `timeout`); True once it was read or
        the pipe closed without one."""
        if self._status < 0:
            return True
        if not select.select([self._status], [], [], timeout)[0]:
            return False
        data = os.read(self._status, _INT)
        if len(data) == _INT:
            self._returncode = int.from_bytes(data, "little", signed=True)
        os.close(self._status)
        self._status = -1
        return True


class _Server:
    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        root = str(Path(__file__).resolve().parents[2])  # the folder holding `engine`
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _CODE, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                env=env,
            )
        except OSError as exc:
            ours.close()
            raise StoreError(f"cannot start the SQLite writer fork server: {exc}") from exc
        finally:
            theirs.close()
        self.control = ours

    def fork(self, module: str, channel: int, path: Path, max_batch: int) -> ForkedWriter | None:
        """Ask for a writer; None if the server is gone."""
        status_r, status_w = os.pipe()
        request = pickle.dumps((module, str(path.absolute()), max_batch))
        try:
            socket.send_fds(self.control, [request], [channel, status_w])
        except OSError:
            os.close(status_r)
            return None
        finally:
            os.close(status_w)
        pid = os.read(status_r, _INT)
        if len(pid) != _INT:
            os.close(status_r)
            return None
        return ForkedWriter(int.from_bytes(pid, "little"), status_r)

    def close(self) -> None:
        """End the server: it exits once its end of the socket reports the close."""
        self.control.close()
        try:
            self.proc.wait(_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_lock = threading.Lock()
_server: _Server | None = None


def fork_writer(module: str, channel: int, path: Path, max_batch: int) -> ForkedWriter:
    """Fork a writer of store module `module` on database `path`, talking on the socket
    `channel` (the caller closes its copy); starts the fork server if none runs. Blocks for a
    moment: call it from a thread. Raises StoreError."""
    global _server
    with _lock:
        for _ in range(2):  # a server that died (killed, or a fork that failed) is replaced once
            if _server is None:
                _server = _Server()
            writer = _server.fork(module, channel, path, max_batch)
            if writer is not None:
                return writer
            _server.close()
            _server = None
    raise StoreError("the SQLite writer fork server cannot fork a writer")


@atexit.register
def _shutdown() -> None:
    """At exit, end the server and reap it (a writer still running, for a store its parent never
    closed, ends on its own once this process is gone)."""
    global _server
    with _lock:
        if _server is not None:
            _server.close()
            _server = None


def server_pid() -> int | None:
    """The fork server's pid (None before the first writer)."""
    return _server.proc.pid if _server is not None else None


def _forget_in_child() -> None:
    """A forked copy of the parent must not hold the server open, nor share its requests."""
    global _server, _lock
    if _server is not None:
        _server.control.close()
    _server, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


# -- the server ----------------------------------------------------------------------------------
def main() -> None:
    """The fork server: ``python -c _CODE FD``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    control = socket.socket(fileno=int(sys.argv[1]))
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd hears of it
    statuses: dict[int, int] = {}  # writer pid -> the write end of its status pipe
    while True:
        ready = select.select([control.fileno(), wake_r], [], [])[0]
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 512)
            _reap(statuses)
        if control.fileno() in ready:
            try:
                request, fds, _, _ = socket.recv_fds(control, 4096, 2)
            except OSError:
                request, fds = b"", []
            if not request:  # the parent is gone or exiting: its writers end on their own
                break
            module, path, max_batch = pickle.loads(request)
            channel, status = fds
            with contextlib.suppress(Exception):  # the child reports it, as open_writer's errors
                importlib.import_module(module)  # once here, then every fork has it
            pid = os.fork()
            if pid == 0:
                _child(module, channel, path, max_batch, [control.fileno(), wake_r, wake_w,
                                                          status, *statuses.values()])
            os.close(channel)
            statuses[pid] = status
            _write_int(status, pid)


def _child(module: str, channel: int, path: str, max_batch: int, inherited: list[int]) -> None:
    """The forked writer: never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in inherited:
            os.close(fd)
        writer_child.run(module, channel, path, max_batch)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - a writer that crashed says why on stderr
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)


def _reap(statuses: dict[int, int]) -> None:
    """Report the exit code of each writer that has exited."""
    while statuses:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = statuses.pop(pid, None)
        if fd is not None:
            _write_int(fd, os.waitstatus_to_exitcode(status), signed=True)
            os.close(fd)


def _write_int(fd: int, value: int, *, signed: bool = False) -> None:
    with contextlib.suppress(OSError):  # the parent is gone: nobody reads it
        os.write(fd, value.to_bytes(_INT, "little", signed=signed))
