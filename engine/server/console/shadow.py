"""The Shadow page: how often a candidate System answered as the primary did (phased ERP
coexistence), what `syncline shadow report` prints, plus the latest disagreements with their
runs.

    GET /console/shadow?flow=&runs=     the newest `runs` runs (default 200) of the flows whose
                                         steps shadow a call (or of `flow`)

The results live in the runs' lineage (engine/runtime/shadow.py), so the page reads the newest
runs' details; flows without a shadowed call are not read at all.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine.compiler.compiled import CallAction
from engine.compiler.plan import Plan
from engine.runtime.shadow import shadow_results, summarize
from engine.server.console.session import Session
from engine.server.console.web import Refused, page, render
from engine.server.views import run_detail
from engine.store.base import RunQuery

DEFAULT_RUNS, MAX_RUNS = 200, 2000
DISAGREEMENTS = 50  # latest mismatches and errors listed


def shadowed_flows(plan: Plan) -> list[str]:
    """The flows of `plan` with a step whose call is shadowed."""
    return sorted(
        name for name, flow in plan.flows.items()
        if any(isinstance(s.action, CallAction) and s.action.shadow is not None
               for s in flow.steps)
    )  # fmt: skip


def _looked_at(request: Request, plan: Plan) -> tuple[list[str], int]:
    query = request.query_params
    try:
        runs = int(query.get("runs") or DEFAULT_RUNS)
    except ValueError:
        message = "The number of runs to look at must be a whole number."
        raise Refused(400, "That search was not understood", message) from None
    if not 1 <= runs <= MAX_RUNS:
        raise Refused(400, "That search was not understood",
                      f"Look at between 1 and {MAX_RUNS} runs.")  # fmt: skip
    flow = query.get("flow") or None
    if flow is not None and flow not in plan.flows:
        raise Refused(404, "No such flow", f"The running definitions have no flow '{flow}'.")
    return ([flow] if flow else shadowed_flows(plan)), runs


@page
async def report(request: Request, session: Session) -> Response:
    state = request.app.state.syncline
    flows, budget = _looked_at(request, state.plan)
    runtime = state.runtime
    details: list[dict[str, Any]] = []
    for flow in flows:
        cursor, seen = None, 0
        while seen < budget:
            query = RunQuery(flow=flow, cursor=cursor, limit=min(100, budget - seen))
            found = await runtime.store.list_runs(query)
            cursor = query.next_cursor(found)
            seen += len(found)
            for run in found:
                detail = await runtime.run_detail(run.id)
                if detail is not None:
                    details.append(run_detail(detail))  # the admin API's JSON shape
            if cursor is None or not found:
                break
    groups = summarize(details)
    for g in groups:
        g["total"] = g["match"] + g["mismatch"] + g["error"]
        g["agree"] = round(g["match"] / g["total"] * 100) if g["total"] else 0
        g["paths"] = sorted(g["paths"].items(), key=lambda i: (-i[1], i[0]))
        g["errors"] = sorted(g["errors"].items(), key=lambda i: (-i[1], i[0]))[:5]
    disagreements = [
        {"run": d, "step": step, **found}
        for d in sorted(details, key=lambda d: d["created_at"], reverse=True)
        for step, found in shadow_results(d) if found["result"] != "match"
    ][:DISAGREEMENTS]  # fmt: skip
    return render(
        request, "shadow.html", session, groups=groups, disagreements=disagreements,
        flows=flows, runs=len(details), budget=budget, every=sorted(state.plan.flows),
        chosen=request.query_params.get("flow") or "",
    )  # fmt: skip
