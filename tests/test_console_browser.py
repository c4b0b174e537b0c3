"""The console in a real browser: Debian's Chromium driven by Playwright against the real server
on a real socket, with runs parked by a real flow. Screenshots of each page go to
tests/artifacts/screenshots (CI prints the folder)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from authkit import TOKENS, auth_project, bearer, deliver, wait_state
from serverkit import LiveServer

CHROMIUM = os.environ.get("SYNCLINE_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).parent / "artifacts" / "screenshots"

if os.environ.get("SYNCLINE_REQUIRE_BROWSER"):  # CI: a missing browser fails, never skips
    import playwright.sync_api as playwright_api

    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM} (apt-get install chromium)"
else:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}", allow_module_level=True)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("browser")
    project = auth_project(root)
    with LiveServer(project, tokens_file=root / "tokens.yaml") as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def parked(live: LiveServer, deal_id: str, name: str = "Acme Corp renewal") -> str:
    with live.client() as http:
        run_id = deliver(http, "/hooks/deals", {"id": deal_id, "name": name, "amount": -250})
        wait_state(http, run_id, "parked")
    return run_id


def sign_in(page, live: LiveServer, name: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{live.url}/console")
    page.get_by_label("Token").fill(TOKENS[name])
    page.get_by_role("button", name="Sign in").click()
    playwright_api.expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_an_operator_resumes_a_parked_run_with_corrected_data(page, live: LiveServer) -> None:
    expect = playwright_api.expect
    run_id = parked(live, "b-1")
    page.goto(f"{live.url}/console")
    shot(page, "signin")
    sign_in(page, live, "alice")
    shot(page, "overview")
    page.get_by_role("link", name="Exceptions").click()
    expect(page.get_by_role("heading", name="Exceptions")).to_be_visible()
    expect(page.get_by_text("BAD_AMOUNT")).to_be_visible()
    shot(page, "exceptions")
    page.get_by_role("link", name=run_id[-12:]).click()
    expect(page.get_by_text("the amount must be positive").first).to_be_visible()
    shot(page, "run-parked")
    resume = page.locator("form[action$='/resume']")
    resume.get_by_label("Corrected data (JSON)").fill(
        json.dumps({"id": "b-1", "name": "Acme Corp renewal", "amount": 250})
    )
    resume.get_by_label("Reason").fill("Amount sign fixed per PO 4471")
    resume.get_by_role("button", name="Resume").click()
    expect(page.get_by_role("status")).to_contain_text("Resumed")
    with live.client() as http:
        wait_state(http, run_id, "succeeded")
    page.reload()
    expect(page.locator(".facts .pill").first).to_have_text("Succeeded")
    trail = page.locator("table").last
    expect(trail).to_contain_text("alice")
    expect(trail).to_contain_text("Amount sign fixed per PO 4471")
    timeline = page.locator("#generation-1")
    expect(timeline).to_contain_text("Generation 1: resumed by alice")
    expect(timeline).to_contain_text("corrected data #1")
    expect(page.locator("#generation-0")).to_contain_text("BAD_AMOUNT")
    shot(page, "run-succeeded")
    page.get_by_role("link", name="Runs", exact=True).click()
    shot(page, "runs")
    page.get_by_role("link", name="Audit").click()
    expect(page.locator("table")).to_contain_text("alice")
    shot(page, "audit")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live.url}/console/runs/{run_id}")
    shot(page, "run-phone")


def test_a_viewer_gets_no_buttons_and_a_403_when_posting_anyway(page, live: LiveServer) -> None:
    run_id = parked(live, "b-2")
    sign_in(page, live, "viewer")
    page.goto(f"{live.url}/console/runs/{run_id}")
    for name in ("Resume", "Retry", "Cancel", "Replay"):
        assert page.get_by_role("button", name=name, exact=True).count() == 0
    shot(page, "run-viewer")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    answer = page.request.post(
        f"{live.url}/console/runs/{run_id}/cancel", form={"csrf": csrf or "", "reason": "x"}
    )
    assert answer.status == 403 and "viewers can look" in answer.text()
    with live.client() as http:
        assert wait_state(http, run_id, "parked", bearer("root"))["state"] == "parked"


def test_a_stored_xss_payload_renders_as_text(page, live: LiveServer) -> None:
    payload = "<script>window.pwned=1</script><img src=x onerror=window.pwned=2>"
    run_id = parked(live, "b-3", name=payload)
    sign_in(page, live, "root")
    page.goto(f"{live.url}/console/runs/{run_id}")
    playwright_api.expect(page.get_by_text(payload).first).to_be_visible()
    assert page.evaluate("window.pwned") is None
    shot(page, "run-xss")


def test_a_post_without_the_csrf_token_is_refused(page, live: LiveServer) -> None:
    run_id = parked(live, "b-4")
    sign_in(page, live, "root")
    answer = page.request.post(
        f"{live.url}/console/runs/{run_id}/cancel", form={"reason": "no token"}
    )
    assert answer.status == 403 and "security token" in answer.text()
    with live.client() as http:
        assert wait_state(http, run_id, "parked")["state"] == "parked"
