"""An OAuth 2.0 token endpoint for sandbox systems: the client-credentials grant (RFC 6749 section
4.4), tokens that expire, and the bearer check of the API calls made with them.

``POST /oauth/token`` takes a form body (``grant_type=client_credentials``, optional ``scope``)
and the client's id and secret as HTTP Basic credentials (or ``client_id``/``client_secret`` form
fields) and answers ``{"access_token", "token_type": "Bearer", "expires_in", "scope"}``. Errors
follow RFC 6749 section 5.2: 400 ``unsupported_grant_type``/``invalid_request``, 401
``invalid_client``. An API call with a token that is unknown, expired or revoked gets 401 with
``WWW-Authenticate: Bearer error="invalid_token"``, so a client must fetch a new one.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from engine.sandbox.common import JSON, ApiError

TOKEN_PATH = "/oauth/token"


class OAuthIssuer:
    """Issues and checks the bearer tokens of one sandbox system (thread-safe)."""

    def __init__(self, clients: Mapping[str, str], ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clients = dict(clients)
        self.ttl = ttl
        self.clock = clock
        self._tokens: dict[str, float] = {}  # token -> expiry (clock time)
        self._lock = threading.Lock()
        self.issued = 0
        self.refused = 0   # API calls refused for an unknown, expired or revoked token

    def reset(self) -> None:
        with self._lock:
            self._tokens.clear()
            self.issued = self.refused = 0

    def expire_all(self) -> int:
        """Revoke every token now (as a key rotation would); how many were live."""
        with self._lock:
            live = sum(1 for until in self._tokens.values() if until > self.clock())
            self._tokens.clear()
            return live

    def describe(self) -> JSON:
        with self._lock:
            now = self.clock()
            live = sum(1 for until in self._tokens.values() if until > now)
            return {"issued": self.issued, "live": live, "refused": self.refused,
                    "ttl": self.ttl, "clients": sorted(self.clients)}

    def check(self, headers: Mapping[str, str]) -> None:
        """An API call's ``Authorization: Bearer`` must be a live token (else 401)."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        with self._lock:
            until = self._tokens.get(token) if scheme.lower() == "bearer" else None
            if until is not None and until > self.clock():
                return
            self.refused += 1
        error = ApiError(401, "invalid_token", "the access token is missing, unknown or expired")
        error.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        raise error

    async def endpoint(self, request: Request) -> Response:
        """``POST /oauth/token``: the client-credentials grant."""
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace"))
                .items()}
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type",
                                "only grant_type=client_credentials is supported")
        client_id, secret = _basic(request.headers.get("authorization", ""))
        client_id = client_id or form.get("client_id", "")
        secret = secret or form.get("client_secret", "")
        expected = self.clients.get(client_id)
        if expected is None or not hmac.compare_digest(secret.encode(), expected.encode()):
            response = _oauth_error(401, "invalid_client", "unknown client or wrong secret")
            response.headers["WWW-Authenticate"] = 'Basic realm="oauth"'
            return response
        token = secrets.token_urlsafe(24)
        with self._lock:
            now = self.clock()
            self._tokens = {t: u for t, u in self._tokens.items() if u > now}
            self._tokens[token] = now + self.ttl
            self.issued += 1
        return JSONResponse({"access_token": token, "token_type": "Bearer",
                             "expires_in": int(self.ttl), "scope": form.get("scope", "")},
                            headers={"Cache-Control": "no-store"})


def _basic(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    client_id, _, secret = decoded.partition(":")
    return client_id, secret


def _oauth_error(status: int, code: str, description: str) -> JSONResponse:
    return JSONResponse({"error": code, "error_description": description}, status_code=status,
                        headers={"Cache-Control": "no-store"})
