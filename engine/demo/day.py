"""The plumbing every phase of the demo's day uses: one HTTP client per sandbox system and one for
Syncline (as the `demo-operator`), what the day has created so far (CRM accounts and
opportunities by deal key), the log the report is made from, and `settle`: wait until the systems
have done what the last phase set off.

A phase (engine/demo/phases/) is a function `async def play(day: Day) -> None` that acts as the
people and platforms of the company would, through `day.call(system, method, path, body)`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from engine.demo.scenario import Scenario
from engine.demo.stack import Stack
from engine.errors import SynclineError
from engine.tls import tls_context

CRM_API = "/services/data/v60.0"
PARALLEL = 8  # requests the "people" of the day make at once
SETTLE_TIMEOUT = 120.0  # seconds a phase may take to settle, plus SETTLE_PER_DEAL a deal
SETTLE_PER_DEAL = 0.06  # a big day on a busy machine (2,000 deals: 240 s)
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
class Fault:
    """A failure injected into one system, and how many requests it affected."""

    system: str
    id: str
    label: str
    hits: int = 0


@dataclass
class DayLog:
    """What the driver did, for the report."""

    started_at: float = field(default_factory=time.time)
    phases: list[tuple[str, float]] = field(default_factory=list)  # (name, seconds)
    counts: dict[str, int] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    exceptions: list[Exception_] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)  # messages the chat received
    migration: dict[str, Any] = field(default_factory=dict)  # engine.demo.migration
    published: Any = None  # engine.demo.published.Tally: what went to the event backbone

    def count_fault_hits(self, states: dict[str, Any]) -> None:
        """How many requests each injected fault affected, from the systems' states."""
        for fault in self.faults:
            fault.hits = states[fault.system].get("fault_hits", {}).get(fault.id, 0)


class Day:
    """The clients and state of one played day; use as `async with Day(stack, scenario)`."""

    def __init__(self, stack: Stack, scenario: Scenario, resolve: bool = True) -> None:
        self.stack, self.scenario = stack, scenario
        self.resolve = resolve  # False: leave the exceptions for a person (demo --serve)
        self.log = DayLog()
        self.accounts: dict[str, str] = {}  # deal key -> CRM account id
        self.opportunities: dict[str, str] = {}  # deal key -> CRM opportunity id
        self.clients: dict[str, httpx.AsyncClient] = {}

    async def __aenter__(self) -> Any:
        urls, secrets = self.stack.sandbox.urls, self.stack.secrets
        for name, url in urls.items():
            token = secrets.get(f"{name.upper()}_TOKEN")  # the cloud ERP: /sandbox only
            self.clients[name] = httpx.AsyncClient(
                base_url=url,
                timeout=30.0,
                verify=tls_context(),
                headers={"Authorization": f"Bearer {token}"} if token else {},
            )
        self.clients["syncline"] = httpx.AsyncClient(
            base_url=self.stack.url,
            timeout=30.0,
            verify=tls_context(),
            headers={"Authorization": f"Bearer {self.stack.tokens['demo-operator']}"},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients.values():
            await client.aclose()

    async def call(self, system: str, method: str, path: str, body: Any = None) -> Any:
        """A request to a sandbox system (or "syncline"); DemoError on a 4xx or 5xx."""
        response = await self.clients[system].request(method, path, json=body)
        if response.status_code >= 400:
            raise DemoError(
                f"{system} {method} {path} -> {response.status_code}: {response.text[:300]}"
            )
        return response.json() if response.content else None

    async def each(self, items: Iterable[Any], action: Callable[[Any], Awaitable[Any]]) -> None:
        """`action(item)` for every item, PARALLEL at a time."""
        gate = asyncio.Semaphore(PARALLEL)

        async def one(item: Any) -> None:
            async with gate:
                await action(item)

        await asyncio.gather(*(one(item) for item in items))

    async def fault(self, system: str, label: str, **spec: Any) -> None:
        """Inject a failure into a sandbox system (POST /sandbox/faults) and log it."""
        created = await self.call(system, "POST", "/sandbox/faults", spec)
        self.log.faults.append(Fault(system, created["id"], label))

    async def runs(self, state: str) -> list[dict[str, Any]]:
        """Runs in `state` (the newest 500)."""
        listing = await self.call("syncline", "GET", f"/api/v1/runs?state={state}&limit=500")
        runs: list[dict[str, Any]] = listing["runs"]
        return runs

    async def settle(self) -> None:
        """Until every webhook is delivered and Syncline has nothing left to run, or nothing it
        can run before an operator acts (every unfinished run waits behind a parked one)."""
        patience = SETTLE_TIMEOUT + SETTLE_PER_DEAL * len(self.scenario.deals)
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            quiet = await self.stack.webhooks_idle(0)
            if not quiet:
                await self.stack.webhooks_idle(patience)
            idle = await self.stack.runtime.idle(STALL_CHECK)
            if not idle and quiet:
                idle = await self.blocked_by_parked_runs()
            if quiet and idle and await self.stack.webhooks_idle(0):
                return
        raise DemoError(f"the systems did not settle within {patience:g} s")

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
        holders: dict[str, str] = {}  # ISO 8601 UTC times: they sort as text
        for run in parked:
            if run["ordering_key"] is not None:
                key = run["ordering_key"]
                holders[key] = min(holders.get(key, run["created_at"]), run["created_at"])
        return all(
            run["ordering_key"] in holders and holders[run["ordering_key"]] <= run["created_at"]
            for run in pending
        )

    async def subscription(self, deal_key: str) -> dict[str, Any] | None:
        """The deal's subscription, found as anyone would: through the CRM account's link (None
        for a deal that is an exception nobody resolved)."""
        account = await self.call(
            "crm", "GET", f"{CRM_API}/sobjects/Account/{self.accounts[deal_key]}"
        )
        if not account.get("Subscription_Id__c"):
            return None
        subscription: dict[str, Any] = await self.call(
            "billing", "GET", f"/v1/subscriptions/{account['Subscription_Id__c']}"
        )
        return subscription
