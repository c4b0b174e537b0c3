"""The console's operations pages over a real socket: pausing and resuming Systems and flows,
System health, Reconciliations (results and Run now) and Shadow results, against a real HTTP
target; every refusal a clear 4xx page with nothing changed, every hostile value escaped."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator

import httpx
import pytest
from authkit import TOKENS, bearer, wait_state
from opskit import (
    OLGA,
    XSS,
    OpsTarget,
    disagreeing_lists,
    ops_project,
    send_event,
    send_order,
)
from runtime_kit import LiveTarget
from serverkit import LiveServer


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, OpsTarget]]:
    root = tmp_path_factory.mktemp("ops")
    target = OpsTarget()
    served = LiveTarget(target)  # type: ignore[arg-type]  # any object with an app()
    with served:
        project = ops_project(root, served.url)
        with LiveServer(project, secrets={}, tokens_file=root / "tokens.yaml") as server:
            yield server, target


@contextlib.contextmanager
def signed_in(live: LiveServer, token: str) -> Iterator[httpx.Client]:
    with live.client(follow_redirects=False) as http:
        page = http.get("/console/signin")
        done = http.post("/console/signin",
                         data={"token": token, "csrf": csrf_of(page), "next": "/console"})
        assert done.status_code == 303, done.text
        yield http


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def post_form(http: httpx.Client, path: str, **fields: str) -> httpx.Response:
    """GET `path`'s page for its CSRF token (from any page when `path` has none), then POST."""
    page = http.get(path if not path.endswith("/run") else path.rsplit("/", 1)[0])
    return http.post(path, data={"csrf": csrf_of(page), **fields})


def audit(live: LiveServer, action: str) -> list[dict]:
    with live.client() as http:
        answer = http.get("/api/v1/audit", params={"action": action}, headers=bearer("root"))
        return list(answer.json()["entries"])


def test_an_operator_pauses_and_resumes_a_system_with_a_reason(ops) -> None:  # type: ignore[no-untyped-def]
    live, target = ops
    gates = live.runtime.gates
    with signed_in(live, OLGA) as http:
        form = http.get("/console/systems/erp/pause")
        assert form.status_code == 200 and '<label for="reason">Reason</label>' in form.text
        assert ">Pause system erp</button>" in form.text
        # no CSRF token, then no reason: refused, nothing paused
        refused = http.post("/console/systems/erp/pause", data={"reason": "maintenance"})
        assert refused.status_code == 403 and "security token" in refused.text
        empty = http.post("/console/systems/erp/pause", data={"csrf": csrf_of(form), "reason": " "})
        assert empty.status_code == 400 and "Say why" in empty.text
        assert "erp" not in gates.systems
        done = post_form(http, "/console/systems/erp/pause", reason="ERP upgrade 18:00-20:00")
        assert done.status_code == 303
        assert done.headers["location"] == "/console?done=pause-system#systems"
        assert gates.systems["erp"].actor == "olga"
        writes, shadowed = target.erp_writes, target.cloud_writes
        with live.client() as api:
            run_id = send_order(api, 100)
            held = wait_state(api, run_id, "waiting")
        assert held["reason"]["code"] == "SYSTEM_PAUSED" and target.erp_writes == writes
        assert target.cloud_writes == shadowed  # nor does its shadow candidate get the write
        overview = http.get("/console")
        assert "Paused: no call goes to the System" not in overview.text  # no ?done= given
        row = overview.text.split("<th scope=\"row\">erp</th>", 1)[1].split("</tr>", 1)[0]
        assert "Paused" in row and "ERP upgrade 18:00-20:00" in row and "by olga" in row
        assert 'aria-label="Resume system erp"' in row
        assert "<strong>1</strong> for a paused System" in overview.text
        again = post_form(http, "/console/systems/erp/pause", reason="twice")
        assert again.status_code == 409 and "already paused" in again.text
        resumed = post_form(http, "/console/systems/erp/resume", reason="upgrade done")
        assert resumed.status_code == 303 and "erp" not in gates.systems
        with live.client() as api:
            wait_state(api, run_id, "succeeded")
        missing = post_form(http, "/console/systems/mainframe/pause", reason="x")
        assert missing.status_code == 404 and "no system &#39;mainframe&#39;" in missing.text
        nothing = post_form(http, "/console/systems/erp/resume", reason="x")
        assert nothing.status_code == 409 and "is not paused" in nothing.text
    entries = audit(live, "pause-system")
    assert (entries[0]["actor"], entries[0]["reason"]) == ("olga", "ERP upgrade 18:00-20:00")
    assert audit(live, "resume-system")[0]["reason"] == "upgrade done"


