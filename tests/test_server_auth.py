"""Named tokens and roles on the admin API, the audit trail it writes and shows, and the tokens
file's hot reload: a real server on a real socket, real flows parking real runs."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from authkit import TOKENS, auth_project, bearer, deliver, tokens_yaml, wait_state
from serverkit import LiveServer

from engine.server.auth import token_digest


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    project = auth_project(tmp_path)
    with LiveServer(project, tokens_file=tmp_path / "tokens.yaml", watch=True) as server:
        yield server


def parked(http: httpx.Client, path: str, deal_id: str, name: str = "Acme") -> str:
    run_id = deliver(http, path, {"id": deal_id, "name": name, "amount": -5})
    wait_state(http, run_id, "parked")
    return run_id


def test_roles_decide_who_reads_and_who_acts(live: LiveServer) -> None:
    with live.client() as http:
        run_id = parked(http, "/hooks/deals", "d1")
        assert http.get("/api/v1/runs").status_code == 401
        wrong = http.get("/api/v1/runs", headers={"Authorization": "Bearer nope"})
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "unauthorized")
        assert http.get("/api/v1/runs", headers=bearer("viewer")).status_code == 200
        assert http.get("/api/v1/audit", headers=bearer("viewer")).status_code == 200
        document = http.get("/api/v1/openapi.json", headers=bearer("viewer")).json()
        assert "/api/v1/audit" in document["paths"]
        resume = document["paths"]["/api/v1/runs/{run_id}/resume"]["post"]
        assert "403" in resume["responses"] and "reason" in str(resume["requestBody"])
        denied = http.post(f"/api/v1/runs/{run_id}/cancel", headers=bearer("viewer"))
        assert (denied.status_code, denied.json()["error"]["code"]) == (403, "forbidden")
        assert wait_state(http, run_id, "parked")["state"] == "parked"  # nothing changed


def test_an_operator_acts_only_on_its_flows_and_is_the_audits_actor(live: LiveServer) -> None:
    with live.client() as http:
        deal = parked(http, "/hooks/deals", "d2")
        renewal = parked(http, "/hooks/renewals", "r2")
        outside = http.post(
            f"/api/v1/runs/{renewal}/cancel", headers=bearer("alice"), json={"reason": "x"}
        )
        assert outside.status_code == 403 and "renewal-sync" in outside.json()["error"]["message"]
        assert wait_state(http, renewal, "parked")
        fixed = http.post(
            f"/api/v1/runs/{deal}/resume",
            headers={**bearer("alice"), "X-Syncline-Actor": "mallory"},  # ignored
            json={"reason": "amount corrected per PO 4471", "data": {"id": "d2", "amount": 9}},
        )
        assert fixed.status_code == 200, fixed.text
        assert wait_state(http, deal, "succeeded")
        page = http.get("/api/v1/audit", params={"run": deal}, headers=bearer("viewer")).json()
        [entry] = page["entries"]
        assert (entry["actor"], entry["action"], entry["reason"]) == (
            "alice",
            "resume",
            "amount corrected per PO 4471",
        )
        assert len(entry["detail"]["data_sha256"]) == 64 and entry["at"].endswith("Z")
        by_alice = http.get("/api/v1/audit", params={"actor": "alice"}, headers=bearer("root"))
        assert [e["run_id"] for e in by_alice.json()["entries"]] == [deal]
        bad = http.post(f"/api/v1/runs/{deal}/retry", headers=bearer("root"), json={"data": 1})
        assert bad.status_code == 400  # retry takes no data
        assert http.get("/api/v1/audit", params={"since": "yesterday"}).status_code == 401
        since = http.get("/api/v1/audit", params={"since": "soon"}, headers=bearer("root"))
        assert since.status_code == 400


def test_the_tokens_file_reloads_and_a_broken_one_keeps_the_old_tokens(
    live: LiveServer, tmp_path: Path
) -> None:
    file = tmp_path / "tokens.yaml"
    with live.client() as http:
        file.write_text("- {name: viewer, role: boss, sha256: 00}\n")
        status = until_status(http, lambda s: not s["tokens"]["ok"])
        assert "role must be one of" in status["tokens"]["error"]
        assert http.get("/api/v1/runs", headers=bearer("viewer")).status_code == 200  # kept
        new = f"- {{name: bob, role: viewer, sha256: {token_digest('tok-bob').hex()}}}\n"
        file.write_text(tokens_yaml(new))
        until_status(http, lambda s: s["tokens"]["ok"] and s["tokens"]["count"] == 4)
        assert http.get("/api/v1/runs", headers={"Authorization": "Bearer tok-bob"}).is_success
        reloads = http.get(
            "/api/v1/audit", params={"action": "tokens.reload"}, headers=bearer("root")
        ).json()["entries"]
        assert [e["detail"]["ok"] for e in reloads][:2] == [True, False]
        assert all(e["actor"] == "syncline" for e in reloads)


def until_status(http: httpx.Client, check) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status = http.get("/api/v1/status", headers=bearer("root")).json()
        if check(status):
            return dict(status)
        time.sleep(0.1)
    raise AssertionError(f"status never matched: {status}")


def test_definition_reloads_are_audited(live: LiveServer) -> None:
    with live.client() as http:
        flows = live.config.project / "flows" / "deals.yaml"
        flows.write_text(flows.read_text() + "\n---\nnot: [valid\n")
        until_status(http, lambda s: s["reload"]["ok"] is False)

        def entries() -> list[dict]:  # type: ignore[type-arg]
            return list(http.get(
                "/api/v1/audit", params={"action": "reload"}, headers=bearer("viewer")
            ).json()["entries"])

        deadline = time.monotonic() + 15  # the status shows the rejection before it is audited
        while not entries() and time.monotonic() < deadline:
            time.sleep(0.05)
        entry = entries()[0]  # the newest
        assert entry["detail"]["ok"] is False and entry["detail"]["error"]


def test_audit_cli_lists_and_verify_catches_an_altered_row(live: LiveServer) -> None:
    with live.client() as http:
        run_id = parked(http, "/hooks/deals", "d3")
        http.post(f"/api/v1/runs/{run_id}/cancel", headers=bearer("alice"), json={"reason": "dup"})
    env = {**os.environ, "SYNCLINE_TOKEN": TOKENS["viewer"]}
    listing = syncline("audit", "--url", live.url, "--run", run_id, env=env)
    assert listing.returncode == 0 and "alice" in listing.stdout and '"dup"' in listing.stdout
    project = str(live.config.project)
    ok = syncline("audit", "verify", "--project", project)
    assert ok.returncode == 0 and "intact" in ok.stdout, ok.stderr
    db = sqlite3.connect(live.config.project / ".syncline" / "syncline.db")
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("UPDATE audit SET actor = 'someone-else' WHERE action = 'cancel'")
    db.commit()
    seq = db.execute("SELECT seq FROM audit WHERE action = 'cancel'").fetchone()[0]
    db.close()
    broken = syncline("audit", "verify", "--project", project)
    assert broken.returncode == 1 and f"audit entry {seq} is broken" in broken.stderr


def test_audit_verify_url_recomputes_a_running_servers_chain(live: LiveServer) -> None:
    with live.client() as http:
        for n in range(3):
            run_id = parked(http, "/hooks/deals", f"v{n}")
            http.post(f"/api/v1/runs/{run_id}/cancel", headers=bearer("alice"),
                      json={"reason": f"duplicate {n}"})  # fmt: skip
        page = http.get("/api/v1/audit/chain", params={"limit": 2}, headers=bearer("viewer"))
        assert page.status_code == 200 and len(page.json()["entries"]) == 2
        assert page.json()["next_after"] == page.json()["entries"][-1]["seq"]
        for bad in ({"after": "x"}, {"limit": "0"}, {"after": str(2**70)}):
            answer = http.get("/api/v1/audit/chain", params=bad, headers=bearer("viewer"))
            assert answer.status_code == 400, bad
        assert http.get("/api/v1/audit/chain").status_code == 401
    viewer = {**os.environ, "SYNCLINE_TOKEN": TOKENS["viewer"]}
    ok = syncline("audit", "verify", "--url", live.url, env=viewer)
    local = syncline("audit", "verify", "--project", str(live.config.project))
    assert ok.returncode == 0 and "intact" in ok.stdout, ok.stderr
    assert ok.stdout == local.stdout  # the same entries and head hash
    checked, head = console_chain_check(live), ok.stdout.split("head ")[1].strip()
    assert "The trail is intact" in checked and head in checked  # the console agrees
    db = sqlite3.connect(live.config.project / ".syncline" / "syncline.db")
    db.execute("DROP TRIGGER audit_no_delete")
    seqs = [row[0] for row in db.execute("SELECT seq FROM audit WHERE action = 'cancel'")]
    db.execute("DELETE FROM audit WHERE seq = ?", (seqs[1],))  # a middle entry removed
    db.commit()
    db.close()
    broken = syncline("audit", "verify", "--url", live.url, env=viewer)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"audit entry {seqs[1] + 1} is broken" in broken.stderr
    assert f"Audit entry {seqs[1] + 1} is broken" in console_chain_check(live)
    nobody = syncline("audit", "verify", "--url", live.url,
                      env={**os.environ, "SYNCLINE_TOKEN": "wrong"})  # fmt: skip
    assert nobody.returncode == 2 and "Traceback" not in nobody.stderr


def console_chain_check(live: LiveServer) -> str:
    """The console's Audit page after "Check the hash chain", as a viewer."""
    with live.client() as http:
        page = http.get("/console/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        http.post("/console/signin", data={"token": TOKENS["viewer"], "csrf": csrf.group(1)})
        return http.get("/console/audit", params={"verify": "1"}).text


def syncline(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        timeout=60,
    )
