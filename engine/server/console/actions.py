"""The console's forms that change something: a run's actions, bulk actions on a group of
exceptions, signing out. Each checks, before anything changes: the CSRF token, the role, the
operator's flows, and the input (corrected data must be JSON)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from engine.errors import StateConflict, StoreError, UsageError
from engine.runtime.actions import ACTIONS, perform
from engine.runtime.runtime import MISSING
from engine.server.console.pages import run_page
from engine.server.console.session import COOKIE, Session
from engine.server.console.web import HEADERS, Refused, check_csrf, field, form, page, render

MAX_REASON = 2000
MAX_BULK = 500


def _require_act(session: Session, flow: str | None = None) -> None:
    principal = session.principal
    if not principal.can("act"):
        raise Refused(
            403,
            "You may not do that",
            f"'{principal.name}' is a {principal.role}: viewers can look but not change runs.",
        )
    if flow is not None and not principal.may_act_on(flow):
        raise Refused(
            403,
            "You may not do that",
            f"'{principal.name}' may act only on the flows {', '.join(principal.flows)}; "
            f"this run belongs to '{flow}'.",
        )


def _reason(fields: dict[str, list[str]]) -> str | None:
    reason = field(fields, "reason").strip()
    if len(reason) > MAX_REASON:
        raise Refused(400, "The reason is too long", f"Keep it under {MAX_REASON} characters.")
    return reason or None


@page
async def run_action(request: Request, session: Session) -> Response:
    run_id, action = request.path_params["run_id"], request.path_params["action"]
    fields = await form(request)
    check_csrf(request, session, fields)
    if action not in ACTIONS:
        raise Refused(404, "Not found", f"There is no action '{action}'.")
    state = request.app.state.syncline
    record = await state.runtime.store.get_run(run_id)
    if record is None:
        raise Refused(404, "No such run", f"There is no run with the id '{run_id}'.")
    _require_act(session, record.flow)
    reason = _reason(fields)
    data: Any = MISSING
    text = field(fields, "data").strip()
    if action == "resume" and text:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            return await run_page(
                request, session, run_id, 400,
                error=f"The corrected data is not valid JSON (line {exc.lineno}, column "
                      f"{exc.colno}: {exc.msg}). Nothing was changed.",
                data_text=text, reason_text=reason or "",
            )  # fmt: skip
    try:
        detail = await perform(state.runtime, run_id, action, session.principal.name, data, reason)
    except (UsageError, StateConflict) as exc:
        return await run_page(
            request, session, run_id, 409, error=f"{exc}. Nothing was changed.",
            data_text=text, reason_text=reason or "",
        )  # fmt: skip
    target = detail.run.id
    return RedirectResponse(
        f"/console/runs/{quote(target, safe='')}?done={action}", status_code=303, headers=HEADERS
    )


@page
async def bulk(request: Request, session: Session) -> Response:
    """Resume or retry every run of an exceptions group, for one reason."""
    fields = await form(request)
    check_csrf(request, session, fields)
    _require_act(session)
    action = field(fields, "action")
    if action not in ("resume", "retry"):
        raise Refused(400, "That request was not understood", "Bulk actions are resume or retry.")
    run_ids = fields.get("run", [])[:MAX_BULK]
    if not run_ids:
        raise Refused(400, "Nothing selected", "The group had no runs.")
    reason = _reason(fields)
    state = request.app.state.syncline
    records = [await state.runtime.store.get_run(r) for r in run_ids]
    for run_id, record in zip(run_ids, records, strict=True):
        if record is None:
            raise Refused(404, "No such run", f"There is no run with the id '{run_id}'.")
        _require_act(session, record.flow)  # all or nothing: checked before any changes
    outcomes = []
    for run_id in run_ids:
        try:
            await perform(state.runtime, run_id, action, session.principal.name, MISSING, reason)
            outcomes.append({"run": run_id, "ok": True, "message": "queued again"})
        except (UsageError, StoreError) as exc:
            outcomes.append({"run": run_id, "ok": False, "message": str(exc)})
    return render(request, "bulk.html", session, action=action, outcomes=outcomes)


@page
async def signout(request: Request, session: Session) -> Response:
    check_csrf(request, session, await form(request))
    response = RedirectResponse("/console/signin", status_code=303, headers=HEADERS)
    response.delete_cookie(COOKIE, path="/console")
    return response
