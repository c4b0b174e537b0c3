"""The console's pages (GET): Overview, Exceptions, Runs, a Run, Audit."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine.errors import UsageError
from engine.server.audit import entries, query_from
from engine.server.console.session import Session
from engine.server.console.views import (
    STATE_WORDS,
    allowed_actions,
    bars,
    business_rows,
    group_exceptions,
)
from engine.server.console.web import Refused, page, render
from engine.server.http import Problem
from engine.server.telemetry import business_values
from engine.server.views import run_detail, run_summary
from engine.store.audit import AuditQuery

EXCEPTION_STATES = ("parked", "dead-lettered")
PAGE = 50
NOTICES = {  # what ?done= says after an action (fixed words: nothing from the URL is shown)
    "resume": "Resumed: the run is queued again.",
    "retry": "Retried: the run is queued again.",
    "cancel": "Cancelled: completed steps are being undone.",
    "replay": "Replayed: this is the new run.",
}


@page
async def overview(request: Request, session: Session) -> Response:
    state = request.app.state.syncline
    counts = await state.runtime.store.count_runs()
    by_state: dict[str, int] = {}
    for (_, run_state), n in counts.items():
        by_state[run_state] = by_state.get(run_state, 0) + n
    return render(
        request,
        "overview.html",
        session,
        bars=bars(counts),
        by_state=[(s, by_state[s]) for s in STATE_WORDS if by_state.get(s)],
        exceptions=sum(by_state.get(s, 0) for s in EXCEPTION_STATES),
        plan=state.plan,
        reload=state.reload,
        tokens=state.tokens.status,
        queue=state.runtime.queue_depth(),
        business=business_rows(await business_values(state)),
    )


@page
async def exceptions(request: Request, session: Session) -> Response:
    state = request.app.state.syncline
    pages = await asyncio.gather(
        *(state.runtime.list_runs(state=s, limit=500) for s in EXCEPTION_STATES)
    )
    runs = [run_summary(run) for found, _ in pages for run in found]
    owners = {name: flow.owner for name, flow in state.plan.flows.items()}
    groups = group_exceptions(runs, owners)
    for group in groups:
        group["allowed"] = all(session.principal.may_act_on(r["flow"]) for r in group["runs"])
    return render(request, "exceptions.html", session, groups=groups)


@page
async def runs(request: Request, session: Session) -> Response:
    state = request.app.state.syncline
    query = request.query_params
    filters = {k: query.get(k) or None for k in ("flow", "state", "key", "correlation_id")}
    try:
        found, following = await state.runtime.list_runs(
            **filters, cursor=query.get("cursor") or None, limit=PAGE
        )
    except UsageError as exc:
        raise Refused(400, "That search was not understood", str(exc)) from None
    return render(
        request,
        "runs.html",
        session,
        runs=[run_summary(run) for run in found],
        following=following,
        filters={k: v or "" for k, v in filters.items()},
        flows=sorted(state.plan.flows),
        states=list(STATE_WORDS),
    )


async def run_page(
    request: Request, session: Session, run_id: str, status: int = 200, **extra: Any
) -> Response:
    """A run's page (also re-rendered, with `error`, when an action on it was refused)."""
    state = request.app.state.syncline
    found = await state.runtime.run_detail(run_id)
    if found is None:
        raise Refused(404, "No such run", f"There is no run with the id '{run_id}'.")
    detail = run_detail(found)
    trail, _ = await entries(state.runtime.store, AuditQuery(run_id=run_id, limit=100))
    may_act = session.principal.may_act_on(detail["flow"])
    actions = allowed_actions(detail["state"]) if may_act else []
    if "replay" in actions and detail["flow"] not in state.plan.flows:
        actions.remove("replay")
    extra.setdefault("error", "")
    extra.setdefault("data_text", "")
    extra.setdefault("reason_text", "")
    return render(
        request,
        "run.html",
        session,
        status,
        run=detail,
        trail=trail,
        actions=actions,
        notice=NOTICES.get(request.query_params.get("done", ""), ""),
        owner=getattr(state.plan.flows.get(detail["flow"]), "owner", None),
        **extra,
    )


@page
async def run(request: Request, session: Session) -> Response:
    return await run_page(request, session, request.path_params["run_id"])


@page
async def audit(request: Request, session: Session) -> Response:
    state = request.app.state.syncline
    query = request.query_params
    try:
        found, following = await entries(state.runtime.store, query_from(query))
    except Problem as problem:
        raise Refused(400, "That search was not understood", problem.message) from None
    filters = {k: query.get(k, "") for k in ("run", "actor", "action", "since")}
    return render(request, "audit.html", session, trail=found, following=following, filters=filters)