def test_flow_pauses_respect_roles_and_flow_globs(ops) -> None:  # type: ignore[no-untyped-def]
    live, _ = ops
    gates = live.runtime.gates
    with signed_in(live, TOKENS["viewer"]) as http:
        page = http.get("/console")
        assert "/console/flows/order-sync/pause" not in page.text  # no buttons for a viewer
        forbidden = http.post("/console/flows/order-sync/pause",
                              data={"csrf": csrf_of(page), "reason": "x"})
        assert forbidden.status_code == 403 and "viewers can look" in forbidden.text
    with signed_in(live, TOKENS["alice"]) as http:  # an operator of deal-* flows only
        page = http.get("/console")
        assert "/console/flows/order-sync/pause" not in page.text
        assert "/console/systems/erp/pause" not in page.text
        assert http.get("/console/flows/order-sync/pause").status_code == 403
        assert http.get("/console/systems/erp/pause").status_code == 403
    assert "order-sync" not in gates.flows
    with signed_in(live, OLGA) as http:
        assert post_form(http, "/console/flows/order-sync/pause", reason="bad data upstream"
                         ).status_code == 303  # fmt: skip
        with live.client() as api:
            run_id = send_order(api, 200)
            time.sleep(0.3)
            assert wait_state(api, run_id, "waiting")["reason"]["code"] == "FLOW_PAUSED"
        overview = http.get("/console?done=pause-flow")
        assert "Paused: the flow accepts and stores deliveries" in overview.text
        assert 'aria-label="Resume flow order-sync"' in overview.text
        assert '<small class="held">1 held</small>' in overview.text
        assert post_form(http, "/console/flows/order-sync/resume", reason="fixed"
                         ).status_code == 303  # fmt: skip
        with live.client() as api:
            wait_state(api, run_id, "succeeded")
        assert http.get("/console/flows/order-sync/explode").status_code == 404
        assert http.get("/console/flows/no-such-flow/pause").status_code == 404


def test_reconciliation_results_and_run_now(ops) -> None:  # type: ignore[no-untyped-def]
    live, target = ops
    disagreeing_lists(target)
    with signed_in(live, TOKENS["viewer"]) as http:
        listing = http.get("/console/reconciliations")
        assert listing.status_code == 200 and "never ran" in listing.text
        page = http.get("/console/reconciliations/orders-vs-subscriptions")
        assert 'action="/console/reconciliations/orders-vs-subscriptions/run"' not in page.text
        forbidden = http.post("/console/reconciliations/orders-vs-subscriptions/run",
                              data={"csrf": csrf_of(page)})
        assert forbidden.status_code == 403
    with signed_in(live, OLGA) as http:
        no_csrf = http.post("/console/reconciliations/orders-vs-subscriptions/run",
                            data={"reason": "no token"})
        assert no_csrf.status_code == 403
        with live.client() as api:
            results = api.get("/api/v1/reconciliations", headers=bearer("root")).json()
        assert results["reconciliations"] == []
        ran = post_form(http, "/console/reconciliations/orders-vs-subscriptions/run",
                        reason="billing import replayed")
        assert ran.status_code == 303, ran.text
        detail = http.get(ran.headers["location"])
        text = detail.text
        assert "Ran now: this is its result." in text and "Mismatches: parked for a person" in text
        assert "Only in billing: missing in erp (1)" in text and "<code>SO-9</code>" in text
        assert "Only in erp: missing in billing (1)" in text
        assert "<code>&lt;script&gt;window.pwned=1&lt;/script&gt;</code>" in text
        assert XSS not in text
        assert "<td>amount</td><td><code>250</code></td><td><code>240</code></td>" in text
        listing = http.get("/console/reconciliations")
        assert "1 only in billing, 1 only in erp, 1 with fields that differ" in listing.text
        assert http.get("/console/reconciliations/nope").status_code == 404
        unknown = http.get("/console/reconciliations/orders-vs-subscriptions?tick=x")
        assert unknown.status_code == 404 and "no result of the tick" in unknown.text
        assert post_form(http, "/console/reconciliations/nope/run").status_code == 404
    entry = audit(live, "reconcile")[0]
    assert (entry["actor"], entry["reason"]) == ("olga", "billing import replayed")
    assert entry["detail"]["counts"]["field"] == 1


