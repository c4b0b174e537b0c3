"""A project whose deals park on a bad amount, a tokens file with every role, and helpers to
deliver deals: shared by the auth, audit and console tests."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from serverkit import SECRETS, write_project
from standardwebhooks import Webhook

from engine.server.auth import token_digest

DEALS = """\
apiVersion: syncline/v1
kind: Flow
metadata: {{name: {name}, version: 1, owner: {owner}}}
spec:
  trigger: {{webhook: {{path: {path}, system: crm}}}}
  idempotencyKey: data.id
  steps:
    - id: check
      validate:
        input: data
        rules:
          - {{assert: "data.amount > `0`", code: BAD_AMOUNT, message: the amount must be positive}}
    - id: order
      needs: [check]
      set: {{deal: data.name, amount: data.amount}}
"""

METRICS = """\
---
apiVersion: syncline/v1
kind: Metric
metadata: {name: deals-needing-attention, owner: finance}
spec:
  help: Deals parked for a person
  gauge: {flow: deal-to-order, states: [parked]}
---
apiVersion: syncline/v1
kind: Metric
metadata: {name: deal-resolution-time, owner: finance}
spec:
  help: From a deal parked to its order going through
  duration:
    from: {flow: deal-to-order, state: parked}
    to: {flow: deal-to-order, state: succeeded}
  objective: {percentile: 90, under: 1h}
"""

TOKENS = {"viewer": "tok-viewer-1", "alice": "tok-alice-1", "root": "tok-root-1"}


def tokens_yaml(extra: str = "") -> str:
    return (
        f"- {{name: viewer, role: viewer, sha256: {token_digest(TOKENS['viewer']).hex()}}}\n"
        f"- {{name: alice, role: operator, sha256: {token_digest(TOKENS['alice']).hex()},"
        ' flows: ["deal-*"]}\n'
        f"- {{name: root, role: admin, sha256: {token_digest(TOKENS['root']).hex()}}}\n" + extra
    )


def auth_project(root: Path) -> Path:
    """The server kit's project plus two parking flows: deal-to-order (owner finance, alice's)
    and renewal-sync (owner revops, not alice's), and two business metrics over deal-to-order."""
    flows = DEALS.format(name="deal-to-order", owner="finance", path="/hooks/deals") + "---\n"
    flows += DEALS.format(name="renewal-sync", owner="revops", path="/hooks/renewals")
    flows += METRICS
    project = write_project(root / "project", {"flows/deals.yaml": flows})
    (root / "tokens.yaml").write_text(tokens_yaml())
    return project


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


def deliver(http: httpx.Client, path: str, deal: dict[str, Any]) -> str:
    """POST a signed delivery of `deal`; the run id."""
    body = json.dumps(deal)
    now = datetime.now(tz=UTC)
    msg = f"m-{deal['id']}"
    headers = {
        "content-type": "application/json",
        "webhook-id": msg,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRETS["CRM_HOOK"]).sign(msg, now, body),
    }
    response = http.post(path, content=body, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["run_id"])


def wait_state(http: httpx.Client, run_id: str, state: str, headers: Any = None) -> dict:
    deadline = time.monotonic() + 10
    detail: dict = {}
    while time.monotonic() < deadline:
        detail = http.get(f"/api/v1/runs/{run_id}", headers=headers or bearer("root")).json()
        if detail["state"] == state:
            return detail
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {state}: {detail}")
