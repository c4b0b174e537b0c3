"""`syncline status --url URL`: does a running server run what the project says it should?

The server's `GET /api/v1/status` reports the digest of the plan it serves, its environment and
the active version of every flow (`{"flows": {name: {"version": N, ...}}}`, or `{name: N}`).
Those are compared with the plan compiled locally for the same environment. Equal digests mean
the very same definitions and settings; when they differ, the per-flow versions say where.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from engine.compiler.plan import Plan
from engine.errors import UsageError
from engine.tls import tls_context

STATUS_PATH = "/api/v1/status"


class StatusUnavailable(UsageError):
    """The server could not be asked, or did not answer with a status document."""


@dataclass(frozen=True)
class Drift:
    """The comparison of a server's status with a local plan."""

    environment: str
    local_digest: str
    remote_digest: str | None
    differences: tuple[str, ...]  # one line each; empty when in sync
    notes: tuple[str, ...] = ()  # worth knowing, not drift (a rejected reload)

    @property
    def in_sync(self) -> bool:
        return not self.differences

    def as_dict(self) -> dict[str, Any]:
        return {
            "in_sync": self.in_sync,
            "environment": self.environment,
            "digest": {"local": self.local_digest, "remote": self.remote_digest},
            "differences": list(self.differences),
            "notes": list(self.notes),
        }


def fetch_status(
    url: str,
    token: str | None = None,
    *,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """GET URL/api/v1/status (bearer `token` when given) and return the document."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    target = url.rstrip("/") + STATUS_PATH
    try:
        with httpx.Client(
            headers=headers, timeout=timeout, transport=transport, verify=tls_context()
        ) as client:
            response = client.get(target)
    except httpx.HTTPError as exc:
        raise StatusUnavailable(f"cannot reach {target}: {exc}") from exc
    if response.status_code != 200:
        raise StatusUnavailable(f"{target} answered {response.status_code}: {response.text[:200]}")
    try:
        document = response.json()
    except ValueError as exc:
        raise StatusUnavailable(f"{target} did not answer JSON") from exc
    if not isinstance(document, dict) or "digest" not in document:
        raise StatusUnavailable(f"{target} did not answer a status document (no digest)")
    return document


def compare_status(plan: Plan, status: Mapping[str, Any]) -> Drift:
    """What differs between a server's status document and a plan compiled locally."""
    differences: list[str] = []
    remote_env = status.get("environment")
    if remote_env is not None and remote_env != plan.environment:
        differences.append(
            f"environment: the server runs '{remote_env}', the project was "
            f"compiled for '{plan.environment}'"
        )
    remote_digest = status.get("digest")
    if remote_digest != plan.digest:
        differences.append(
            f"digest: the server runs {remote_digest}, the project compiles to {plan.digest}"
        )
    differences.extend(_flow_differences(plan, status.get("flows") or {}))
    return Drift(
        plan.environment, plan.digest, remote_digest, tuple(differences), tuple(_notes(status))
    )


def _flow_differences(plan: Plan, remote_flows: Mapping[str, Any]) -> list[str]:
    remote = {name: _version(value) for name, value in remote_flows.items()}
    local = {name: flow.version for name, flow in plan.flows.items()}
    lines = []
    for name in sorted(remote.keys() | local.keys()):
        if name not in local:
            lines.append(f"flow {name}: only on the server (@{remote[name]})")
        elif name not in remote:
            lines.append(f"flow {name}: not on the server (the project has @{local[name]})")
        elif remote[name] != local[name]:
            lines.append(
                f"flow {name}: the server runs @{remote[name]}, the project has @{local[name]}"
            )
    return lines


def _version(value: Any) -> Any:
    return value.get("version") if isinstance(value, Mapping) else value


def _notes(status: Mapping[str, Any]) -> list[str]:
    reload = status.get("reload")
    if isinstance(reload, Mapping) and reload.get("ok") is False:
        first = str(reload.get("error") or "").splitlines()[:1]
        return [f"the server's last reload was rejected: {first[0] if first else 'no detail'}"]
    return []


def render_text(drift: Drift, url: str) -> str:
    """`in sync` or the list of differences, for people."""
    if drift.in_sync:
        lines = [f"in sync: {url} runs {drift.local_digest} [{drift.environment}]"]
    else:
        lines = [f"drift: {url} does not run the project [{drift.environment}]"]
        lines.extend(f"  {line}" for line in drift.differences)
    lines.extend(f"note: {note}" for note in drift.notes)
    return "\n".join(lines) + "\n"
