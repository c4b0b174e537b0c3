"""The Alerts over the admin API.

    GET /api/v1/alerts?alert=&limit=     the active plan's Alerts (condition in words, the
                                         System and operation they notify through, repeat) and
                                         their notifications, newest first

`syncline_alerts_total{alert,state}` (engine.server.metrics) counts the notifications in the
store.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.server.admin import JSON, MAX_LIMIT, admin, state_of
from engine.server.http import Problem
from engine.server.times import iso_fields


@admin
async def list_alerts(request: Request) -> Response:
    """The Alerts and their notifications; `alert` filters, `limit` caps (default 50)."""
    query = request.query_params
    try:
        limit = int(query.get("limit", "50"))
    except ValueError:
        raise Problem(400, "bad_request", "limit must be an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise Problem(400, "bad_request", f"limit must be between 1 and {MAX_LIMIT}")
    state = state_of(request)
    name = query.get("alert") or None
    notifications = await state.runtime.alerting.log.recent(name, limit)
    defined = {
        alert.name: {
            "owner": alert.owner, "kind": alert.kind, "condition": alert.describe(),
            "notify": {"system": alert.notify.system.name, "operation": alert.notify.operation},
            "repeat": alert.repeat,
        }
        for alert in state.plan.alerts.values()
    }
    shown = [iso_fields(n.as_dict(), "created_at", "sent_at", "next_attempt_at")
             for n in notifications]
    return JSON({"alerts": defined, "notifications": shown})


ROUTES = [Route("/api/v1/alerts", list_alerts, methods=["GET"])]
