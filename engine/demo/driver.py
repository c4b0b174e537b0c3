"""Play a `Scenario` against the running stack, the way the people and platforms of a B2B SaaS
company would: sales reps close deals in the CRM (its webhooks reach Syncline), customers change
and renew subscriptions and pay or fail invoices in billing, the ERP has an outage and a rate
limit storm, and an operator fixes master data and resumes the parked runs through the admin API;
at the end of the day the ERP has a planned maintenance window: paused in Syncline, it receives
nothing while the renewals that need it wait, and they go through once it is resumed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from engine.demo.scenario import LIST_PRICES, Deal, Scenario
from engine.demo.stack import Stack
from engine.errors import SynclineError
from engine.store.controls import SYSTEM_PAUSED as HELD

CRM_API = "/services/data/v60.0"
PARALLEL = 8  # requests the "people" of the day make at once
SETTLE_TIMEOUT = 120.0
STALL_CHECK = 2.0  # not idle for this long: see whether only an operator can move things on


class DemoError(SynclineError):
    """The day could not be played (a system refused a request the script relies on)."""


@dataclass
class Exception_:
    """A run that needed a human, and what the operator did about it."""

    run_id: str
    flow: str
    reason: dict[str, Any]
    erp_code: str | None
    parked_at: float
    fix: str | None = None
    resumed_at: float | None = None
    state: str = "parked"
    finished_at: float | None = None
    error: dict[str, Any] = field(default_factory=dict)  # the ERP's own error, if any


@dataclass
class DayLog:
    """What the driver did, for the report."""

    started_at: float = field(default_factory=time.time)
    phases: list[tuple[str, float]] = field(default_factory=list)  # (name, seconds)
    counts: dict[str, int] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    exceptions: list[Exception_] = field(default_factory=list)

    def count_fault_hits(self, states: dict[str, Any]) -> None:
        """How many requests each injected fault affected, from the systems' states."""
        for fault in self.faults:
            fault.hits = states[fault.system].get("fault_hits", {}).get(fault.id, 0)


@dataclass
class Fault:
    """A failure injected into one system, and how many requests it affected."""

    system: str
    id: str
    label: str
    hits: int = 0


