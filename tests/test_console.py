"""The console over a real socket with a plain HTTP client: sign-in, sessions, CSRF, roles,
and every kind of bad input answered with a clear 4xx page and no change. (The browser tests
in test_console_browser.py drive the same pages in Chromium.)"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from authkit import TOKENS, auth_project, bearer, deliver, wait_state
from serverkit import LiveServer

from engine.server.console.session import COOKIE, Sessions
from engine.tls import tls_context

TLS = tls_context()  # one CA load for the module, not one per client (50-80 ms each)



@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("console")
    project = auth_project(root)
    with LiveServer(project, tokens_file=root / "tokens.yaml", session_key="k" * 32) as server:
        yield server


@contextlib.contextmanager
def signed_in(live: LiveServer, name: str) -> Iterator[httpx.Client]:
    with live.client(follow_redirects=False) as http:
        page = http.get("/console/signin")
        done = http.post(
            "/console/signin",
            data={"token": TOKENS[name], "csrf": csrf_of(page), "next": "/console"},
        )
        assert done.status_code == 303, done.text
        yield http


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def parked(live: LiveServer, deal_id: str, name: str = "Acme", path: str = "/hooks/deals") -> str:
    with live.client() as http:
        run_id = deliver(http, path, {"id": deal_id, "name": name, "amount": -1})
        wait_state(http, run_id, "parked")
    return run_id


def state(live: LiveServer, run_id: str) -> str:
    with live.client() as http:
        return str(http.get(f"/api/v1/runs/{run_id}", headers=bearer("root")).json()["state"])


def test_pages_need_a_session_and_carry_the_security_headers(live: LiveServer) -> None:
    with live.client(follow_redirects=False) as http:
        assert http.get("/console").status_code == 303
        signin = http.get("/console/signin")
        assert signin.status_code == 200 and '<label for="token">Token</label>' in signin.text
        csp = signin.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src" not in csp
        assert "unsafe-inline" not in csp and signin.headers["x-frame-options"] == "DENY"
        assert "httponly" in signin.headers["set-cookie"].lower()
    with signed_in(live, "viewer") as http:
        cookie = http.cookies.jar
        session = next(c for c in cookie if c.name == COOKIE)
        assert session.has_nonstandard_attr("HttpOnly")
        assert session.get_nonstandard_attr("SameSite") == "strict"
        for path in ("/console", "/console/exceptions", "/console/runs", "/console/audit"):
            page = http.get(path)
            assert page.status_code == 200, (path, page.text)
            assert page.headers["x-frame-options"] == "DENY"
        assert http.get("/console/static/console.css").status_code == 200


def test_wrong_token_forged_and_expired_sessions_are_401_pages(live: LiveServer) -> None:
    with live.client(follow_redirects=False) as http:
        page = http.get("/console/signin")
        wrong = http.post("/console/signin", data={"token": "nope", "csrf": csrf_of(page)})
        assert wrong.status_code == 401 and "That token is not valid." in wrong.text
        no_nonce = http.post("/console/signin", data={"token": TOKENS["viewer"], "csrf": "x"})
        assert no_nonce.status_code == 403
    forged = Sessions("another key").issue(_principal(live, "root"))
    expired = Sessions("k" * 32).issue(_principal(live, "root"), now=time.time() - 9 * 3600)
    for cookie, words in ((forged, "not valid"), (expired, "expired"), ("garbage", "not valid")):
        with live.client(cookies={COOKIE: cookie}) as http:
            page = http.get("/console/runs")
            assert page.status_code == 401 and words in page.text, page.text


def _principal(live: LiveServer, name: str):  # type: ignore[no-untyped-def]
    from serverkit import state_of

    table = state_of(live).tokens.table
    return table.identify(TOKENS[name])


def test_viewer_sees_no_buttons_and_cannot_post(live: LiveServer) -> None:
    run_id = parked(live, "c-view")
    with signed_in(live, "viewer") as http:
        page = http.get(f"/console/runs/{run_id}")
        assert page.status_code == 200
        assert '<button type="submit">Resume</button>' not in page.text
        refused = http.post(
            f"/console/runs/{run_id}/cancel", data={"csrf": csrf_of(page), "reason": "x"}
        )
        assert refused.status_code == 403 and "viewers can look" in refused.text
    assert state(live, run_id) == "parked"


def test_missing_csrf_bad_json_other_flows_and_unknown_runs_change_nothing(
    live: LiveServer,
) -> None:
    run_id = parked(live, "c-bad")
    renewal = parked(live, "c-ren", path="/hooks/renewals")
    with signed_in(live, "alice") as http:
        page = http.get(f"/console/runs/{run_id}")
        assert 'for="data">Corrected data (JSON)</label>' in page.text
        token = csrf_of(page)
        no_csrf = http.post(f"/console/runs/{run_id}/resume", data={"reason": "x"})
        assert no_csrf.status_code == 403 and "security token" in no_csrf.text
        bad_json = http.post(
            f"/console/runs/{run_id}/resume",
            data={"csrf": token, "data": "{amount: 5", "reason": "fix"},
        )
        assert bad_json.status_code == 400 and "not valid JSON" in bad_json.text
        assert "{amount: 5" in bad_json.text  # what they typed is kept
        outside = http.post(f"/console/runs/{renewal}/cancel", data={"csrf": token})
        assert outside.status_code == 403 and "renewal-sync" in outside.text
        unknown = http.get("/console/runs/no-such-run")
        assert unknown.status_code == 404 and "no-such-run" in unknown.text
        posted = http.post("/console/runs/no-such-run/resume", data={"csrf": token})
        assert posted.status_code == 404
        bulk = http.post(
            "/console/exceptions/bulk",
            data={"csrf": token, "action": "resume", "run": [run_id, renewal]},
        )
        assert bulk.status_code == 403  # one run outside alice's flows: none is touched
    assert (state(live, run_id), state(live, renewal)) == ("parked", "parked")


def test_a_payload_with_markup_shows_as_text(live: LiveServer) -> None:
    run_id = parked(live, "c-xss", name="<script>alert(1)</script><img src=x onerror=alert(2)>")
    with signed_in(live, "root") as http:
        page = http.get(f"/console/runs/{run_id}")
        assert "<script>alert(1)" not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_an_operator_resumes_with_corrected_data_and_the_audit_names_them(
    live: LiveServer,
) -> None:
    run_id = parked(live, "c-ok")
    with signed_in(live, "alice") as http:
        page = http.get(f"/console/runs/{run_id}")
        done = http.post(
            f"/console/runs/{run_id}/resume",
            data={
                "csrf": csrf_of(page),
                "data": '{"id": "c-ok", "name": "Acme", "amount": 12}',
                "reason": "amount fixed in the ERP",
            },
        )
        assert done.status_code == 303
        with live.client() as api:
            wait_state(api, run_id, "succeeded")
        after = http.get(done.headers["location"])
        assert "Resumed" in after.text and "amount fixed in the ERP" in after.text
        assert "alice" in after.text
        # the timeline by generation: the parked first pass is still there, then the resume
        timeline = after.text[after.text.index("<h2>Timeline</h2>"):after.text.index("<h2>Steps")]
        assert "Generation 0: accepted" in timeline and "Generation 1: resumed by alice" in timeline
        assert timeline.index("BAD_AMOUNT") < timeline.index("Generation 1")
        assert "corrected data #1" in timeline and "Corrected data #1" in after.text


def test_bulk_retry_of_a_group(live: LiveServer, tmp_path: Path) -> None:
    ids = [parked(live, f"c-bulk-{n}") for n in range(2)]
    with signed_in(live, "root") as http:
        page = http.get("/console/exceptions")
        assert "BAD_AMOUNT" in page.text and "team finance" in page.text
        done = http.post(
            "/console/exceptions/bulk",
            data={"csrf": csrf_of(page), "action": "resume", "run": ids, "reason": "batch"},
        )
        assert done.status_code == 200 and done.text.count("queued again") == 2
    # resumed without corrected data, they park again on the same rule
    with live.client() as api:
        for run_id in ids:
            wait_state(api, run_id, "parked")
        entries = api.get(
            "/api/v1/audit", params={"actor": "root", "action": "resume"}, headers=bearer("root")
        ).json()["entries"]
    assert {e["run_id"] for e in entries} >= set(ids)


@pytest.mark.slow
def test_demo_serve_leaves_the_exceptions_to_a_person_in_the_console(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "demo", "--serve", "--events", "8"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            check_demo_console(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def check_demo_console(proc: subprocess.Popen[str]) -> None:
    """Sign in with the token the demo prints; its exceptions wait in the console."""
    lines: dict[str, str] = {}
    assert proc.stderr is not None
    for line in proc.stderr:
        key, _, value = line.strip().partition(":")
        if key in ("console", "token"):
            lines[key] = value.split()[0]
        if len(lines) == 2:
            break
    assert set(lines) == {"console", "token"}, lines
    base = lines["console"].removesuffix("/console")
    with httpx.Client(verify=TLS, base_url=base, follow_redirects=False, timeout=20) as http:
        page = http.get("/console/signin")
        done = http.post("/console/signin", data={"token": lines["token"], "csrf": csrf_of(page)})
        assert done.status_code == 303
        exceptions = http.get("/console/exceptions")
        assert exceptions.status_code == 200 and "Resume selected" in exceptions.text
        assert "team revops" in exceptions.text
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0


def test_behind_https_the_cookie_is_secure_and_signing_out_ends_the_session(
    live: LiveServer,
) -> None:
    with live.client(follow_redirects=False) as http:
        page = http.get("/console/signin")
        done = http.post(
            "/console/signin",
            data={"token": TOKENS["viewer"], "csrf": csrf_of(page)},
            headers={"X-Forwarded-Proto": "https"},  # a TLS proxy on loopback, trusted
        )
        cookie = done.headers["set-cookie"].lower()
        assert "secure" in cookie and "samesite=strict" in cookie and "httponly" in cookie
    with signed_in(live, "viewer") as http:
        page = http.get("/console")
        out = http.post("/console/signout", data={"csrf": csrf_of(page)})
        assert out.status_code == 303
        assert http.get("/console").status_code == 303  # back to signing in


def test_a_token_removed_from_the_file_ends_its_sessions(tmp_path: Path) -> None:
    from serverkit import state_of

    project = auth_project(tmp_path)
    file = tmp_path / "tokens.yaml"
    with LiveServer(project, tokens_file=file) as server, signed_in(server, "alice") as http:
        assert http.get("/console").status_code == 200
        file.write_text("\n".join(file.read_text().splitlines()[::2]) + "\n")  # alice goes
        assert state_of(server).tokens.reload().ok
        ended = http.get("/console")
        assert ended.status_code == 401 and "no longer valid" in ended.text


def test_without_any_token_the_sign_in_page_says_how_to_make_one(tmp_path: Path) -> None:
    with LiveServer(auth_project(tmp_path)) as server, server.client() as http:
        page = http.get("/console/signin")
        assert "has no tokens that can sign in" in page.text


def test_the_overview_shows_the_business_metrics_and_their_objectives(live: LiveServer) -> None:
    with signed_in(live, "viewer") as http:
        before = http.get("/console").text
    parked(live, "metric-1")
    with signed_in(live, "viewer") as http:
        page = http.get("/console").text
    assert "Business metrics" in page and "Deals parked for a person" in page
    assert "90% under 1 h" in page  # the objective in words
    count = re.compile(r"Deals parked for a person.*?<td class=\"num\">(\d+)", re.S)
    now, earlier = count.search(page), count.search(before)
    assert now and earlier and int(now.group(1)) == int(earlier.group(1)) + 1


def test_runs_filter_by_reason_and_time_and_refuse_bad_filters(live: LiveServer) -> None:
    parked_id = parked(live, "f-1")
    with live.client() as http:  # a deal that goes through: no reason
        fine = deliver(http, "/hooks/deals", {"id": "f-2", "name": "Fine", "amount": 5})
        wait_state(http, fine, "succeeded")
    with signed_in(live, "viewer") as http:
        by_reason = http.get("/console/runs", params={"reason": "BAD_AMOUNT"})
        assert by_reason.status_code == 200
        assert parked_id[-12:] in by_reason.text and fine[-12:] not in by_reason.text
        assert 'value="BAD_AMOUNT"' in by_reason.text  # the form keeps the filter
        future = http.get("/console/runs", params={"since": "2999-01-01"})
        assert "No runs match" in future.text and parked_id[-12:] not in future.text
        past = http.get("/console/runs", params={"until": "2000-01-01T00:00"})
        assert "No runs match among the" in past.text
        window = http.get("/console/runs", params={"since": "2000-01-01", "until": "2999-01-01",
                                                   "flow": "deal-to-order"})  # fmt: skip
        assert parked_id[-12:] in window.text and fine[-12:] in window.text
        for bad in ({"since": "yesterday"}, {"since": "nan"}, {"until": "1e400"},
                    {"state": "exploded"}, {"cursor": "abc"}):
            page = http.get("/console/runs", params=bad)
            assert page.status_code == 400 and "That search was not understood" in page.text
