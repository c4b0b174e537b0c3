"""Console sessions: a signed, expiring cookie naming the signed-in token, and CSRF tokens.

The cookie is `base64(json {n: name, f: fingerprint, e: expiry, s: session id}).base64(hmac)`,
signed with SYNCLINE_SESSION_KEY (or a random key per process: sessions then end on restart).
A session is only as good as its token: the fingerprint changes when the token does, and a
token removed from the tokens file ends its sessions at once (`TokenTable.by_name`).
Every state-changing form carries `csrf`, an HMAC of the session id; the sign-in form, before
there is a session, carries the value of a random `syncline_signin` cookie (double submit).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass

from engine.server.auth import Principal, TokenTable

COOKIE = "syncline_session"
SIGNIN_COOKIE = "syncline_signin"
LIFETIME = 8 * 3600  # seconds a session lasts


@dataclass(frozen=True)
class Session:
    """A signed-in caller."""

    principal: Principal
    sid: str  # random id of this session
    expires: float  # unix seconds


class Sessions:
    """Issues and checks session cookies and CSRF tokens with one key."""

    def __init__(self, key: str | None = None, lifetime: float = LIFETIME) -> None:
        self._key = hashlib.sha256(key.encode()).digest() if key else os.urandom(32)
        self.lifetime = lifetime

    def issue(self, principal: Principal, now: float | None = None) -> str:
        """The cookie value of a new session for `principal`."""
        expires = (now or time.time()) + self.lifetime
        body = {"n": principal.name, "f": principal.fingerprint, "e": expires}
        body["s"] = secrets.token_urlsafe(16)
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def check(self, cookie: str, table: TokenTable, now: float | None = None) -> Session | str:
        """The session of `cookie`, or why there is none (words for the sign-in page)."""
        payload, _, signature = cookie.partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return "Your session is not valid. Please sign in."
        try:
            body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            name, fingerprint, expires, sid = body["n"], body["f"], float(body["e"]), body["s"]
        except (ValueError, KeyError, TypeError):
            return "Your session is not valid. Please sign in."
        if expires <= (now or time.time()):
            return "Your session has expired. Please sign in again."
        principal = table.by_name(name, fingerprint)
        if principal is None:
            return "Your token is no longer valid. Please sign in with a current one."
        return Session(principal, sid, expires)

    def csrf(self, sid: str) -> str:
        """The CSRF token of forms in session `sid`."""
        return self._sign("csrf:" + sid)

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._key, text.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
