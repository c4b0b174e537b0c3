"""Signing in to the console with a token, and signing out."""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from engine.server.console.session import COOKIE, SIGNIN_COOKIE
from engine.server.console.web import HEADERS, Refused, error_page, field, form, render, sessions


def _safe_next(target: str) -> str:
    """Only a console path: never another site (`//evil`, `https://...`)."""
    if target.startswith("/console") and not target.startswith("//"):
        return target
    return "/console"


def _cookie_options(request: Request) -> dict[str, object]:
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": "/console",
    }


def signin_form(request: Request, message: str = "", status: int = 200) -> Response:
    """The sign-in page; it sets the random value its form must send back."""
    nonce = secrets.token_urlsafe(16)
    target = _safe_next(request.query_params.get("next", "/console"))
    table = request.app.state.syncline.tokens.table
    response = render(
        request,
        "signin.html",
        None,
        status,
        message=message,
        nonce=nonce,
        next=target,
        no_tokens=not table.grants("read"),
    )
    response.set_cookie(SIGNIN_COOKIE, nonce, max_age=3600, **_cookie_options(request))  # type: ignore[arg-type]
    return response


async def signin(request: Request) -> Response:
    if request.method == "GET":
        return signin_form(request)
    try:
        fields = await form(request)
    except Refused as refused:
        return error_page(request, None, refused.status, refused.title, refused.message)
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not expected or not hmac.compare_digest(field(fields, "csrf").encode(), expected.encode()):
        return signin_form(request, "The sign-in form expired. Please try again.", 403)
    table = request.app.state.syncline.tokens.table
    principal = table.identify(field(fields, "token").strip())
    if principal is None:
        return signin_form(request, "That token is not valid.", 401)
    if not principal.can("read"):
        return signin_form(request, f"The token '{principal.name}' cannot use the console.", 403)
    response = RedirectResponse(_safe_next(field(fields, "next")), status_code=303, headers=HEADERS)
    response.set_cookie(
        COOKIE,
        sessions(request).issue(principal),
        max_age=int(sessions(request).lifetime),
        **_cookie_options(request),  # type: ignore[arg-type]
    )
    response.delete_cookie(SIGNIN_COOKIE, path="/console")
    return response
