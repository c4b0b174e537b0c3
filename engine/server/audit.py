"""The audit trail as the server shows and feeds it: `GET /api/v1/audit`, and the entries the
server writes itself (definition and tokens reloads). Operator actions are written by the store
in the transaction that changes the run (engine/store/audit.py keeps the hash chain)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine.errors import StoreError
from engine.server.http import Problem, dumps
from engine.server.times import iso, seconds
from engine.store.audit import AuditQuery

log = logging.getLogger("syncline.server")
MAX_LIMIT = 500
SYSTEM_ACTOR = "syncline"  # the actor of what the server does by itself


def parse_since(text: str) -> float:
    """An ISO 8601 time (a date alone is its midnight UTC; no zone is UTC) or unix seconds."""
    try:
        return seconds(text)
    except ValueError:
        raise Problem(
            400, "bad_request", f"since must be an ISO 8601 time or unix seconds, got {text!r}"
        ) from None


def query_from(params: Any) -> AuditQuery:
    """The AuditQuery of `run`, `actor`, `action`, `since`, `cursor` and `limit` parameters."""
    try:
        limit = int(params.get("limit", "100"))
        cursor = int(params["cursor"]) if params.get("cursor") else None
    except ValueError:
        raise Problem(400, "bad_request", "limit and cursor must be integers") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise Problem(400, "bad_request", f"limit must be between 1 and {MAX_LIMIT}")
    since = params.get("since")
    return AuditQuery(
        run_id=params.get("run") or None,
        actor=params.get("actor") or None,
        action=params.get("action") or None,
        since=parse_since(since) if since else None,
        before_seq=cursor,
        limit=limit,
    )


def entry_json(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry as the API shows it: ISO time, the operator's reason lifted out of the detail."""
    detail = entry["detail"]
    reason = detail.get("note") if isinstance(detail, dict) else None
    return {**entry, "at": iso(entry["at"]), "reason": reason}


async def entries(store: Any, query: AuditQuery) -> tuple[list[dict[str, Any]], str | None]:
    """A page of entries as the API shows them, and the cursor of the next page."""
    try:
        found = await store.audit_log(query)
    except StoreError as exc:
        log.error("reading the audit trail failed: %s", exc)
        raise Problem(503, "store_unavailable", "the store failed; retry later") from None
    following = str(found[-1]["seq"]) if len(found) == query.limit else None
    return [entry_json(e) for e in found], following


async def list_audit(request: Request) -> Response:
    """Audit entries, newest first, filtered by run, actor, action and since; `cursor` pages."""
    store = request.app.state.syncline.runtime.store
    found, following = await entries(store, query_from(request.query_params))
    body = dumps({"entries": found, "next_cursor": following})
    return Response(body, media_type="application/json")


async def record(store: Any, action: str, detail: dict[str, Any]) -> None:
    """Append an entry by the server itself; a store failure is logged, not raised (a reload
    has happened whether or not its entry could be written)."""
    try:
        await store.audit(SYSTEM_ACTOR, action, None, detail)
    except StoreError as exc:
        log.error("could not audit %s: %s", action, exc)
