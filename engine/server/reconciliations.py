"""Reconciliation results over the admin API, and their metric.

    GET  /api/v1/reconciliations?name=&limit=     results, newest first (with each report)
    POST /api/v1/reconciliations/{name}/run       run one now; answers its report

`syncline_reconciliation_mismatches{name,kind}` (engine.server.metrics) is each Reconciliation's
latest finished result, read from the store when /metrics is scraped (so it survives a restart
and agrees across replicas).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.server.admin import JSON, MAX_LIMIT, admin, state_of
from engine.server.auth import require
from engine.server.http import Problem
from engine.server.times import iso_fields


@admin
async def list_reconciliations(request: Request) -> Response:
    """Reconciliation results, newest first; `name` filters, `limit` caps (default 50)."""
    query = request.query_params
    try:
        limit = int(query.get("limit", "50"))
    except ValueError:
        raise Problem(400, "bad_request", "limit must be an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise Problem(400, "bad_request", f"limit must be between 1 and {MAX_LIMIT}")
    state = state_of(request)
    results = await state.runtime.store.list_reconciliations(query.get("name") or None, limit)
    defined = {
        name: {"schedule": None if r.schedule is None else r.schedule.cron, "owner": r.owner}
        for name, r in state.plan.reconciliations.items()
    }
    return JSON({"reconciliations": [_result(r) for r in results], "defined": defined})


@admin
async def run_reconciliation(request: Request) -> Response:
    """Run a Reconciliation of the active plan now and answer its report (the `act` right: it
    stores a result and may emit or park; the audit names the caller)."""
    principal = request.state.principal
    require(principal, "act", "running a reconciliation")
    name = request.path_params["name"]
    state = state_of(request)
    if name not in state.plan.reconciliations:
        raise Problem(404, "not_found", f"no reconciliation '{name}' in the active plan")
    report = await state.runtime.reconciler.run(name, actor=principal.name)
    return JSON(report_json(report))


def report_json(report: Any) -> Any:
    """A reconciliation's report with ISO 8601 times."""
    if not isinstance(report, dict):
        return report
    return iso_fields(report, "started_at", "finished_at")


def _result(row: dict[str, Any]) -> dict[str, Any]:
    return {**iso_fields(row, "started_at"), "report": report_json(row["report"])}


ROUTES = [
    Route("/api/v1/reconciliations", list_reconciliations, methods=["GET"]),
    Route("/api/v1/reconciliations/{name}/run", run_reconciliation, methods=["POST"]),
]
