"""`SandboxSystem`, the base of every sandbox system: state under one lock, routes, idempotency,
rate limits, faults, the request log and the /sandbox control endpoints."""

from __future__ import annotations

import collections
import copy
import json
import threading
from dataclasses import dataclass, field, fields
from typing import Any

from engine.sandbox.common import (
    JSON,
    Handler,
    IdGenerator,
    dumps,
)
from engine.sandbox.conventions import ApiConventions
from engine.sandbox.limits import Fault, TokenBucket
from engine.sandbox.operating import Operating
from engine.sandbox.pipeline import RequestPipeline
from engine.sandbox.serving import ServerThread
from engine.sandbox.webhooks import WebhookSender

# --------------------------------------------------------------------------------------------
# the base system


@dataclass
class SandboxConfig:
    """Configuration every sandbox system takes (subclasses add their own fields)."""

    rate_limit: tuple[float, int] | None = None
    """``(per_second, burst)`` of the token bucket, or None for no limit."""
    webhook_url: str | None = None
    """Where outbound webhooks go (None: they are recorded as ``no_target``)."""
    webhook_secret: str | None = None
    """Signing secret of outbound webhooks (None: the system's documented default)."""
    webhook_max_attempts: int = 4
    webhook_backoff: tuple[float, ...] = (0.05, 0.25, 1.0)
    webhook_timeout: float = 5.0
    auth_token: str | None = None
    """When set, every non-/sandbox request needs ``Authorization: Bearer <token>``."""
    strict_idempotency: bool = True
    latency: dict[str, float] = field(default_factory=dict)
    """Seconds added to every answer under a path prefix (a slower system), e.g.
    ``{"/sales-orders": 0.05}``."""
    request_log_size: int = 5000


class SandboxSystem(Operating, ApiConventions):
    """Base of the sandbox systems: state, lock and routes; what operators and tests change (rate
    limit, faults, webhook target) comes from `Operating`. Its app is built by
    `RequestPipeline`, with the control endpoints of `ControlApi`."""

    name = "sandbox"
    config_class: type[SandboxConfig] = SandboxConfig
    webhook_scheme: str | None = None
    default_webhook_secret: str = ""
    collections: tuple[str, ...] = ()

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any) -> None:
        config = config or self.config_class()
        if overrides:
            names = {f.name for f in fields(config)}
            unknown = sorted(set(overrides) - names)
            if unknown:
                raise TypeError(f"unknown {self.name} sandbox config {unknown}")
            config = copy.copy(config)
            for key, value in overrides.items():
                setattr(config, key, value)
        self.config = config
        self.lock = threading.RLock()
        self.ids = IdGenerator(self.name)
        self.data: dict[str, dict[str, JSON]] = {}
        self.idempotency: dict[str, JSON] = {}
        self.faults: list[Fault] = []
        self.fault_hits: dict[str, int] = {}
        """Requests each fault (by id) has affected, kept after the fault is spent or cleared."""
        self.requests: collections.deque[JSON] = collections.deque(maxlen=config.request_log_size)
        self.counters: collections.Counter[str] = collections.Counter()
        self.bucket: TokenBucket | None = (
            TokenBucket(*config.rate_limit) if config.rate_limit else None
        )
        self.webhooks: WebhookSender | None = None
        if self.webhook_scheme:
            self.webhooks = WebhookSender(
                scheme=self.webhook_scheme,
                secret=config.webhook_secret or self.default_webhook_secret,
                url=config.webhook_url,
                max_attempts=config.webhook_max_attempts,
                backoff=config.webhook_backoff,
                timeout=config.webhook_timeout,
                user_agent=f"Syncline-Sandbox-{self.name.upper()}/1.0",
            )
        self._fault_seq = 0
        self._reset_data()
        self.app = RequestPipeline(self).build()

    # -- to be provided by subclasses

    def routes(self) -> list[tuple[str, str, Handler]]:
        """The system's API: ``(method, path, handler)``."""
        return []

    def sandbox_routes(self) -> list[tuple[str, str, Handler]]:
        """Extra ``/sandbox/...`` control endpoints of the system."""
        return []

    def reset_master_data(self) -> None:
        """Restore configured master data (called on construction and reset)."""

    def master_data(self) -> JSON | None:
        return None

    # -- state

    def _reset_data(self) -> None:
        self.data = {name: {} for name in self.collections}
        self.ids.reset()
        self.reset_master_data()

    def reset(self) -> None:
        """Forget everything: data, idempotency keys, faults, logs, webhook deliveries."""
        with self.lock:
            self._reset_data()
            self.idempotency.clear()
            self.faults.clear()
            self.fault_hits.clear()
            self.requests.clear()
            self.counters.clear()
            if self.bucket:
                self.bucket = TokenBucket(self.bucket.per_second, self.bucket.burst)
            if self.webhooks:
                self.webhooks.clear()

    def records(self, collection: str) -> list[JSON]:
        """A copy of one collection's records, in creation order."""
        with self.lock:
            return copy.deepcopy(list(self.data[collection].values()))

    def get(self, collection: str, ident: str) -> JSON | None:
        with self.lock:
            record = self.data[collection].get(ident)
            return copy.deepcopy(record) if record is not None else None

    def snapshot(self) -> JSON:
        """Everything, as ``GET /sandbox/state`` returns it."""
        with self.lock:
            state: JSON = {
                "system": self.name,
                "data": {name: list(items.values()) for name, items in self.data.items()},
                "idempotency": {
                    key: {k: v for k, v in entry.items() if k not in ("body", "headers")}
                    for key, entry in self.idempotency.items()
                },
                "faults": [f.describe() for f in self.faults],
                "fault_hits": dict(self.fault_hits),
                "rate_limit": self.bucket.describe() if self.bucket else None,
                "counters": dict(self.counters),
            }
            master = self.master_data()
            if master is not None:
                state["master_data"] = master
            state = json.loads(dumps(state))
        if self.webhooks:
            state["webhooks"] = self.webhooks.snapshot()
        return state

    def idempotency_writes(self, key: str) -> int:
        with self.lock:
            entry = self.idempotency.get(key)
            return entry["writes"] if entry else 0

    def close(self) -> None:
        """Release background resources (the webhook thread)."""
        if self.webhooks:
            self.webhooks.close()

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> ServerThread:
        """Start this system on a real socket in a background thread; returns the running server.

        Stopping the server also closes the system (its webhook thread).
        """
        server = ServerThread(self.app, host=host, port=port, on_stop=self.close, name=self.name)
        server.start()
        return server