def test_shadow_results_show_agreement_and_differing_fields(ops) -> None:  # type: ignore[no-untyped-def]
    live, _ = ops
    with live.client() as api:
        for n in (1, 2, 3, 4):
            wait_state(api, send_order(api, n), "succeeded")
    with signed_in(live, TOKENS["viewer"]) as http:
        page = http.get("/console/shadow")
        assert page.status_code == 200, page.text
        text = page.text
        row = text.split('<th scope="row">order-sync · erp</th>', 1)[1].split("</tr>", 1)[0]
        assert "erp-cloud" in row and "total</code> ×" in row
        assert "<code>&lt;script&gt;window.pwned=1&lt;/script&gt;</code>" in row
        assert XSS not in text
        assert "Latest disagreements" in text and "mismatch" in text
        assert http.get("/console/shadow?runs=abc").status_code == 400
        assert http.get("/console/shadow?runs=0").status_code == 400
        assert http.get("/console/shadow?flow=nope").status_code == 404
        overview = http.get("/console")
        row = overview.text.split('<th scope="row">erp-cloud</th>', 1)[1].split("</tr>", 1)[0]
        assert "answered" in row and "avg" in row


def test_the_overview_shows_system_health(ops) -> None:  # type: ignore[no-untyped-def]
    live, _ = ops
    with signed_in(live, TOKENS["viewer"]) as http:
        overview = http.get("/console")
    assert 'id="systems"' in overview.text and "System health" in overview.text
    row = overview.text.split('<th scope="row">billing</th>', 1)[1].split("</tr>", 1)[0]
    assert "badge" in row
    assert "/console/systems/billing/pause" not in row  # a viewer gets no buttons
    with signed_in(live, TOKENS["viewer"]) as http:
        lost = http.get("/console/no/such/page")
        assert lost.status_code == 404 and "no page at this address" in lost.text
        assert lost.headers["content-security-policy"].startswith("default-src 'none'")


def test_an_open_circuit_shows_on_the_overview(ops) -> None:  # type: ignore[no-untyped-def]
    live, _ = ops
    with live.client() as api:
        for n in range(2):
            send_event(api, "com.acme.ledger", f"ledger-{n}", {"n": n})
    deadline = time.monotonic() + 15
    while live.runtime.gates.circuit_state("ledger") != "open":
        assert time.monotonic() < deadline, "the ledger's circuit never opened"
        time.sleep(0.05)
    with signed_in(live, TOKENS["viewer"]) as http:
        overview = http.get("/console")
    row = overview.text.split('<th scope="row">ledger</th>', 1)[1].split("</tr>", 1)[0]
    assert "Circuit open: no calls" in row and "a probe goes at" in row
    assert "server error (5xx) 2" in row
    healthy = overview.text.split("Systems healthy", 1)[0].rsplit('class="n">', 1)[1]
    assert healthy.startswith("3 of 4"), healthy  # only the ledger is unwell


def test_two_replicas_on_postgresql_show_the_same_switches_and_results(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str
) -> None:
    root = tmp_path_factory.mktemp("replicas")
    target = OpsTarget()
    disagreeing_lists(target)
    served = LiveTarget(target)  # type: ignore[arg-type]  # any object with an app()
    path = "/console/reconciliations/orders-vs-subscriptions/run"
    with served:
        project = ops_project(root, served.url)
        tokens = root / "tokens.yaml"
        with LiveServer(project, secrets={}, tokens_file=tokens, database=postgres_url) as a, \
                LiveServer(project, secrets={}, tokens_file=tokens, database=postgres_url) as b, \
                signed_in(a, OLGA) as on_a, signed_in(b, TOKENS["viewer"]) as on_b:
            assert post_form(on_a, "/console/systems/billing/pause",
                             reason="billing migration").status_code == 303  # fmt: skip
            deadline = time.monotonic() + 15
            while True:  # the other replica shows the pause once it has read the switches
                page = on_b.get("/console").text
                row = page.split('<th scope="row">billing</th>', 1)[1].split("</tr>", 1)[0]
                if "billing migration" in row:
                    break
                assert time.monotonic() < deadline, row
                time.sleep(0.2)
            held = post_form(on_a, path, reason="during the migration")
            assert held.status_code == 303  # a side it may not read is the result's error
            result = on_a.get(held.headers["location"]).text
            assert "Could not read a side" in result and "SYSTEM_PAUSED" in result
            assert post_form(on_a, "/console/systems/billing/resume",
                             reason="migrated").status_code == 303  # fmt: skip
            assert post_form(on_a, path, reason="after it").status_code == 303
            listing = on_b.get("/console/reconciliations").text
            assert "1 only in billing, 1 only in erp, 1 with fields that differ" in listing
            assert "Could not read a side" in listing  # the earlier result, in the history
            assert "The trail is intact" in on_b.get("/console/audit?verify=1").text
