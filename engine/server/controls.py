"""Controlled fallback in the admin API: pause and resume flows and Systems, and the metrics of
the switches and circuit breakers.

    POST /api/v1/flows/{name}/pause|resume      {"reason": "..."} (optional)
    POST /api/v1/systems/{name}/pause|resume

Operator actions (the `act` right; an operator limited to some flows may pause only those, and
no System), audited with the token's name as actor and the reason. 404 for a flow or System the
active plan does not have, 409 for pausing what is paused or resuming what is not (nothing
changes). The answer is `{kind, name, paused, reason, actor, at}`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import orjson
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.compiler.plan import Plan
from engine.errors import StateConflict, UsageError
from engine.runtime.gates import STATE_VALUES, Gates
from engine.server.admin import JSON, admin, state_of
from engine.server.auth import Principal, require, require_flow
from engine.server.http import Problem, read_body
from engine.server.times import iso_fields

KINDS = {"flows": "flow", "systems": "system"}
MAX_REASON = 1000


@admin
async def switch(request: Request) -> Response:
    """Pause or resume a flow or a System (`{"reason": ...}`), for every replica."""
    state = state_of(request)
    kind = KINDS[request.url.path.split("/")[3]]  # /api/v1/<kind>/...
    name = request.path_params["name"]
    action = request.path_params["action"]
    if action not in ("pause", "resume"):
        raise Problem(404, "not_found", f"unknown action '{action}' (pause or resume)")
    principal: Principal = request.state.principal
    require(principal, "act", f"{action} of a {kind}")
    if kind == "flow":  # an operator limited to some flows may pause only those
        require_flow(principal, name)
    elif principal.flows:  # a System serves every flow
        raise Problem(403, "forbidden", f"'{principal.name}' may act on some flows only, "
                                        f"not {action} a System")  # fmt: skip
    reason = await _reason(request, state.config.max_body)
    try:
        switched = await state.runtime.operations.switch(kind, name, action, reason, principal.name)
        return JSON(iso_fields(switched, "at"))
    except UsageError as exc:
        raise Problem(404, "not_found", str(exc)) from None
    except StateConflict as exc:
        raise Problem(409, "conflict", str(exc)) from None


async def _reason(request: Request, limit: int) -> str:
    body = await read_body(request.receive, limit, request.headers.get("content-length"))
    if not body.strip():
        return ""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Problem(400, "bad_request", "the body is not JSON") from None
    reason = document.get("reason", "") if isinstance(document, dict) else None
    if not isinstance(reason, str) or set(document) - {"reason"}:
        raise Problem(400, "bad_request", 'the body is {"reason": "text"}')
    return reason[:MAX_REASON]


class GatesCollector:
    """`syncline_paused{kind,name}` (1 while paused) and `syncline_circuit_state{system}`
    (0 closed, 1 open, 2 half-open) of every System with a circuit breaker, when scraped."""

    def __init__(self, gates: Gates, plan: Callable[[], Plan]) -> None:
        self._gates = gates
        self._plan = plan  # the active plan, whose Systems with a breaker are all listed

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        paused = GaugeMetricFamily(
            "syncline_paused", "Paused flows and Systems (1)", labels=["kind", "name"]
        )
        for kind, switches in (("flow", self._gates.flows), ("system", self._gates.systems)):
            for name in sorted(switches):
                paused.add_metric([kind, name], 1)
        yield paused
        circuits = GaugeMetricFamily(
            "syncline_circuit_state",
            "Circuit breaker state by System: 0 closed, 1 open, 2 half-open",
            labels=["system"],
        )
        systems = self._plan().systems.values()
        guarded = {s.name for s in systems if s.circuit_breaker is not None}
        for name in sorted(guarded | set(self._gates.circuits)):
            circuits.add_metric([name], STATE_VALUES[self._gates.circuit_state(name)])
        yield circuits


ROUTES = [Route(f"/api/v1/{kind}/{{name}}/{{action}}", switch, methods=["POST"]) for kind in KINDS]
