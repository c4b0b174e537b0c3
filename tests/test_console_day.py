"""A business day of the reference integration, resolved from the console alone: the demo plays
a day against the sandbox systems and leaves its exceptions (as `syncline demo --serve` does);
an operator finds them in Exceptions grouped by reason and owner, reads the ERP's error on each
run, has the master data fixed in the ERP, resumes the group with a reason, checks the runs,
re-runs the reconciliation that had parked, and finds it all in the audit trail. In Debian's
Chromium, with screenshots at desktop and phone width."""

from __future__ import annotations

import asyncio
import io
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browserkit import chromium, expect, new_page, shot, sign_in

from engine.demo import Progress, play_day
from engine.demo.scenario import LIST_PRICES, build_scenario
from engine.demo.stack import Stack, locate_project
from engine.tls import tls_context

TLS = tls_context()  # one CA load for the module, not one per client (50-80 ms each)


pytestmark = pytest.mark.slow
OPERATOR = "demo-operator"


class DemoDay:
    """The demo's stack in an event loop of its own thread, a day played, nothing resolved."""

    def __init__(self, workdir: Path, events: int = 10, seed: int = 7) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.stack = Stack(locate_project(None), workdir)
        self.scenario = build_scenario(events, seed)

    def run(self, work: Any, timeout: float = 240) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def __enter__(self) -> DemoDay:
        self.thread.start()
        self.run(self.stack.start())
        self.run(play_day(self.stack, self.scenario, Progress(io.StringIO()), resolve=False))
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self.stack.stop(), 60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def fix_in_the_erp(self, error: dict[str, Any]) -> str:
        """What the ERP's administrator does about its error, in the ERP that refused (the
        sandboxes' admin endpoints): register the missing tax nexus (or the cloud ERP's tax
        registration), or add the missing item to the catalog."""
        urls, secrets = self.stack.sandbox.urls, self.stack.secrets
        meta = error.get("meta") or {}
        if error["code"] in ("tax_registration_missing", "item_not_found"):  # the cloud ERP
            with httpx.Client(verify=TLS, base_url=urls["erp-cloud"]) as cloud:
                if error["code"] == "tax_registration_missing":
                    body = {"entity": meta["entity"], "countryCode": meta["countryCode"]}
                    cloud.post("/sandbox/tax-registrations", json=body).raise_for_status()
                    return f"{body['entity']} registered for tax in {body['countryCode']}"
                sku = meta["itemNumber"]
                item = {"itemNumber": sku, "description": sku,
                        "unitPrice": LIST_PRICES.get(sku, 0)}
                cloud.post("/sandbox/items", json=item).raise_for_status()
                return f"item {sku} added to the cloud ERP's catalog"
        erp = urls["erp"]
        token = secrets["ERP_TOKEN"]
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(verify=TLS, base_url=erp, headers=headers) as http:
            if error["code"] == "UNKNOWN_TAX_NEXUS":
                body = {"subsidiary": error["subsidiary"], "nexus": error["tax_nexus"]}
                http.post("/sandbox/tax-nexus", json=body).raise_for_status()
                return f"tax nexus {body['nexus']} registered for {body['subsidiary']}"
            assert error["code"] == "UNKNOWN_ITEM", error
            sku = error["sku"]
            body = {"sku": sku, "name": sku, "unit_price": LIST_PRICES.get(sku, 0)}
            http.post("/sandbox/items", json=body).raise_for_status()
            return f"item {sku} added to the catalog"

    def api(self) -> httpx.Client:
        token = self.stack.tokens["you"]
        return httpx.Client(verify=TLS, base_url=self.stack.url, timeout=30,
                            headers={"Authorization": f"Bearer {token}"})  # fmt: skip


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoDay]:
    with DemoDay(tmp_path_factory.mktemp("day")) as played:
        yield played


def erp_error(detail: dict[str, Any]) -> dict[str, Any]:
    """The ERP's own error (`{code, message, ...}`) in the failed step's last response."""
    for step in detail["steps"]:
        if step["state"] == "failed" and step["attempts"]:
            body = (step["attempts"][-1].get("response") or {}).get("body")
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                return dict(body["error"])
            if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
                return dict(body["errors"][0])  # the cloud ERP's JSON:API-style errors
    raise AssertionError(f"no ERP error in run {detail['id']}")


