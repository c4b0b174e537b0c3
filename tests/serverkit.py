"""Helpers of the server tests: a project on disk, and `syncline serve`'s app running on a real
uvicorn socket in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from engine.server.config import ServerConfig
from engine.server.protocol import uvicorn_options
from engine.server.serve import build_server
from engine.server.state import ServerState
from engine.store import Store
from engine.tls import tls_context
from tests.projectkit import write_files

TLS = tls_context()  # one CA load for the module, not one per client (50-80 ms each)


SECRETS = {
    "CRM_HOOK": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "STRIPE_HOOK": "whsec_stripe_test_secret_0123456789",
    "GH_HOOK": "It's a Secret to Everybody",
    "SHOP_HOOK": "shpss_shopify_secret_abcdef",
    "HMAC_HOOK": "generic-hmac-secret",
}

PROJECT = """\
apiVersion: syncline/v1
kind: Project
metadata: {name: server-test, owner: qa}
spec:
  paths: [flows]
  environments:
    dev:
      vars: {TARGET_URL: "http://127.0.0.1:9"}
"""

SYSTEMS = """\
apiVersion: syncline/v1
kind: System
metadata: {name: crm, owner: qa}
spec:
  baseUrl: ${env.TARGET_URL}
  webhooks: {scheme: standard-webhooks, secret: "${secret.CRM_HOOK}", tolerance: 5m}
---
apiVersion: syncline/v1
kind: System
metadata: {name: billing, owner: qa}
spec:
  baseUrl: ${env.TARGET_URL}
  webhooks: {scheme: stripe, secret: "${secret.STRIPE_HOOK}", tolerance: 5m}
---
apiVersion: syncline/v1
kind: System
metadata: {name: gh, owner: qa}
spec:
  baseUrl: ${env.TARGET_URL}
  webhooks: {scheme: github, secret: "${secret.GH_HOOK}"}
---
apiVersion: syncline/v1
kind: System
metadata: {name: shop, owner: qa}
spec:
  baseUrl: ${env.TARGET_URL}
  webhooks: {scheme: shopify, secret: "${secret.SHOP_HOOK}"}
---
apiVersion: syncline/v1
kind: System
metadata: {name: generic, owner: qa}
spec:
  baseUrl: ${env.TARGET_URL}
  webhooks: {scheme: hmac-sha256, secret: "${secret.HMAC_HOOK}", header: X-Signature}
"""


def webhook_flow(
    name: str, path: str, system: str, *, version: int = 1, key: str | None = None, extra: str = ""
) -> str:
    key_line = f"  idempotencyKey: {key}\n" if key else ""
    return (
        "apiVersion: syncline/v1\nkind: Flow\n"
        f"metadata: {{name: {name}, version: {version}, owner: qa}}\n"
        "spec:\n"
        f"  trigger: {{webhook: {{path: {path}, system: {system}}}}}\n"
        "  filter: \"data.kind != 'ignore'\"\n"
        f"{key_line}{extra}"
        "  steps:\n"
        f'    - id: tag\n      set: {{version: "`{version}`", id: data.id}}\n'
    )


FLOWS = "---\n".join(
    [
        webhook_flow("crm-order", "/hooks/crm", "crm", key="data.id"),
        webhook_flow("stripe-payment", "/hooks/stripe", "billing"),
        webhook_flow("gh-push", "/hooks/github", "gh"),
        webhook_flow("shop-order", "/hooks/shop", "shop"),
        webhook_flow("generic-hook", "/hooks/generic", "generic"),
    ]
)

EVENT_AND_API_FLOWS = """\
apiVersion: syncline/v1
kind: Flow
metadata: {name: on-activated, owner: qa}
spec:
  trigger: {event: com.acme.order.activated}
  steps:
    - id: note
      set: {order: data.order}
---
apiVersion: syncline/v1
kind: Flow
metadata: {name: quote, owner: qa}
spec:
  trigger: {api: {path: /api/quote, timeout: 5s}}
  steps:
    - id: check
      validate:
        input: data
        rules:
          - {assert: "data.amount > `0`", code: BAD_AMOUNT, message: amount must be positive}
    - id: total
      needs: [check]
      set: {amount: data.amount, currency: "'EUR'"}
  output: steps.total
"""


def write_project(root: Path, files: Mapping[str, str] | None = None) -> Path:
    """A project with every webhook scheme, an event flow and a process API (plus `files`)."""
    files = {
        "syncline.yaml": PROJECT,
        "flows/systems.yaml": SYSTEMS,
        "flows/hooks.yaml": FLOWS,
        "flows/more.yaml": EVENT_AND_API_FLOWS,
        **(files or {}),
    }
    return write_files(root, files)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """`build_server` + uvicorn on 127.0.0.1 in a thread; use as a context manager."""

    def __init__(
        self,
        project: Path,
        *,
        environ: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        store: Store | None = None,
        database: str | None = None,
        **config: Any,
    ) -> None:
        config.setdefault("watch", False)
        self.config = ServerConfig.from_environ(environ or {}, project=project, **config)
        self.app, self.state = build_server(
            self.config,
            environ=environ or {},
            secrets=dict(SECRETS if secrets is None else secrets),
            store=store,
            database=database,
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=self.port,
                lifespan="on",
                access_log=False,
                log_level="warning",
                timeout_graceful_shutdown=5,
                **uvicorn_options(self.config.request_timeout),
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def runtime(self) -> Any:
        return self.state.runtime

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(verify=TLS, base_url=self.url, timeout=20, **kwargs)


def state_of(server: LiveServer) -> ServerState:
    return server.state
