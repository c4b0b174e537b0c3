"""How a sandbox system's API answers, where systems differ: its authentication, the shape of
its error bodies and how slow it is (`ApiConventions`, mixed into `SandboxSystem`; the cloud ERP
overrides the first two)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import TYPE_CHECKING

from engine.sandbox.common import JSON, ApiError

if TYPE_CHECKING:
    from engine.sandbox.system import SandboxConfig


class ApiConventions:
    """Mixed into `SandboxSystem`, which sets `config`."""

    config: SandboxConfig

    def authorize(self, headers: Mapping[str, str]) -> None:
        """Refuse a request without the configured bearer token (401); override for other
        schemes (the cloud ERP checks the OAuth tokens it issued)."""
        if self.config.auth_token:
            expected = f"Bearer {self.config.auth_token}"
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), expected.encode()):
                raise ApiError(401, "UNAUTHORIZED", "missing or wrong bearer token")

    def latency_for(self, path: str) -> float:
        """The configured extra latency of a request to `path` (the longest matching prefix)."""
        found = [p for p in self.config.latency if path.startswith(p)]
        return self.config.latency[max(found, key=len)] if found else 0.0

    def error_body(self, error: ApiError) -> JSON:
        """How this system's API spells an error (override for another format)."""
        return error.body()

