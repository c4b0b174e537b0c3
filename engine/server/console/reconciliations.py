"""The Reconciliations pages: what each Reconciliation last found, one result in detail (items
missing on either side, field mismatches, duplicates), and running one now.

    GET  /console/reconciliations                  each Reconciliation's latest result, history
    GET  /console/reconciliations/{name}?tick=     a result (default: the newest) and its history
    POST /console/reconciliations/{name}/run       run it now (operator; CSRF; optional reason)

Results come from the store (every replica's, surviving restarts), as
`GET /api/v1/reconciliations` answers them. A run on demand is audited by the store's
Reconciler with the signed-in token's name and the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from engine.runtime.reconciling import KINDS
from engine.runtime.schedules import BUSY
from engine.server.console.session import Session
from engine.server.console.web import HEADERS, Refused, check_csrf, field, form, page, render

HISTORY = 50  # results listed
SHOWN = 200  # mismatches listed per kind on a result's page (the report counts them all)
MAX_REASON = 2000
# Each mismatch kind in words ({left}/{right}: the Systems of each side).
KIND_WORDS = {
    "missing-left": "Only in {right}: missing in {left}",
    "missing-right": "Only in {left}: missing in {right}",
    "field": "Fields that differ",
    "duplicate-left": "Keys {left} lists twice",
    "duplicate-right": "Keys {right} lists twice",
}
# The short form of the same findings, for a result's one-line summary ("2 only in billing").
COUNT_WORDS = {
    "missing-left": "only in {right}",
    "missing-right": "only in {left}",
    "field": "with fields that differ",
    "duplicate-left": "listed twice by {left}",
    "duplicate-right": "listed twice by {right}",
}
STATE_BADGES = {
    "ok": ("Agree", "ok"),
    "mismatch": ("Mismatches", "bad"),
    "parked": ("Mismatches: parked for a person", "bad"),
    "error": ("Could not read a side", "bad"),
    "running": ("Running", "idle"),
}


def _defined(state: Any) -> dict[str, dict[str, Any]]:
    """Name -> {owner, schedule, left, right, compare} of the active plan's Reconciliations."""
    return {
        name: {
            "owner": r.owner, "schedule": None if r.schedule is None else r.schedule.cron,
            "left": r.left.read.system.name, "right": r.right.read.system.name,
            "compare": [c[0] for c in r.compare],
            "on_mismatch": f"emit {r.emit}" if r.emit else (f"park {r.park}" if r.park else ""),
        }
        for name, r in sorted(state.plan.reconciliations.items())
    }  # fmt: skip


@page
async def listing(request: Request, session: Session) -> Response:
    state = request.app.state.syncline
    results = await state.runtime.store.list_reconciliations(None, HISTORY)
    defined = _defined(state)
    latest: dict[str, dict[str, Any]] = {}
    for result in results:
        latest.setdefault(result["name"], result)
    return render(request, "reconciliations.html", session, defined=defined, latest=latest,
                  results=results, badges=STATE_BADGES, found=found_words(defined))  # fmt: skip


@page
async def result(request: Request, session: Session) -> Response:
    name = request.path_params["name"]
    state = request.app.state.syncline
    defined = _defined(state)
    history = await state.runtime.store.list_reconciliations(name, HISTORY)
    if name not in defined and not history:
        raise Refused(404, "No such reconciliation",
                      f"The running definitions have no Reconciliation '{name}' and the store "
                      "holds no result of one.")  # fmt: skip
    tick = request.query_params.get("tick")
    shown = next((r for r in history if r["tick"] == tick), None) if tick else (
        history[0] if history else None)  # fmt: skip
    if tick and shown is None:
        found = await state.runtime.store.list_reconciliations(name, 500)
        shown = next((r for r in found if r["tick"] == tick), None)
        if shown is None:
            message = f"Reconciliation '{name}' has no result of the tick '{tick}'."
            raise Refused(404, "No such result", message)
    sides = defined.get(name) or {"left": "left", "right": "right"}
    return render(
        request, "reconciliation.html", session,
        name=name, spec=defined.get(name), history=history, shown=shown,
        groups=_groups(shown, sides), badges=STATE_BADGES, found=found_words(defined),
        notice="Ran now: this is its result." if request.query_params.get("done") == "run"
        else "",
        may_run=session.principal.can("act") and name in defined,
    )  # fmt: skip


def found_words(defined: dict[str, dict[str, Any]]) -> Callable[[str, str, int], str]:
    """`found(name, kind, n)`: "2 only in billing", naming the Systems of that Reconciliation
    (its result may outlive the definition: then "left" and "right")."""

    def found(name: str, kind: str, n: int) -> str:
        sides = defined.get(name) or {"left": "left", "right": "right"}
        words = COUNT_WORDS.get(kind, kind).format(left=sides["left"], right=sides["right"])
        return f"{n} {words}"

    return found


def _groups(shown: dict[str, Any] | None, sides: dict[str, Any]) -> list[dict[str, Any]]:
    """A result's mismatches by kind: `{kind, words, count, items (at most SHOWN)}`."""
    report = (shown or {}).get("report") or {}
    counts = report.get("counts") or {}
    groups = []
    for kind in KINDS:
        items = [m for m in report.get("mismatches") or [] if m.get("kind") == kind]
        count = int(counts.get(kind, len(items)) or 0)
        if count or items:
            words = KIND_WORDS[kind].format(left=sides["left"], right=sides["right"])
            groups.append({"kind": kind, "words": words, "count": count, "items": items[:SHOWN]})
    return groups


@page
async def run_now(request: Request, session: Session) -> Response:
    name = request.path_params["name"]
    fields = await form(request)
    check_csrf(request, session, fields)
    principal = session.principal
    if not principal.can("act"):
        raise Refused(403, "You may not do that",
                      f"'{principal.name}' is a {principal.role}: viewers can look but not run "
                      "a reconciliation.")  # fmt: skip
    state = request.app.state.syncline
    if name not in state.plan.reconciliations:
        raise Refused(404, "No such reconciliation",
                      f"The running definitions have no Reconciliation '{name}'.")  # fmt: skip
    reason = field(fields, "reason").strip()
    if len(reason) > MAX_REASON:
        raise Refused(400, "The reason is too long", f"Keep it under {MAX_REASON} characters.")
    report = await state.runtime.reconciler.run(name, actor=principal.name, reason=reason or None)
    if report == BUSY or report is None:
        raise Refused(409, "That is no longer possible",
                      f"Reconciliation '{name}' is running already; its result shows here when "
                      "it is done. Nothing was started.")  # fmt: skip
    target = (f"/console/reconciliations/{quote(name, safe='')}"
              f"?tick={quote(report['tick'], safe='')}&done=run")  # fmt: skip
    return RedirectResponse(target, status_code=303, headers=HEADERS)
