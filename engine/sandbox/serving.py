"""Running sandbox systems: `ServerThread` (uvicorn on a real socket in a background thread)
and `run_standalone`, the ``python -m engine.sandbox.<system>`` entry point."""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvicorn

from engine.sandbox.common import JSON

if TYPE_CHECKING:
    from engine.sandbox.system import SandboxSystem

# --------------------------------------------------------------------------------------------
# running servers


class ServerThread:
    """An ASGI app served by uvicorn on a real socket, in a background thread.

    ``with ServerThread(app) as server: httpx.get(server.url + "/...")``. Port 0 picks a free port;
    the socket is bound before the thread starts, so `url` is known at once.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        on_stop: Callable[[], None] | None = None,
        name: str = "sandbox",
    ) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.on_stop = on_stop
        self.name = name
        self.port: int | None = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> str:
        if self._thread is not None:
            return self.url
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.requested_port))
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            lifespan="off",
            ws="none",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
            # as SaaS front ends do (60-75 s): a client's idle connection (httpx drops its own
            # after 5 s) is never closed by the server at the moment the client reuses it
            timeout_keep_alive=65,
        )
        self._server = server = uvicorn.Server(config)

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                self._error = exc

        self._thread = threading.Thread(target=run, name=f"sandbox-{self.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} server failed to start: {self._error!r}")
            time.sleep(0.005)
        return self.url

    def request_stop(self) -> None:
        """Ask the server to shut down without waiting (`stop` waits)."""
        if self._server is not None:
            self._server.should_exit = True

    def stop(self, timeout: float = 10.0) -> None:
        server, thread = self._server, self._thread
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout)
            if thread.is_alive():
                server.force_exit = True
                thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
        if self.on_stop is not None:
            on_stop, self.on_stop = self.on_stop, None
            on_stop()

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_standalone(
    factory: Callable[..., SandboxSystem], default_port: int, argv: list[str] | None = None
) -> None:
    """``python -m engine.sandbox.<system> [--host H] [--port P] [--webhook-url URL] ...``."""
    system_name = getattr(factory, "name", "sandbox")
    parser = argparse.ArgumentParser(
        prog=f"python -m engine.sandbox.{system_name}",
        description=f"Run the {system_name} sandbox system.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--webhook-url", default=os.environ.get("SANDBOX_WEBHOOK_URL"))
    parser.add_argument("--webhook-secret", default=os.environ.get("SANDBOX_WEBHOOK_SECRET"))
    parser.add_argument("--auth-token", default=os.environ.get("SANDBOX_AUTH_TOKEN"))
    parser.add_argument(
        "--rate-limit",
        metavar="PER_SECOND[:BURST]",
        help="token bucket, e.g. 20:40; 'off' disables",
    )
    args = parser.parse_args(argv)
    overrides: JSON = {}
    if args.webhook_url:
        overrides["webhook_url"] = args.webhook_url
    if args.webhook_secret:
        overrides["webhook_secret"] = args.webhook_secret
    if args.auth_token:
        overrides["auth_token"] = args.auth_token
    if args.rate_limit:
        overrides["rate_limit"] = parse_rate_limit(args.rate_limit)
    system = factory(**overrides)
    try:
        uvicorn.run(system.app, host=args.host, port=args.port, ws="none", lifespan="off")
    finally:
        system.close()


def parse_rate_limit(text: str) -> tuple[float, int] | None:
    if text.lower() in ("off", "none", "0"):
        return None
    per_second, _, burst = text.partition(":")
    rate = float(per_second)
    return (rate, int(burst) if burst else max(1, int(rate)))
