"""Pause and resume flows and Systems from the console (controlled fallback, SPEC sections 5-6).

    GET  /console/flows/{name}/pause|resume      what pausing does, and a form with a Reason
    POST /console/flows/{name}/pause|resume      do it (CSRF, operator, reason required)
    GET|POST /console/systems/{name}/pause|resume

The same switch as `POST /api/v1/flows|systems/{name}/pause|resume`: shared by every replica,
audited with the signed-in token's name and the reason. An operator limited to some flows may
switch only those flows, and no System (a System serves every flow).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from engine.errors import StateConflict, UsageError
from engine.server.console.session import Session
from engine.server.console.web import HEADERS, Refused, check_csrf, field, form, page, render

MAX_REASON = 1000  # as the admin API keeps
KINDS = {"flows": "flow", "systems": "system"}


def _target(request: Request, session: Session) -> tuple[str, str, str]:
    """(kind, name, action) of the request, checked: 404 for an unknown action or name, 403
    for a caller who may not switch it."""
    kind = KINDS[request.url.path.split("/")[2]]  # /console/<kind>s/...
    name, action = request.path_params["name"], request.path_params["action"]
    if action not in ("pause", "resume"):
        raise Refused(404, "Not found", f"There is no action '{action}' (pause or resume).")
    state = request.app.state.syncline
    gates = state.runtime.gates
    if kind == "flow":
        known = set(state.plan.flows) | set(gates.flows)
    else:
        known = {s.name for s in state.plan.systems.values()} | set(gates.systems)
    if name not in known:
        raise Refused(404, f"No such {kind}", f"The running definitions have no {kind} '{name}'.")
    principal = session.principal
    if not principal.can("act"):
        raise Refused(403, "You may not do that",
                      f"'{principal.name}' is a {principal.role}: viewers can look but not "
                      f"{action} a {kind}.")  # fmt: skip
    if kind == "flow" and not principal.may_act_on(name):
        raise Refused(403, "You may not do that",
                      f"'{principal.name}' may act only on the flows "
                      f"{', '.join(principal.flows)}.")  # fmt: skip
    if kind == "system" and principal.flows:
        raise Refused(403, "You may not do that",
                      f"'{principal.name}' may act on some flows only; a System serves every "
                      "flow, so only an operator of all flows may pause or resume it.")  # fmt: skip
    return kind, name, action


def _form(
    request: Request, session: Session, kind: str, name: str, action: str,
    status: int = 200, error: str = "", reason: str = "",
) -> Response:  # fmt: skip
    gates = request.app.state.syncline.runtime.gates
    current = (gates.flows if kind == "flow" else gates.systems).get(name)
    return render(request, "switch.html", session, status, kind=kind, name=name, action=action,
                  current=current, error=error, reason_text=reason)  # fmt: skip


@page
async def switch(request: Request, session: Session) -> Response:
    kind, name, action = _target(request, session)
    if request.method == "GET":
        return _form(request, session, kind, name, action)
    fields = await form(request)
    check_csrf(request, session, fields)
    reason = field(fields, "reason").strip()
    if not reason:
        return _form(request, session, kind, name, action, 400,
                     "Say why in the Reason field: it is kept in the audit trail. "
                     "Nothing was changed.")  # fmt: skip
    if len(reason) > MAX_REASON:
        return _form(request, session, kind, name, action, 400,
                     f"Keep the reason under {MAX_REASON} characters. Nothing was changed.",
                     reason[:MAX_REASON])  # fmt: skip
    runtime = request.app.state.syncline.runtime
    try:
        await runtime.operations.switch(kind, name, action, reason, session.principal.name)
    except UsageError as exc:
        raise Refused(404, f"No such {kind}", str(exc)) from None
    except StateConflict as exc:
        return _form(request, session, kind, name, action, 409,
                     f"{exc}. Nothing was changed.", reason)  # fmt: skip
    target = f"/console?done={action}-{kind}#{kind}s"
    return RedirectResponse(target, status_code=303, headers=HEADERS)
