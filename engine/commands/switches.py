"""What `syncline flows|systems pause|resume` do: on the project's store (every runtime sharing it
follows within its poll interval), or with `--url` through a running server's admin API."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from engine.compiler.plan import Plan
from engine.errors import StateConflict, UsageError
from engine.runtime.runtime import Runtime
from engine.store import open_store
from engine.tls import tls_context


async def switch_local(
    project: Path,
    plan: Plan,
    database: str | None,
    kind: str,
    name: str,
    action: str,
    reason: str,
    actor: str,
) -> dict[str, Any]:
    """Pause or resume `name` in the project's store; the answer the admin API gives."""
    async with open_store(database, project) as store:
        try:
            return await Runtime(store, plan).operations.switch(kind, name, action, reason, actor)
        except StateConflict as exc:
            raise UsageError(str(exc)) from None


async def switch_remote(
    url: str, token: str | None, kind: str, name: str, action: str, reason: str, actor: str
) -> dict[str, Any]:
    """The same through the admin API of the server at `url`; its errors as UsageError."""
    headers = {"X-Syncline-Actor": actor}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    path = f"/api/v1/{kind}s/{quote(name, safe='')}/{action}"
    async with httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=30,
                                 verify=tls_context()) as http:
        try:
            response = await http.post(path, json={"reason": reason})
        except httpx.HTTPError as exc:
            raise UsageError(f"cannot reach {url}: {exc}") from exc
    if response.is_success:
        answer: dict[str, Any] = response.json()
        return answer
    try:
        error = response.json()["error"]
        message = f"{error['message']} (HTTP {response.status_code} {error['code']})"
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {response.status_code} from {url}"
    raise UsageError(message)
