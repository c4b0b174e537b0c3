"""The running pieces of `syncline demo`: the five sandbox systems (in-process, free ports), the
event backbone (`engine.demo.backbone`: NATS JetStream, or in memory without a NATS server), the
Syncline server (`engine.server`, on uvicorn, in this event loop) with an embedded SQLite store in
a temporary folder, and the wiring between them (URLs, generated secrets, webhook targets)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets as random_secrets
import socket
from pathlib import Path
from typing import Any

import uvicorn

from engine.commands.reference import reference_root
from engine.demo.backbone import Choice, DemoBackbone, open_backbone
from engine.errors import UsageError
from engine.sandbox import Sandbox
from engine.server.auth import token_digest
from engine.server.config import ServerConfig
from engine.server.protocol import uvicorn_options
from engine.server.serve import build_server
from engine.server.state import ServerState

ENVIRONMENT = "demo"
HOOKS = {"crm": "/hooks/crm/opportunity", "billing": "/hooks/billing"}
# The day's on-call check evaluates the Alerts once the deals have closed (engine/demo/phases/
# alerts.py), so the message tells of every exception they left; the server's own loop only
# looks at its start.
ALERT_EVERY = 3600.0


def locate_project(project: Path | None = None) -> Path:
    """The project the demo runs: `project`, else the reference one shipped with Syncline."""
    if project is None:
        return reference_root()
    root = project.resolve()
    if not (root / "syncline.yaml").is_file():
        raise UsageError(f"{root} is not a Syncline project (it has no syncline.yaml)")
    return root


def make_secrets() -> dict[str, str]:
    """Fresh API tokens and webhook signing secrets, shared by the sandboxes and the server."""
    tokens = {
        f"{name}_TOKEN": random_secrets.token_urlsafe(24)
        for name in ("CRM", "ERP", "BILLING", "SUPPORT", "CHAT")
    }
    crm_key = base64.b64encode(random_secrets.token_bytes(32)).decode()
    return {
        **tokens,
        "ERP_CLOUD_CLIENT_ID": "syncline-demo",  # OAuth2 client credentials (erp-cloud)
        "ERP_CLOUD_CLIENT_SECRET": random_secrets.token_urlsafe(24),
        "CRM_WEBHOOK_SECRET": f"whsec_{crm_key}",
        "BILLING_WEBHOOK_SECRET": f"whsec_{random_secrets.token_hex(24)}",
    }


def sandbox_config(secrets: dict[str, str], erp_rate: float) -> dict[str, dict[str, Any]]:
    """Per-system sandbox settings: auth tokens (the cloud ERP: its OAuth client), webhook
    secrets, patient webhook retries."""
    webhooks = {"webhook_max_attempts": 10, "webhook_backoff": (0.1, 0.25, 0.5, 1.0, 2.0)}
    return {
        "crm": {
            "auth_token": secrets["CRM_TOKEN"],
            "webhook_secret": secrets["CRM_WEBHOOK_SECRET"],
            **webhooks,
        },
        "erp": {
            "auth_token": secrets["ERP_TOKEN"],
            "rate_limit": (erp_rate, int(erp_rate)),
            # the old ERP books an order in 200 ms: the cloud ERP's shadow answer arrives within
            # that time (a shadow never delays the step more than its primary took)
            "latency": {"/sales-orders": 0.2},
        },
        "billing": {
            "auth_token": secrets["BILLING_TOKEN"],
            "webhook_secret": secrets["BILLING_WEBHOOK_SECRET"],
            **webhooks,
        },
        "support": {"auth_token": secrets["SUPPORT_TOKEN"]},
        "chat": {"auth_token": secrets["CHAT_TOKEN"]},
        "erp_cloud": {
            "clients": {secrets["ERP_CLOUD_CLIENT_ID"]: secrets["ERP_CLOUD_CLIENT_SECRET"]},
            "rate_limit": (erp_rate, int(erp_rate)),
        },
    }


class Stack:
    """Start with `await stack.start()`, stop with `await stack.stop()` (always, in finally)."""

    def __init__(
        self, root: Path, workdir: Path, *, erp_rate: float = 200.0, concurrency: int = 32,
        backbone: Choice = "auto",
    ) -> None:
        self.root, self.workdir = root, workdir
        self.erp_rate, self.concurrency = erp_rate, concurrency
        self.backbone_choice = backbone
        self.backbone: DemoBackbone | None = None
        self.secrets = make_secrets()
        # Named console/admin API tokens: the driver acts as `demo-operator`; `you` is the
        # admin token `syncline demo --serve` prints for a person.
        self.tokens = {name: random_secrets.token_urlsafe(24) for name in ("demo-operator", "you")}
        self.sandbox: Any = None
        self.state: ServerState | None = None
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def runtime(self) -> Any:
        assert self.state is not None
        return self.state.runtime

    async def start(self) -> None:
        self.sandbox = Sandbox(**sandbox_config(self.secrets, self.erp_rate))
        await asyncio.to_thread(self.sandbox.start)
        urls = self.sandbox.urls
        environ = {f"{name.upper().replace('-', '_')}_URL": url for name, url in urls.items()}
        self.backbone = await open_backbone(self.backbone_choice, self.workdir, os.environ)
        environ["NATS_URL"] = self.backbone.url
        tokens_file = self.workdir / "tokens.yaml"
        digest = {name: token_digest(token).hex() for name, token in self.tokens.items()}
        tokens_file.write_text(
            f"- {{name: demo-operator, role: operator, sha256: {digest['demo-operator']}}}\n"
            f"- {{name: you, role: admin, sha256: {digest['you']}}}\n"
        )
        config = ServerConfig(
            project=self.root,
            environment=ENVIRONMENT,
            watch=False,
            shutdown_grace=5.0,
            tokens_file=tokens_file,
            alert_every=ALERT_EVERY,
        )
        app, self.state = build_server(
            config,
            environ=environ,
            secrets=self.secrets,
            database=str(self.workdir / "syncline.db"),
            concurrency=self.concurrency,
            backbone=self.backbone.memory,  # None: the runtime's own NATS connections
        )
        await self._serve(app)
        for name, path in HOOKS.items():
            self.sandbox.systems[name].configure_webhook(url=self.url + path)

    async def _serve(self, app: Any) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            app,
            lifespan="on",
            log_level="warning",
            access_log=False,
            log_config=None,
            server_header=False,
            **uvicorn_options(),
        )
        self._server = server = uvicorn.Server(config)
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise UsageError("the Syncline server stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.sandbox is not None:
            await asyncio.to_thread(self.sandbox.stop)
        if self.backbone is not None:
            await self.backbone.close()

    async def webhooks_idle(self, timeout: float) -> bool:
        """Wait until every sandbox has delivered what it queued; False on timeout."""
        systems = self.sandbox.systems.values()
        done = await asyncio.gather(*(asyncio.to_thread(s.wait_webhooks, timeout) for s in systems))
        return all(done)