def wait_states(api: httpx.Client, run_ids: list[str], state: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        states = {r: api.get(f"/api/v1/runs/{r}").json()["state"] for r in run_ids}
        if set(states.values()) == {state}:
            return
        assert time.monotonic() < deadline, states
        time.sleep(0.2)


def test_an_operator_resolves_a_days_exceptions_from_the_console(day: DemoDay) -> None:
    url = day.stack.url
    with day.api() as api:
        parked = api.get("/api/v1/runs", params={"state": "parked"}).json()["runs"]
    assert parked, "the day left no exception to resolve"
    ids = [r["id"] for r in parked]
    with chromium() as browser, new_page(browser) as page:
        sign_in(page, url, day.stack.tokens[OPERATOR])
        expect(page.locator(".tile").first).to_contain_text(f"{len(ids)}")
        shot(page, "day-overview")
        page.get_by_role("link", name="Exceptions", exact=True).click()
        group = page.locator("section.group", has=page.get_by_role("link", name=ids[0][-12:]))
        expect(group.get_by_role("heading")).to_contain_text("team revops")
        for run_id in ids:  # every parked run is listed with a box ticked for the bulk action
            expect(page.get_by_role("checkbox", name=f"Select run {run_id[-12:]}")).to_be_checked()
        shot(page, "day-exceptions")
        fixes = []
        for run_id in ids:  # read the ERP's own words on each run; its admin fixes the data
            page.goto(f"{url}/console/runs/{run_id}")
            with day.api() as api:
                error = erp_error(api.get(f"/api/v1/runs/{run_id}").json())
            words = error.get("message") or error["detail"]  # the old ERP / the cloud ERP
            expect(page.get_by_text(words).first).to_be_visible()
            fixes.append(day.fix_in_the_erp(error))
        page.get_by_role("link", name="Exceptions", exact=True).click()
        reason = "ERP master data fixed: " + "; ".join(fixes)
        group.get_by_label("Reason").fill(reason)
        group.get_by_role("button", name="Resume selected").click()
        expect(page.get_by_role("heading", name="Resume: results")).to_be_visible()
        expect(page.locator(".outcomes li.ok")).to_have_count(len(ids))
        shot(page, "day-bulk-resumed")
        with day.api() as api:
            wait_states(api, ids, "succeeded")
        page.get_by_role("link", name="Exceptions", exact=True).click()
        expect(page.get_by_text("Nothing needs attention")).to_be_visible()

        # the runs, filtered: the resumed ones succeeded, and each names who resumed it and why
        page.get_by_role("link", name="Runs", exact=True).click()
        page.get_by_label("Flow").select_option("closed-won-to-order")
        page.get_by_label("State").select_option("succeeded")
        page.get_by_role("button", name="Search").click()
        for run_id in ids:
            expect(page.get_by_role("link", name=run_id[-12:])).to_be_visible()
        shot(page, "day-runs-filtered")
        page.get_by_role("link", name=ids[0][-12:]).click()
        trail = page.locator("table").last
        expect(trail).to_contain_text(OPERATOR)
        expect(trail).to_contain_text("ERP master data fixed")

        # the reconciliation that parked on the missing orders (in the ERP that books them: the
        # old one, or the cloud ERP for the EU entity) agrees once run again
        page.get_by_role("link", name="Reconciliations", exact=True).click()
        orders = re.compile(r"^(cloud-)?orders-vs-deals$")
        row = page.locator("tr", has_text="Mismatches: parked for a person").filter(
            has=page.get_by_role("link", name=orders)).first
        expect(row).to_be_visible()
        row.get_by_role("link", name=orders).click()
        page.get_by_label("Reason").fill("exceptions resolved; checking the ERP again")
        page.get_by_role("button", name="Run now").click()
        expect(page.get_by_role("status")).to_contain_text("Ran now")
        expect(page.locator("#result-h")).to_contain_text("Agree")
        shot(page, "day-reconciliation")

        page.get_by_role("link", name="Audit", exact=True).click()
        page.get_by_label("Who").fill(OPERATOR)
        page.get_by_role("button", name="Search").click()
        audit = page.locator("table")
        expect(audit).to_contain_text("reconcile")
        expect(audit).to_contain_text("resume")
        shot(page, "day-audit")
    with chromium() as browser, new_page(browser, 390, 844) as phone:
        sign_in(phone, url, day.stack.tokens[OPERATOR])
        shot(phone, "day-overview-phone")
        phone.get_by_role("link", name="Reconciliations", exact=True).click()
        shot(phone, "day-reconciliations-phone")
