"""The operator console (`/console`, SPEC section 9): server-rendered pages for the people who
resolve exceptions. Jinja2 templates (autoescaped) and a stylesheet ship in this package; no
script, no CDN, no build step. Every page sends a Content-Security-Policy without inline
script and refuses framing; sessions are signed cookies (session.py); every form that changes
something carries a CSRF token (web.py).

    GET  /console                          Overview: runs by flow and state, reload, plan
    GET  /console/exceptions               parked and dead-lettered runs by reason and owner
    POST /console/exceptions/bulk          resume or retry a group
    GET  /console/runs                     runs, filtered by flow, state, key, correlation id
    GET  /console/runs/{id}                a run: timeline, requests, lineage, audit, actions
    POST /console/runs/{id}/{action}       resume | retry | cancel | replay, with a reason
    GET  /console/audit                    the audit trail
    GET|POST /console/flows/{name}/pause|resume, /console/systems/{name}/pause|resume
                                           the pause switches, with a reason (switches.py)
    GET  /console/reconciliations[/{name}?tick=]   results; POST .../{name}/run runs one now
    GET  /console/shadow                   shadow calls: agreement per System, mismatches
    GET|POST /console/signin, POST /console/signout
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from engine.server.console import actions, pages, reconciliations, shadow, signin, switches


def console_routes() -> list[BaseRoute]:
    return [
        Route("/console", pages.overview, methods=["GET"]),
        Route("/console/signin", signin.signin, methods=["GET", "POST"]),
        Route("/console/signout", actions.signout, methods=["POST"]),
        Route("/console/exceptions", pages.exceptions, methods=["GET"]),
        Route("/console/exceptions/bulk", actions.bulk, methods=["POST"]),
        Route("/console/runs", pages.runs, methods=["GET"]),
        Route("/console/runs/{run_id}", pages.run, methods=["GET"]),
        Route("/console/runs/{run_id}/{action}", actions.run_action, methods=["POST"]),
        Route("/console/audit", pages.audit, methods=["GET"]),
        Route("/console/reconciliations", reconciliations.listing, methods=["GET"]),
        Route("/console/reconciliations/{name}", reconciliations.result, methods=["GET"]),
        Route("/console/reconciliations/{name}/run", reconciliations.run_now, methods=["POST"]),
        Route("/console/shadow", shadow.report, methods=["GET"]),
        Route("/console/flows/{name}/{action}", switches.switch, methods=["GET", "POST"]),
        Route("/console/systems/{name}/{action}", switches.switch, methods=["GET", "POST"]),
        Mount(
            "/console/static",
            StaticFiles(packages=[("engine.server.console", "static")]),
            name="console-static",
        ),
        Route("/console/{rest:path}", pages.not_found, methods=["GET", "POST"]),
    ]
