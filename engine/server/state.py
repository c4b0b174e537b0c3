"""What a running server holds: the runtime, its settings, the routes prepared for the active plan,
and the result of the last reload.

Routes (webhook path -> flow + signature verifier, API path -> flow) are prepared once per plan
digest, so a request only does dict lookups. They are always derived from `runtime.plan`, so the
flow a request sees and the plan the runtime records for its run are the same one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.compiler.compiled import CompiledFlow, CompiledSystem
from engine.compiler.interpolate import resolve_secrets, secret_refs
from engine.compiler.plan import Plan
from engine.errors import UsageError
from engine.runtime.calls import require_secrets
from engine.runtime.runtime import Runtime
from engine.server.config import ServerConfig
from engine.server.metrics import Metrics
from engine.server.signatures import Verifier, build_verifier
from engine.server.times import iso
from engine.server.tokens import Tokens


@dataclass(frozen=True)
class WebhookRoute:
    """A webhook path of the active plan, ready to verify and ingest."""

    flow: CompiledFlow
    verifier: Verifier
    source: str  # the sending System's name (the event's `source`)


@dataclass(frozen=True)
class Routes:
    """The dynamic routes of one plan."""

    digest: str
    webhooks: Mapping[str, WebhookRoute]
    apis: Mapping[str, CompiledFlow]


@dataclass(frozen=True)
class ReloadResult:
    """The outcome of the last (re)load, as /api/v1/status shows it."""

    ok: bool
    at: float
    digest: str | None  # the plan now serving
    error: str | None = None  # every diagnostic of a rejected compile, one per line
    trigger: str = "start"  # start | watch | api

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "at": iso(self.at),
            "digest": self.digest,
            "error": self.error,
            "trigger": self.trigger,
        }


def build_routes(plan: Plan, secrets: Mapping[str, str]) -> Routes:
    """Prepare verifiers for every webhook path of `plan`. Raises UsageError (naming secrets,
    never their values) when a webhook secret is missing or unusable."""
    verifiers: dict[tuple[str, int], Verifier] = {}
    webhooks = {}
    for path, flow in plan.webhooks.items():
        system = flow.trigger.system
        if system is None or system.webhooks is None:
            raise UsageError(f"flow '{flow.name}': webhook sender has no webhooks block")
        key = (system.name, system.version)
        if key not in verifiers:
            verifiers[key] = _verifier(system, secrets)
        webhooks[path] = WebhookRoute(flow, verifiers[key], system.name)
    return Routes(plan.digest, webhooks, dict(plan.apis))


def _verifier(system: CompiledSystem, secrets: Mapping[str, str]) -> Verifier:
    hooks = system.webhooks
    assert hooks is not None
    secret = hooks.secret
    if secret is not None:
        missing = [name for name in secret_refs(secret) if name not in secrets]
        if missing:
            raise UsageError(
                f"system '{system.name}': missing secret(s) {', '.join(missing)} "
                "(set SYNCLINE_SECRET_<NAME> or use --secrets FILE)"
            )
        secret = resolve_secrets(secret, secrets)
    try:
        return build_verifier(hooks.scheme, secret, hooks.tolerance, hooks.header)
    except UsageError as exc:
        raise UsageError(f"system '{system.name}' webhooks: {exc}") from None


@dataclass
class ServerState:
    """Everything the app's handlers share."""

    config: ServerConfig
    runtime: Runtime
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    metrics: Metrics = field(default_factory=Metrics)
    reload: ReloadResult | None = None
    pending: int = 0  # ingest requests in progress
    ready: bool = False  # the runtime started and no shutdown began
    draining: bool = False  # shutting down: refuse new ingest
    started_at: float = field(default_factory=time.time)
    tokens: Tokens = field(default=None, repr=False)  # type: ignore[assignment]  # from config
    _routes: Routes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.tokens is None:
            config = self.config
            self.tokens = Tokens(config.tokens_file, config.admin_token, config.ingest_token)
        self.metrics.watch_queue(self.runtime.queue_depth, lambda: self.pending)
        plan = self.runtime.plan
        self._routes = build_routes(plan, self.secrets)
        self.metrics.active_plan(plan.digest)
        if self.reload is None:
            self.reload = ReloadResult(True, time.time(), plan.digest)

    @property
    def plan(self) -> Plan:
        return self.runtime.plan

    def routes(self) -> Routes:
        """The routes of the runtime's current plan (prepared once per plan)."""
        routes = self._routes
        plan = self.runtime.plan
        if routes is None or routes.digest != plan.digest:
            routes = self._routes = build_routes(plan, self.secrets)
        return routes

    async def install(self, plan: Plan, trigger: str) -> None:
        """Make `plan` the active one for new runs, or raise (the old plan keeps serving)."""
        require_secrets(plan.secret_names, self.secrets)
        routes = build_routes(plan, self.secrets)  # may raise: nothing has changed yet
        await self.runtime.swap_plan(plan)
        self._routes = routes
        self.metrics.active_plan(plan.digest)
        self.record_reload(ReloadResult(True, time.time(), plan.digest, trigger=trigger))

    def record_reload(self, result: ReloadResult) -> None:
        self.reload = result
        self.metrics.reload(result.ok)
