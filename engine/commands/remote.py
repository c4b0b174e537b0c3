"""`syncline runs ... --url URL`: the admin API of a running server, as a runs client
(`engine.commands.runs.RunsClient`: list, show, act, aclose).

The token comes from SYNCLINE_TOKEN, else SYNCLINE_ADMIN_TOKEN (read by the CLI and passed in);
its name on the server is the actor the audit trail records. Every failure becomes
a UsageError carrying the server's own error message, so the CLI prints it like a local one.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import quote

import httpx

from engine.errors import UsageError
from engine.runtime.actions import ACTIONS
from engine.runtime.runtime import MISSING
from engine.store import RunQuery
from engine.tls import tls_context


class HttpRunsClient:
    """Lists, shows and acts on runs through /api/v1 of the server at `url`."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport,
            verify=tls_context(),
        )

    async def __aenter__(self) -> HttpRunsClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def list(self, query: RunQuery) -> tuple[list[dict[str, Any]], str | None]:
        """A page of runs, newest first, and the cursor of the next page (None at the end)."""
        params = {k: str(v) for k, v in dataclasses.asdict(query).items() if v is not None}
        page = await self._call("GET", "/api/v1/runs", params=params)
        return page["runs"], page.get("next_cursor")

    async def show(self, run_id: str) -> dict[str, Any]:
        """One run with steps, attempts and links."""
        detail: dict[str, Any] = await self._call("GET", f"/api/v1/runs/{quote(run_id, safe='')}")
        return detail

    async def act(
        self, run_id: str, action: str, data: Any = MISSING, reason: str | None = None
    ) -> dict[str, Any]:
        """One of ACTIONS as this client's token, for `reason`; resume takes corrected `data`."""
        if action not in ACTIONS:
            raise UsageError(f"unknown action '{action}' (one of {', '.join(ACTIONS)})")
        body: dict[str, Any] = {"reason": reason} if reason else {}
        if action == "resume" and data is not MISSING:
            body["data"] = data
        path = f"/api/v1/runs/{quote(run_id, safe='')}/{action}"
        result: dict[str, Any] = await self._call("POST", path, json=body or None)
        return result

    async def audit(self, params: dict[str, str]) -> dict[str, Any]:
        """A page of the audit trail: `{entries, next_cursor}`."""
        result: dict[str, Any] = await self._call("GET", "/api/v1/audit", params=params)
        return result

    async def audit_chain(self, after: int, limit: int) -> dict[str, Any]:
        """A page of the audit trail in chain order, as hashed: `{entries, next_after}`."""
        params = {"after": str(after), "limit": str(limit)}
        result: dict[str, Any] = await self._call("GET", "/api/v1/audit/chain", params=params)
        return result

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/api/v1/status")
        return result

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise UsageError(f"cannot reach {self.url}: {exc}") from exc
        if response.is_success:
            return response.json()
        raise UsageError(_message(response))


def _message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{error['message']} (HTTP {response.status_code} {error['code']})"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code} from {response.request.url}"
