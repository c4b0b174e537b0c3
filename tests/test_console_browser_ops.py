"""The console's operations pages in Debian's Chromium: a maintenance window of the ERP paused
and lifted with the keyboard alone, System health, a reconciliation run now and the shadow
results, with keys and field names holding `<script>` shown as text and never run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from authkit import TOKENS, wait_state
from browserkit import chromium, expect, new_page, shot, sign_in
from opskit import OLGA, XSS, OpsTarget, disagreeing_lists, ops_project, send_order
from runtime_kit import LiveTarget
from serverkit import LiveServer


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, OpsTarget]]:
    root = tmp_path_factory.mktemp("browser-ops")
    target = OpsTarget()
    served = LiveTarget(target)  # type: ignore[arg-type]  # any object with an app()
    with served:
        project = ops_project(root, served.url)
        with LiveServer(project, secrets={}, tokens_file=root / "tokens.yaml") as server:
            yield server, target


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as launched:
        yield launched


def test_a_maintenance_window_paused_and_lifted_with_the_keyboard(ops, browser) -> None:  # type: ignore[no-untyped-def]
    live, target = ops
    with new_page(browser) as page:
        sign_in(page, live.url, OLGA)
        page.keyboard.press("Tab")  # the first stop skips the navigation
        expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
        pause = page.get_by_role("link", name="Pause system erp", exact=True)
        pause.focus()
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Pause system erp", exact=True)).to_be_visible()
        shot(page, "ops-pause-form")
        # no reason: the browser asks for it first
        page.get_by_role("button", name="Pause system erp", exact=True).click()
        expect(page.get_by_label("Reason")).to_be_focused()
        page.get_by_label("Reason").fill("ERP upgrade <b>18:00</b>")
        page.keyboard.press("Enter")
        expect(page.get_by_role("status")).to_contain_text("Paused: no call goes to the System")
        erp = page.get_by_role("row", name="erp", exact=False).filter(
            has=page.get_by_role("link", name="Resume system erp", exact=True))
        expect(erp).to_contain_text("Paused")
        expect(erp).to_contain_text("ERP upgrade <b>18:00</b>")  # the reason, as text
        with live.client() as api:
            writes = target.erp_writes
            run_id = send_order(api, 7)
            assert wait_state(api, run_id, "waiting")["reason"]["code"] == "SYSTEM_PAUSED"
        assert target.erp_writes == writes
        page.goto(f"{live.url}/console")
        expect(page.locator(".held-runs")).to_contain_text("1 for a paused System")
        shot(page, "ops-overview-paused")
        page.get_by_role("link", name="Resume system erp", exact=True).click()
        page.get_by_label("Reason").fill("upgrade done")
        page.get_by_role("button", name="Resume system erp", exact=True).click()
        expect(page.get_by_role("status")).to_contain_text("Resumed")
        with live.client() as api:
            wait_state(api, run_id, "succeeded")
        page.get_by_role("link", name="Audit", exact=True).click()
        expect(page.locator("table")).to_contain_text("resume-system system erp")
        expect(page.locator("table")).to_contain_text("ERP upgrade <b>18:00</b>")


def test_a_viewer_sees_health_but_no_switch(ops, browser) -> None:  # type: ignore[no-untyped-def]
    live, _ = ops
    with new_page(browser) as page:
        sign_in(page, live.url, TOKENS["viewer"])
        expect(page.get_by_role("heading", name="System health")).to_be_visible()
        assert page.get_by_role("link", name="Pause system erp", exact=True).count() == 0
        assert page.get_by_role("link", name="Pause flow order-sync").count() == 0
        page.goto(f"{live.url}/console/systems/erp/pause")
        expect(page.get_by_role("alert")).to_contain_text("viewers can look")


def test_reconciliation_and_shadow_pages_show_hostile_values_as_text(ops, browser) -> None:  # type: ignore[no-untyped-def]
    live, target = ops
    disagreeing_lists(target)
    with live.client() as api:
        for n in (1, 2, 3):
            wait_state(api, send_order(api, n), "succeeded")
    with new_page(browser) as page:
        sign_in(page, live.url, OLGA)
        page.get_by_role("link", name="Reconciliations", exact=True).click()
        page.get_by_role("link", name="orders-vs-subscriptions").first.click()
        page.get_by_label("Reason").fill("month end")
        page.get_by_role("button", name="Run now").click()
        expect(page.get_by_role("status")).to_contain_text("Ran now")
        expect(page.get_by_text(XSS, exact=True)).to_be_visible()
        expect(page.get_by_role("cell", name="SO-9")).to_be_visible()
        assert page.evaluate("window.pwned") is None
        shot(page, "ops-reconciliation")
        page.get_by_role("link", name="Shadow", exact=True).click()
        row = page.get_by_role("row").filter(
            has=page.get_by_role("rowheader", name="order-sync · erp"))
        expect(row).to_contain_text("erp-cloud")
        expect(row.get_by_text(XSS, exact=True)).to_be_visible()
        assert page.evaluate("window.pwned") is None
        shot(page, "ops-shadow")
        page.goto(f"{live.url}/console/shadow?runs=lots")
        expect(page.get_by_role("alert")).to_contain_text("whole number")
    with new_page(browser, 390, 844) as phone:
        sign_in(phone, live.url, OLGA)
        phone.goto(f"{live.url}/console/shadow")
        shot(phone, "ops-shadow-phone")
