"""`syncline reconcile NAME`: run a Reconciliation now, on a running server (`--url`, its admin
API) or against the project's store, and render its report.

Locally the result is stored (and a mismatch emits or parks) exactly as a scheduled run would;
runs its event starts are executed by the serving processes of that store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from engine.commands.runs import load_project_plan
from engine.errors import UsageError
from engine.runtime import Runtime
from engine.store import open_store
from engine.tls import tls_context


async def reconcile_local(
    project: Path, name: str, *, environment: str | None, secrets: Mapping[str, str],
    database: str | None, reason: str | None = None,
) -> dict[str, Any]:
    """Run `name` of the project's plan against its store (audited with `reason`); answers the
    report."""
    plan = load_project_plan(project, environment)
    if name not in plan.reconciliations:
        known = ", ".join(sorted(plan.reconciliations)) or "none"
        raise UsageError(f"no reconciliation '{name}' in the project (it has: {known})")
    async with open_store(database, project) as store:
        await store.save_plan(plan.digest, dict(plan.bundle))  # for runs a mismatch event starts
        runtime = Runtime(store, plan, secrets=secrets)
        try:
            report: dict[str, Any] = await runtime.reconciler.run(name, reason=reason)
        finally:
            await runtime.stop()
    return report


async def reconcile_remote(
    url: str, name: str, token: str | None, reason: str | None = None
) -> dict[str, Any]:
    """Ask the server at `url` to run `name` now (POST /api/v1/reconciliations/NAME/run), for
    `reason` (kept in the audit trail)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=600,
                                 verify=tls_context()) as http:
        try:
            response = await http.post(f"/api/v1/reconciliations/{quote(name, safe='')}/run",
                                       json={"reason": reason} if reason else None)
        except httpx.HTTPError as exc:
            raise UsageError(f"cannot reach {url}: {exc}") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        error = body.get("error", {}) if isinstance(body, dict) else {}
        message = error.get("message") if isinstance(error, dict) else None
        raise UsageError(f"{url}: {response.status_code} {message or response.text[:200]}")
    return body


def render_report(report: dict[str, Any]) -> str:
    """The report as text: a summary line, counts by kind, then one line per mismatch."""
    lines = [f"{report['name']}: {report['state']}"]
    if report.get("error"):
        lines.append(f"  error[{report['error']['code']}] {report['error']['message']}")
        return "\n".join(lines)
    lines[0] += (f" (left {report['left']}, right {report['right']}, "
                 f"matched {report['matched']})")
    counts = {k: n for k, n in report["counts"].items() if n}
    if counts:
        lines.append("  " + ", ".join(f"{kind} {n}" for kind, n in counts.items()))
    for m in report["mismatches"]:
        if m["kind"] == "field":
            left, right = json.dumps(m["left"]), json.dumps(m["right"])
            lines.append(f"  field          {m['key']}  {m['field']}: {left} != {right}")
        else:
            lines.append(f"  {m['kind']:<14} {m['key']}")
    if report.get("unkeyed"):
        lines.append(f"  {len(report['unkeyed'])} item(s) without a key, not paired")
    if report.get("action"):
        lines.append(f"  on mismatch: {json.dumps(report['action'])}")
    return "\n".join(lines)
