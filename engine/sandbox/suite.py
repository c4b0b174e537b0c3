"""`Sandbox`: all the sandbox systems started and stopped together."""

from __future__ import annotations

from typing import Any

from engine.sandbox.billing import BillingConfig, BillingSandbox
from engine.sandbox.chat import ChatSandbox
from engine.sandbox.crm import CrmConfig, CrmSandbox
from engine.sandbox.erp import ErpConfig, ErpSandbox
from engine.sandbox.erp_cloud import ErpCloudConfig, ErpCloudSandbox
from engine.sandbox.serving import ServerThread
from engine.sandbox.support import SupportSandbox
from engine.sandbox.system import SandboxConfig, SandboxSystem

DEFAULT_PORTS = {
    "crm": 9101, "erp": 9102, "billing": 9103, "support": 9104, "chat": 9105, "erp-cloud": 9106,
}
"""Ports of ``python -m engine.sandbox`` (the in-process `Sandbox` takes free ones)."""


class Sandbox:
    """All the sandbox systems, each on its own socket, started and stopped together.

    ``Sandbox(erp={"rate_limit": None}, crm={"webhook_url": url}, ports={"erp": 9102})``: each
    system takes a config object or a dict of config overrides. After `start` (or ``with``),
    `urls` maps the system names to base URLs and `crm`, `erp`, `billing`, `support`, `chat`,
    `erp_cloud` are the system objects (for `snapshot`, `reset`, `configure_webhook`, ...).
    """

    NAMES = ("crm", "erp", "billing", "support", "chat", "erp-cloud")

    def __init__(
        self,
        *,
        crm: CrmConfig | dict[str, Any] | None = None,
        erp: ErpConfig | dict[str, Any] | None = None,
        billing: BillingConfig | dict[str, Any] | None = None,
        support: SandboxConfig | dict[str, Any] | None = None,
        chat: SandboxConfig | dict[str, Any] | None = None,
        erp_cloud: ErpCloudConfig | dict[str, Any] | None = None,
        host: str = "127.0.0.1",
        ports: dict[str, int] | None = None,
    ) -> None:
        self.host = host
        self.ports = {name: 0 for name in self.NAMES} | (ports or {})
        self.crm = _build(CrmSandbox, crm)
        self.erp = _build(ErpSandbox, erp)
        self.billing = _build(BillingSandbox, billing)
        self.support = _build(SupportSandbox, support)
        self.chat = _build(ChatSandbox, chat)
        self.erp_cloud = _build(ErpCloudSandbox, erp_cloud)
        self.servers: dict[str, ServerThread] = {}

    @property
    def systems(self) -> dict[str, SandboxSystem]:
        return {name: getattr(self, name.replace("-", "_")) for name in self.NAMES}

    @property
    def urls(self) -> dict[str, str]:
        return {name: server.url for name, server in self.servers.items()}

    def start(self) -> dict[str, str]:
        try:
            for name, system in self.systems.items():
                if name not in self.servers:
                    self.servers[name] = system.serve(self.host, self.ports[name])
        except BaseException:
            self.stop()
            raise
        return self.urls

    def stop(self) -> None:
        servers, self.servers = self.servers, {}
        for server in servers.values():
            server.request_stop()  # shut down in parallel
        for server in servers.values():
            server.stop()
        for system in self.systems.values():
            system.close()

    def reset(self) -> None:
        for system in self.systems.values():
            system.reset()

    def snapshot(self) -> dict[str, Any]:
        return {name: system.snapshot() for name, system in self.systems.items()}

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _build(cls: type[SandboxSystem], config: Any) -> Any:
    if isinstance(config, dict):
        return cls(**config)
    return cls(config)
