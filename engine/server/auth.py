"""Who is asking: named tokens, their roles, and the rights a request needs (SPEC section 6).

A token is identified by the SHA-256 digest of its text, compared against every known digest
with `hmac.compare_digest` (no early exit, so the time taken says nothing about which digest
came close). The known tokens are:

- the entries of the tokens file (`SYNCLINE_TOKENS_FILE` or `serve --tokens FILE`), a YAML list
  of `{name, role, sha256, flows}`; it holds digests only, never tokens;
- `SYNCLINE_ADMIN_TOKEN`, an `admin` named `admin`, and `SYNCLINE_INGEST_TOKEN`, an `ingest`
  named `ingest`.

Roles and their rights:

    viewer    read: runs, status, audit, console pages
    operator  read + act (resume, retry, cancel, replay), on the flows its `flows` globs match
              (all flows without globs)
    admin     every right
    ingest    ingest (POST /events, process APIs) only

When no known token grants a right, requests needing it are answered on loopback only (as the
local user `local`, an admin): a server started without any token is usable from its own host.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from engine.errors import UsageError
from engine.server.http import Problem, is_loopback

Right = Literal["read", "act", "ingest"]
ROLES: Mapping[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "operator": frozenset({"read", "act"}),
    "admin": frozenset({"read", "act", "ingest"}),
    "ingest": frozenset({"ingest"}),
}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    name: str  # the token's name: the actor of everything it does
    role: str  # one of ROLES
    flows: tuple[str, ...] = ()  # an operator's flow globs (empty: every flow)
    fingerprint: str = ""  # a digest of the token's digest: sessions die when it changes

    def can(self, right: str) -> bool:
        return right in ROLES[self.role]

    def may_act_on(self, flow: str) -> bool:
        """Whether this caller may act on runs of `flow`."""
        if not self.can("act"):
            return False
        return not self.flows or any(fnmatchcase(flow, glob) for glob in self.flows)


LOCAL = Principal("local", "admin")


def token_digest(token: str) -> bytes:
    """SHA-256 of a token's text: what the tokens file holds (as hex)."""
    return hashlib.sha256(token.encode()).digest()


def _fingerprint(digest: bytes) -> str:
    return hashlib.sha256(b"syncline-session:" + digest).hexdigest()[:16]


class TokenTable:
    """The known tokens: digest -> Principal, looked up in constant time."""

    def __init__(self, entries: Iterable[tuple[bytes, Principal]]) -> None:
        self.entries: tuple[tuple[bytes, Principal], ...] = tuple(
            (digest, Principal(p.name, p.role, p.flows, _fingerprint(digest)))
            for digest, p in entries
        )

    def identify(self, token: str) -> Principal | None:
        """The principal of `token`, or None. Compares against every digest."""
        presented = token_digest(token)
        found = None
        for digest, principal in self.entries:
            if hmac.compare_digest(presented, digest):
                found = principal
        return found

    def by_name(self, name: str, fingerprint: str) -> Principal | None:
        """The principal a session names, if its token is still the same one."""
        for _, principal in self.entries:
            if principal.name == name and hmac.compare_digest(principal.fingerprint, fingerprint):
                return principal
        return None

    def grants(self, right: str) -> bool:
        """Whether any known token has `right`."""
        return any(p.can(right) for _, p in self.entries)


def env_entries(admin_token: str | None, ingest_token: str | None) -> list[tuple[bytes, Principal]]:
    """The tokens of SYNCLINE_ADMIN_TOKEN and SYNCLINE_INGEST_TOKEN."""
    entries = []
    if admin_token:
        entries.append((token_digest(admin_token), Principal("admin", "admin")))
    if ingest_token:
        entries.append((token_digest(ingest_token), Principal("ingest", "ingest")))
    return entries


def read_tokens_file(path: Path) -> tuple[list[tuple[bytes, Principal]], str]:
    """The entries of a tokens file and the SHA-256 of its bytes. Raises UsageError naming the
    file, the entry and what is wrong (never a token or digest)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read tokens file {path}: {exc.strerror}") from None
    try:
        document = YAML(typ="safe", pure=True).load(raw)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise UsageError(f"{path}{where}: not valid YAML") from None
    if document is None:
        document = []
    if not isinstance(document, list):
        raise UsageError(f"{path}: expected a list of {{name, role, sha256, flows}}")
    entries = [_entry(path, n, item) for n, item in enumerate(document, 1)]
    names = [p.name for _, p in entries]
    for name in names:
        if names.count(name) > 1:
            raise UsageError(f"{path}: the name '{name}' is used twice")
    return entries, hashlib.sha256(raw).hexdigest()


def _entry(path: Path, n: int, item: Any) -> tuple[bytes, Principal]:
    where = f"{path}: entry {n}"
    if not isinstance(item, dict):
        raise UsageError(f"{where}: expected a mapping {{name, role, sha256, flows}}")
    unknown = set(item) - {"name", "role", "sha256", "flows"}
    if unknown:
        raise UsageError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"{where}: 'name' must be a non-empty string")
    where = f"{where} ({name})"
    role = item.get("role")
    if role not in ROLES:
        raise UsageError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
    digest = item.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64 or not _is_hex(digest):
        raise UsageError(
            f"{where}: 'sha256' must be the 64 hex digits of the token's SHA-256 "
            "(syncline tokens hash)"
        )
    flows = item.get("flows") or []
    if not isinstance(flows, list) or not all(isinstance(f, str) for f in flows):
        raise UsageError(f"{where}: 'flows' must be a list of flow name globs")
    if flows and role != "operator":
        raise UsageError(f"{where}: only an operator takes 'flows'")
    return bytes.fromhex(digest), Principal(name, str(role), tuple(flows))


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of `Authorization: Bearer <token>`, if any."""
    scheme, _, given = headers.get("authorization", "").partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and given else None


def authenticate(
    table: TokenTable, scope: Any, headers: Mapping[str, str], right: Right, what: str
) -> Principal:
    """The caller of a request that needs `right`, or a Problem: 401 without a valid token,
    403 `forbidden` when its role lacks the right (or off loopback when no token grants it)."""
    if not table.grants(right):
        if is_loopback(scope):
            return LOCAL
        raise Problem(
            403, "forbidden", f"{what} answers only on loopback when no token is configured"
        )
    token = bearer(headers)
    principal = table.identify(token) if token is not None else None
    if principal is None:
        raise Problem(
            401,
            "unauthorized",
            f"{what} needs a valid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    require(principal, right, what)
    return principal


def require(principal: Principal, right: str, what: str) -> None:
    """403 `forbidden` unless `principal` has `right`."""
    if not principal.can(right):
        raise Problem(403, "forbidden", f"'{principal.name}' ({principal.role}) may not use {what}")


def require_flow(principal: Principal, flow: str) -> None:
    """403 `forbidden` unless `principal` may act on runs of `flow`."""
    if not principal.may_act_on(flow):
        raise Problem(
            403,
            "forbidden",
            f"'{principal.name}' ({principal.role}) may not act on runs of flow '{flow}'",
        )
