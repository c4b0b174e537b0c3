"""`syncline runs ... --url URL`: the admin API of a running server, as a runs client.

The token comes from SYNCLINE_ADMIN_TOKEN (read by the CLI and passed in). Every failure becomes
a UsageError carrying the server's own error message, so the CLI prints it like a local one.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from engine.errors import UsageError

_ABSENT: Any = object()


class HttpRunsClient:
    """Lists, shows and acts on runs through /api/v1 of the server at `url`."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers["X-Syncline-Actor"] = "cli"
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> HttpRunsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def list_runs(
        self,
        *,
        flow: str | None = None,
        state: str | None = None,
        key: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of runs, newest first, and the cursor of the next page (None at the end)."""
        params = {
            k: v
            for k, v in {
                "flow": flow,
                "state": state,
                "key": key,
                "cursor": cursor,
                "limit": str(limit),
            }.items()
            if v is not None
        }
        page = self._call("GET", "/api/v1/runs", params=params)
        return page["runs"], page.get("next_cursor")

    def run_detail(self, run_id: str) -> dict[str, Any]:
        """One run with steps, attempts and links."""
        detail: dict[str, Any] = self._call("GET", f"/api/v1/runs/{quote(run_id, safe='')}")
        return detail

    def resume(self, run_id: str, data: Any = _ABSENT) -> dict[str, Any]:
        """Resume a parked run, optionally with corrected data."""
        body = None if data is _ABSENT else {"data": data}
        return self._action(run_id, "resume", body)

    def retry(self, run_id: str) -> dict[str, Any]:
        return self._action(run_id, "retry")

    def cancel(self, run_id: str) -> dict[str, Any]:
        return self._action(run_id, "cancel")

    def replay(self, run_id: str) -> dict[str, Any]:
        return self._action(run_id, "replay")

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/api/v1/status")
        return result

    def _action(self, run_id: str, action: str, body: Any = None) -> dict[str, Any]:
        path = f"/api/v1/runs/{quote(run_id, safe='')}/{action}"
        result: dict[str, Any] = self._call("POST", path, json=body)
        return result

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
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
