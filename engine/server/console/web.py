"""The console's plumbing: rendering a page with its security headers, the signed-in session of
a request, form bodies with their CSRF check, and error pages (never a 500 for bad input)."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from engine.errors import StoreError
from engine.server.console.session import COOKIE, Session, Sessions
from engine.server.console.views import environment
from engine.server.http import Problem, media_type, read_body

log = logging.getLogger("syncline.console")
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_ENV = environment()
Handler = Callable[[Request, Session], Awaitable[Response]]


class Refused(Exception):
    """A request the console answers with an error page: status, a title, and what to do."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def sessions(request: Request) -> Sessions:
    """The app's session signer (made on first use with the configured key)."""
    found: Sessions | None = getattr(request.app.state, "console_sessions", None)
    if found is None:
        found = Sessions(request.app.state.syncline.config.session_key)
        request.app.state.console_sessions = found
    return found


def render(
    request: Request, template: str, session: Session | None, status: int = 200, **context: Any
) -> HTMLResponse:
    """A page with the console's security headers."""
    csrf = sessions(request).csrf(session.sid) if session else ""
    html = _ENV.get_template(template).render(
        session=session, csrf=csrf, path=request.url.path, **context
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def signin_page(request: Request, message: str, status: int) -> Response:
    from engine.server.console.signin import signin_form

    return signin_form(request, message, status)


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A console endpoint for signed-in people: without a session a GET goes to the sign-in
    page (401 when a cookie was there but no longer holds); refusals and API problems become
    error pages."""

    async def endpoint(request: Request) -> Response:
        cookie = request.cookies.get(COOKIE)
        state = request.app.state.syncline
        if cookie is None:
            if request.method == "GET":
                target = quote(
                    request.url.path + ("?" + request.url.query if request.url.query else "")
                )
                return RedirectResponse(f"/console/signin?next={target}", status_code=303)
            return signin_page(request, "Please sign in first.", 401)
        checked = sessions(request).check(cookie, state.tokens.table)
        if isinstance(checked, str):
            return signin_page(request, checked, 401)
        try:
            return await handler(request, checked)
        except Refused as refused:
            return error_page(request, checked, refused.status, refused.title, refused.message)
        except Problem as problem:
            return error_page(request, checked, problem.status, _TITLES.get(problem.status,
                              "That did not work"), problem.message)  # fmt: skip
        except StoreError as exc:
            log.error("console: the store failed: %s", exc)
            return error_page(
                request,
                checked,
                503,
                "The store is unavailable",
                "Syncline could not read or write its store. Try again shortly.",
            )

    endpoint.__name__ = handler.__name__
    return endpoint


_TITLES = {
    400: "That request was not understood",
    403: "You may not do that",
    404: "Not found",
    409: "That is no longer possible",
    413: "That is too large",
}


def error_page(
    request: Request, session: Session | None, status: int, title: str, message: str
) -> HTMLResponse:
    return render(request, "error.html", session, status, title=title, message=message)


async def form(request: Request) -> dict[str, list[str]]:
    """A urlencoded form body (every value of each field), read with the size limit."""
    if media_type(request.headers.get("content-type")) != "application/x-www-form-urlencoded":
        raise Refused(415, "That request was not understood", "Forms are sent URL-encoded.")
    state = request.app.state.syncline
    body = await read_body(
        request.receive, state.config.max_body, request.headers.get("content-length")
    )
    fields: dict[str, list[str]] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, []).append(value)
    return fields


def field(fields: dict[str, list[str]], name: str) -> str:
    return (fields.get(name) or [""])[-1]


def check_csrf(request: Request, session: Session, fields: dict[str, list[str]]) -> None:
    """403 unless the form carries this session's CSRF token."""
    expected = sessions(request).csrf(session.sid)
    if not hmac.compare_digest(field(fields, "csrf").encode(), expected.encode()):
        raise Refused(
            403,
            "This form cannot be accepted",
            "The form was missing its security token or it belongs to another session. "
            "Nothing was changed. Reload the page and try again.",
        )
