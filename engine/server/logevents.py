"""The server's structured log events (formatted by `engine.logs`):

    startup           info     version, environment, plan digest, flows, Systems, webhook paths,
                               store kind and location (never credentials), listen address,
                               tokens by role (names only), workers, watch, tracing
    shutdown          info
    webhook.accepted  debug    a delivery accepted: flow, run_id, correlation_id
    webhook.duplicate info     a delivery seen before: the existing run_id
    webhook.filtered  debug    the flow's filter left it out
    webhook.rejected  warning  status and reason code (never the body or a header value)
    events.*          as webhook.*, for POST /events
    reload.accepted   info     plan digest now serving (and the one before), trigger
    reload.rejected   error    the diagnostics; the old plan keeps serving

The runtime's events (run.*, call.*, operator.action) are in engine/runtime/logevents.py.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlsplit

from engine.server.state import ServerState
from engine.store.base import Acceptance, Store

log = logging.getLogger("syncline.server")
_DELIVERY_LEVELS = {
    "accepted": logging.DEBUG,
    "filtered": logging.DEBUG,
    "duplicate": logging.INFO,
}


def syncline_version() -> str:
    try:
        return version("syncline")
    except PackageNotFoundError:
        return "0+unknown"


def store_description(store: Store) -> dict[str, str]:
    """The store's kind and where it is: a SQLite path, or PostgreSQL's host, port and database
    (the URL's user, password and parameters are left out)."""
    url = getattr(store, "url", None)
    if isinstance(url, str):
        parts = urlsplit(url)
        where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"
        return {"kind": "postgresql", "location": where}
    path = getattr(store, "path", None)
    return {"kind": type(store).__name__.removesuffix("Store").lower(), "location": str(path)}


def startup(state: ServerState, listen: str | None) -> None:
    """The startup summary: what this server runs and where (never a secret or token)."""
    plan, routes = state.plan, state.routes()
    roles: dict[str, list[str]] = defaultdict(list)
    for _, principal in state.tokens.table.entries:
        roles[principal.role].append(principal.name)
    store = store_description(state.runtime.store)
    fields: dict[str, Any] = {
        "event": "startup",
        "version": syncline_version(),
        "project": plan.project,
        "environment": plan.environment,
        "plan_digest": plan.digest,
        "flows": len(plan.flows),
        "systems": len(plan.systems),
        "webhook_paths": sorted(routes.webhooks),
        "api_paths": sorted(routes.apis),
        "store": store,
        "listen": listen,
        "workers": state.config.workers,
        "watch": state.config.watch,
        "tokens": {role: sorted(names) for role, names in sorted(roles.items())},
        "tracing": state.runtime.tracing is not None,
    }
    log.info(
        "syncline %s serving plan %s: %d flows, %d systems, %s store at %s%s",
        fields["version"], plan.digest[:12], len(plan.flows), len(plan.systems), store["kind"],
        store["location"], f", listening on {listen}" if listen else "", extra=fields,
    )  # fmt: skip


def shutdown(state: ServerState) -> None:
    log.info("stopped; in-flight steps checkpointed",
             extra={"event": "shutdown", "plan_digest": state.plan.digest})  # fmt: skip


def delivery(
    kind: str, path: str, flow: str | None, acceptance: Acceptance, type: str | None = None
) -> None:
    """A delivery to a webhook path (`kind` webhook) or /events (a CloudEvent of `type`) was
    accepted, deduplicated or filtered."""
    status = acceptance.status
    level = _DELIVERY_LEVELS.get(status, logging.INFO)
    if log.isEnabledFor(level):
        fields = {"event": f"{kind}.{status}", "path": path, "flow": flow, "type": type,
                  "run_id": acceptance.run_id, "correlation_id": acceptance.correlation_id}
        log.log(level, "%s %s: run %s", path, status, acceptance.run_id, extra=fields)


def rejected(kind: str, path: str, flow: str | None, status: int, code: str, message: str) -> None:
    """A delivery refused: its status and reason code (what the sender was told), never its
    body or headers."""
    fields = {"event": f"{kind}.rejected", "path": path, "flow": flow, "status": status,
              "reason": code}  # fmt: skip
    log.warning("%s rejected %d %s: %s", path, status, code, message, extra=fields)


def reload_accepted(digest: str, previous: str, trigger: str) -> None:
    fields = {"event": "reload.accepted", "plan_digest": digest, "previous_digest": previous,
              "trigger": trigger}  # fmt: skip
    log.info("reloaded: plan %s is active", digest, extra=fields)


def reload_rejected(current: str, trigger: str, error: str) -> None:
    fields = {"event": "reload.rejected", "plan_digest": current, "trigger": trigger,
              "error": error}  # fmt: skip
    log.error("reload rejected; still serving plan %s:\n%s", current, error, extra=fields)