class Driver:
    """Plays one scenario; `await driver.play()` returns the DayLog."""

    def __init__(
        self,
        stack: Stack,
        scenario: Scenario,
        on_phase: Callable[[str], None] = lambda name: None,
        resolve: bool = True,
    ) -> None:
        self.stack, self.scenario, self.on_phase = stack, scenario, on_phase
        self.resolve = resolve  # False: leave the exceptions for a person (demo --serve)
        self.log = DayLog()
        self.accounts: dict[str, str] = {}  # deal key -> CRM account id
        self.opportunities: dict[str, str] = {}  # deal key -> CRM opportunity id
        self.clients: dict[str, httpx.AsyncClient] = {}

    # plumbing ------------------------------------------------------------------------------
    async def __aenter__(self) -> Driver:
        urls, secrets = self.stack.sandbox.urls, self.stack.secrets
        for name, url in urls.items():
            token = secrets[f"{name.upper()}_TOKEN"]
            self.clients[name] = httpx.AsyncClient(
                base_url=url, timeout=30.0, headers={"Authorization": f"Bearer {token}"}
            )
        self.clients["syncline"] = httpx.AsyncClient(
            base_url=self.stack.url,
            timeout=30.0,
            headers={"Authorization": f"Bearer {self.stack.tokens['demo-operator']}"},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients.values():
            await client.aclose()

    async def call(self, system: str, method: str, path: str, body: Any = None) -> Any:
        response = await self.clients[system].request(method, path, json=body)
        if response.status_code >= 400:
            raise DemoError(
                f"{system} {method} {path} -> {response.status_code}: {response.text[:300]}"
            )
        return response.json() if response.content else None

    async def each(self, items: Iterable[Any], action: Callable[[Any], Awaitable[Any]]) -> None:
        gate = asyncio.Semaphore(PARALLEL)

        async def one(item: Any) -> None:
            async with gate:
                await action(item)

        await asyncio.gather(*(one(item) for item in items))

    async def settle(self) -> None:
        """Until every webhook is delivered and Syncline has nothing left to run, or nothing it
        can run before an operator acts (every unfinished run waits behind a parked one)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            quiet = await self.stack.webhooks_idle(0)
            if not quiet:
                await self.stack.webhooks_idle(SETTLE_TIMEOUT)
            idle = await self.stack.runtime.idle(STALL_CHECK)
            if not idle and quiet:
                idle = await self.blocked_by_parked_runs()
            if quiet and idle and await self.stack.webhooks_idle(0):
                return
        raise DemoError(f"the systems did not settle within {SETTLE_TIMEOUT:g} s")

    async def blocked_by_parked_runs(self) -> bool:
        """True when no run is running or waiting and every pending run has an older parked run
        with its ordering key (a parked run holds its key until an operator resumes or cancels
        it)."""
        counts = await self.stack.runtime.store.count_runs()
        if any(n for (_, state), n in counts.items() if state in ("running", "waiting")):
            return False
        return await self.pending_blocked(require_pending=True)

    async def pending_blocked(self, require_pending: bool = False) -> bool:
        """Whether every pending run waits behind an older parked run of its ordering key."""
        pending = await self.runs("pending")
        parked = await self.runs("parked")
        if not pending:
            return not require_pending
        if not parked:
            return False
        holders: dict[str, float] = {}
        for run in parked:
            if run["ordering_key"] is not None:
                key = run["ordering_key"]
                holders[key] = min(holders.get(key, run["created_at"]), run["created_at"])
        return all(
            run["ordering_key"] in holders and holders[run["ordering_key"]] <= run["created_at"]
            for run in pending
        )

    async def runs(self, state: str) -> list[dict[str, Any]]:
        """Runs in `state` (the newest 500)."""
        listing = await self.call("syncline", "GET", f"/api/v1/runs?state={state}&limit=500")
        runs: list[dict[str, Any]] = listing["runs"]
        return runs

    async def phase(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        self.on_phase(name)
        started = time.perf_counter()
        await work()
        await self.settle()
        self.log.phases.append((name, time.perf_counter() - started))

    # the day -------------------------------------------------------------------------------
    async def play(self) -> DayLog:
        await self.phase("accounts and pipeline", self.create_pipeline)
        await self.phase("deals closing", self.close_deals)
        if self.resolve:
            await self.phase("operator resolves exceptions", self.resolve_exceptions)
        await self.phase("invoices paid and failed", self.invoices)
        await self.phase("failed payments recovered", self.recover_payments)
        await self.phase("mid-term amendments", self.amend)
        await self.phase("renewals, ERP maintenance", self.renew_in_maintenance)
        await self.refresh_exceptions()
        return self.log

    async def create_pipeline(self) -> None:
        deals = self.scenario.deals
        await self.each([d for d in deals if d.parent is None], self.create_account)
        await self.each([d for d in deals if d.parent is not None], self.create_account)
        await self.each(deals, self.create_opportunity)

    async def create_account(self, deal: Deal) -> None:
        body = deal.account()
        if deal.parent is not None:
            body["ParentId"] = self.accounts[deal.parent]
        created = await self.call("crm", "POST", f"{CRM_API}/sobjects/Account", body)
        self.accounts[deal.key] = created["id"]

    async def create_opportunity(self, deal: Deal) -> None:
        body = deal.opportunity(self.accounts[deal.key], dt.date.today().isoformat())
        created = await self.call("crm", "POST", f"{CRM_API}/sobjects/Opportunity", body)
        self.opportunities[deal.key] = created["id"]

    async def close_deals(self) -> None:
        burst = max(4, len(self.scenario.deals) // 20)
        await self.fault(
            "erp",
            f"ERP outage: {burst} x 503 on /sales-orders",
            status=503,
            count=burst,
            path_prefix="/sales-orders",
        )
        await self.fault(
            "crm", "CRM outage: 3 x 500 on account updates", status=500, count=3, method="PATCH"
        )
        deliveries = []

        async def close(deal: Deal) -> None:
            closed = await self.call(
                "crm", "POST", f"/sandbox/opportunities/{self.opportunities[deal.key]}/close"
            )
            deliveries.append(closed["webhook"]["delivery_id"])

        await self.each(self.scenario.deals, close)
        for delivery in deliveries[:3]:  # the CRM delivers a few webhooks twice
            await self.call("crm", "POST", f"/sandbox/webhooks/{delivery}/redeliver")
        self.log.counts["deals"] = len(deliveries)
        self.log.counts["duplicate webhooks"] = min(3, len(deliveries))

    async def fault(self, system: str, label: str, **spec: Any) -> None:
        created = await self.call(system, "POST", "/sandbox/faults", spec)
        self.log.faults.append(Fault(system, created["id"], label))

    # the operator --------------------------------------------------------------------------
    async def resolve_exceptions(self) -> None:
        """Like an operator: list parked runs, read why, fix the ERP master data, resume."""
        for run in await self.runs("parked"):
            exception = await self.exception(run)
            exception.fix = await self.fix_master_data(exception.error)
            if exception.fix is not None:
                await self.call("syncline", "POST", f"/api/v1/runs/{run['id']}/resume")
                exception.resumed_at = time.time()

    async def fix_master_data(self, error: dict[str, Any]) -> str | None:
        code = error.get("code")
        if code == "UNKNOWN_TAX_NEXUS":
            body = {"subsidiary": error["subsidiary"], "nexus": error["tax_nexus"]}
            await self.call("erp", "POST", "/sandbox/tax-nexus", body)
            return f"registered tax nexus {body['nexus']} for the {body['subsidiary']} entity"
        if code == "UNKNOWN_ITEM":
            sku = error["sku"]
            body = {"sku": sku, "name": sku, "unit_price": LIST_PRICES.get(sku, 0)}
            await self.call("erp", "POST", "/sandbox/items", body)
            return f"added item {sku} to the ERP catalog"
        return None

    async def exception(self, run: dict[str, Any]) -> Exception_:
        """A parked run, as the day's log records it."""
        detail = await self.call("syncline", "GET", f"/api/v1/runs/{run['id']}")
        error = erp_error(detail)
        exception = Exception_(
            run["id"], run["flow"], run["reason"] or {}, error.get("code"), run["updated_at"]
        )
        exception.error = error
        self.log.exceptions.append(exception)
        return exception

    async def refresh_exceptions(self) -> None:
        """The outcome of the exceptions the operator handled; runs parked since (no operator
        came for them) are exceptions too, unresolved."""
        for exception in self.log.exceptions:
            run = await self.call("syncline", "GET", f"/api/v1/runs/{exception.run_id}")
            exception.state = run["state"]
            exception.finished_at = run["updated_at"]
        known = {e.run_id for e in self.log.exceptions}
        for run in await self.runs("parked"):
            if run["id"] not in known:
                await self.exception(run)

    # billing -------------------------------------------------------------------------------
    async def subscription(self, deal_key: str) -> dict[str, Any] | None:
        """The deal's subscription, found as anyone would: through the CRM account's link."""
        account = await self.call(
            "crm", "GET", f"{CRM_API}/sobjects/Account/{self.accounts[deal_key]}"
        )
        if not account.get("Subscription_Id__c"):
            return None
        subscription: dict[str, Any] = await self.call(
            "billing", "GET", f"/v1/subscriptions/{account['Subscription_Id__c']}"
        )
        return subscription

    async def invoices(self) -> None:
        await self.fault(
            "erp",
            "ERP rate-limit storm: 429 + Retry-After for 1.5 s on /payments",
            mode="rate_limit_storm",
            duration=1.5,
            retry_after=1,
            path_prefix="/payments",
        )
        failing = set(self.scenario.failed_payments)
        unpaid = set(self.scenario.unpaid)
        keys = [d.key for d in self.scenario.deals if d.key not in unpaid]

        async def settle_invoice(key: str) -> None:
            subscription = await self.subscription(key)
            if subscription is None:  # an exception nobody resolved: nothing to invoice
                return
            action = "fail" if key in failing else "pay"
            path = f"/sandbox/invoices/{subscription['latest_invoice']}/{action}"
            await self.call("billing", "POST", path)

        await self.each(keys, settle_invoice)
        self.log.counts["invoices paid"] = len(keys) - len(failing)
        self.log.counts["payments failed"] = len(failing)

    async def recover_payments(self) -> None:
        async def pay(key: str) -> None:
            subscription = await self.subscription(key)
            if subscription is None:  # its deal is an exception nobody resolved
                return
            await self.call(
                "billing", "POST", f"/sandbox/invoices/{subscription['latest_invoice']}/pay"
            )

        await self.each(self.scenario.recovered, pay)
        self.log.counts["payments recovered"] = len(self.scenario.recovered)

    async def amend(self) -> None:
        lost = max(1, min(3, len(self.scenario.amendments)))
        await self.fault(
            "erp",
            f"ERP outage: {lost} x 502 after the write on order adjustments (lost responses)",
            status=502,
            count=lost,
            phase="after",
            method="POST",
            path_prefix="/sales-orders/",
        )

        async def upgrade(item: tuple[str, int]) -> None:
            key, extra = item
            subscription = await self.subscription(key)
            if subscription is None:  # its deal is an exception nobody resolved
                return
            seat = next(
                i for i in subscription["items"]["data"] if i["price"]["product"] == "SEAT-STD"
            )
            body = {"item": seat["id"], "quantity": seat["quantity"] + extra}
            await self.call(
                "billing", "POST", f"/sandbox/subscriptions/{subscription['id']}/update", body
            )

        await self.each(list(self.scenario.amendments.items()), upgrade)
        self.log.counts["amendments"] = len(self.scenario.amendments)

    async def renew_in_maintenance(self) -> None:
        """The ERP's planned maintenance: the ERP is paused in Syncline, the renewals close and
        wait (SYSTEM_PAUSED) while it receives nothing, and go through once it is resumed."""
        before = await self.erp_requests()
        reason = {"reason": "planned ERP maintenance"}
        await self.call("syncline", "POST", "/api/v1/systems/erp/pause", reason)
        await self.renew()
        await self.stack.webhooks_idle(SETTLE_TIMEOUT)
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:  # until every run that can go on without the ERP did
            counts = await self.stack.runtime.store.count_runs()
            running = any(n for (_, state), n in counts.items() if state == "running")
            if not running and await self.pending_blocked():
                break
            if time.monotonic() > deadline:
                raise DemoError("runs did not come to rest while the ERP was paused")
            await asyncio.sleep(0.05)
        held = [r for r in await self.runs("waiting") if (r["reason"] or {}).get("code") == HELD]
        during = await self.erp_requests() - before
        await self.call("syncline", "POST", "/api/v1/systems/erp/resume", {"reason": "done"})
        if during:
            raise DemoError(f"the paused ERP received {during} requests")
        self.log.counts["runs held in the ERP maintenance window"] = len(held)
        self.log.counts["ERP calls during it"] = during

    async def erp_requests(self) -> int:
        state = await self.call("erp", "GET", "/sandbox/state")
        return int(state.get("counters", {}).get("requests", 0))

    async def renew(self) -> None:
        deals = {d.key: d for d in self.scenario.deals}

        async def renew_one(key: str) -> None:
            deal = deals[key]
            account = await self.call(
                "crm", "GET", f"{CRM_API}/sobjects/Account/{self.accounts[key]}"
            )
            if not account.get("Contract_End__c"):  # its deal is an exception nobody resolved
                return
            start = dt.date.fromisoformat(account["Contract_End__c"]) + dt.timedelta(days=1)
            body = deal.opportunity(
                self.accounts[key],
                dt.date.today().isoformat(),
                "Renewal",
                Original_Opportunity__c=self.opportunities[key],
                Term_Start__c=start.isoformat(),
            )
            created = await self.call("crm", "POST", f"{CRM_API}/sobjects/Opportunity", body)
            await self.call("crm", "POST", f"/sandbox/opportunities/{created['id']}/close")

        await self.each(self.scenario.renewals, renew_one)
        self.log.counts["renewals"] = len(self.scenario.renewals)


def erp_error(detail: dict[str, Any]) -> dict[str, Any]:
    """The ERP's own error (`{"code", "message", ...}`) behind a parked run, if any."""
    for step in detail.get("steps", []):
        if step["state"] != "failed" or not step["attempts"]:
            continue
        response = step["attempts"][-1].get("response") or {}
        body = response.get("body")
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            error: dict[str, Any] = body["error"]
            return error
    return {}
