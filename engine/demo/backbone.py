"""The demo's event backbone: which NATS JetStream the day publishes to (`open_backbone`).

`auto` (the default) takes, in order:

1. `NATS_URL`, when it is set and a JetStream-enabled server answers there;
2. a `nats-server -js` the demo starts on a free port, its store in the demo's temporary folder,
   when the binary is on PATH (stopped with the demo);
3. otherwise the in-memory backbone flow tests use (engine/runtime/stubs.py): the publishing
   flows run and their events are counted, but no NATS server holds them. The demo says so on a
   line of its own and in the report; nothing pretends to be NATS.

`nats` insists on a real server (1 or 2, else a UsageError saying how to get one); `memory`
takes 3 without looking. The in-memory backbone also keeps a publishing flow from waiting for a
server that is not there, which would keep the day from settling.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nats

from engine.errors import UsageError
from engine.runtime.stubs import StubBackbone

Choice = Literal["auto", "nats", "memory"]
CHOICES: tuple[Choice, ...] = ("auto", "nats", "memory")
IN_MEMORY_URL = "nats://in-memory.invalid:4222"  # never dialled: the in-memory backbone
START_TIMEOUT = 10.0  # seconds a started nats-server has to accept connections
PROBE_TIMEOUT = 2.0  # seconds NATS_URL has to answer


@dataclass
class DemoBackbone:
    """The backbone of one demo: where it is (`url`, passed to the project as NATS_URL), what it
    is (`kind`: "NATS_URL", "nats-server" or "in-memory") and why (`note`)."""

    kind: str
    url: str
    note: str
    memory: StubBackbone | None = None  # the in-memory backbone (kind "in-memory")
    process: subprocess.Popen[bytes] | None = None  # the nats-server the demo started

    @property
    def real(self) -> bool:
        return self.memory is None

    async def close(self) -> None:
        """Stop the nats-server the demo started (nothing else)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 10)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


async def open_backbone(choice: Choice, workdir: Path,
                        environ: Mapping[str, str]) -> DemoBackbone:
    """The backbone `choice` asks for (see the module docstring). Raises UsageError when
    `nats` cannot be had."""
    if choice == "memory":
        return _in_memory("--backbone memory")
    url = environ.get("NATS_URL", "").strip()
    unusable = await _probe(url) if url else "NATS_URL is not set"
    if unusable is None:
        return DemoBackbone("NATS_URL", url, f"NATS_URL {url}")
    binary = shutil.which("nats-server")
    if binary is not None:
        return await _start(binary, workdir / "nats")
    why = f"{unusable} and no nats-server is on PATH"
    if choice == "nats":
        raise UsageError(f"--backbone nats: {why}; install nats-server (e.g. `apt-get install "
                         "nats-server`) or set NATS_URL to a JetStream-enabled server")
    return _in_memory(why)


def _in_memory(why: str) -> DemoBackbone:
    return DemoBackbone("in-memory", IN_MEMORY_URL,
                        f"in memory ({why}): events are published and counted, not sent to NATS",
                        memory=StubBackbone())


async def _probe(url: str) -> str | None:
    """None when a JetStream-enabled server answers at `url`; else what is wrong."""
    try:
        client = await asyncio.wait_for(
            nats.connect(servers=url.split(","), connect_timeout=PROBE_TIMEOUT,
                         max_reconnect_attempts=0, allow_reconnect=False, error_cb=_quiet),
            PROBE_TIMEOUT * 2)
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        return f"NATS_URL {url} does not answer ({exc or type(exc).__name__})"
    try:
        await client.jetstream().account_info()
    except (TimeoutError, nats.errors.Error) as exc:
        return f"NATS_URL {url} has no JetStream ({exc or type(exc).__name__})"
    finally:
        with contextlib.suppress(nats.errors.Error):
            await client.close()
    return None


async def _quiet(exc: Exception) -> None:
    """The client's own error reports: the probe's answer says what went wrong."""


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


async def _start(binary: str, folder: Path) -> DemoBackbone:
    """`nats-server -js` on a free loopback port, its store and log in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = folder / "nats-server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(folder / "store")],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"nats://127.0.0.1:{port}"
    backbone = DemoBackbone("nats-server", url, f"nats-server -js on {url} (started by the "
                            "demo)", process=process)
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT
    while not _listening(port) or await _probe(url) is not None:  # JetStream may start later
        if process.poll() is not None or asyncio.get_running_loop().time() > deadline:
            await backbone.close()
            tail = log.read_text(errors="replace")[-600:]
            raise UsageError(f"nats-server did not start on {url}: {tail.strip()}")
        await asyncio.sleep(0.05)
    return backbone
