"""The plans a runtime executes: the active one (new runs use it) and every plan a run started
with (rebuilt from the stored bundle on demand), each with its Systems' clients (`Calls`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from engine.compiler import compile_bundle
from engine.compiler.compiled import CompiledFlow
from engine.compiler.plan import Plan
from engine.errors import StoreError
from engine.runtime.calls import Calls
from engine.runtime.gates import Gates
from engine.runtime.label_backfill import backfill_labels
from engine.runtime.tracing import Tracing
from engine.store.aggregates import metric_config
from engine.store.base import RunRecord, Store


class Plans:
    """The plan cache and the per-plan Calls of one Runtime. `secrets`, `transport`,
    `connections`, `on_call`, `gates` and `tracing` are what every plan's `Calls` is opened
    with."""

    def __init__(
        self,
        store: Store,
        plan: Plan,
        secrets: Mapping[str, str],
        transport: httpx.AsyncBaseTransport | None,
        connections: int,
        on_call: Callable[[str, str, str, float], None] | None = None,
        gates: Gates | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.store = store
        self.active = plan  # new runs use it
        self._plans: dict[str, Plan] = {plan.digest: plan}
        self._calls: dict[str, Calls] = {}
        self._secrets = dict(secrets)
        self._transport = transport
        self._connections = connections
        self._on_call = on_call  # each outbound call attempt, for metrics
        self._gates = gates  # what holds calls back (paused Systems, open circuits)
        self._tracing = tracing  # a span per call sent (None: tracing off)

    async def open(self) -> None:
        """Save the active plan's bundle and open its Systems' clients (missing secrets raise)."""
        await self.store.save_plan(self.active.digest, dict(self.active.bundle))
        await self.store.sync_metrics(metric_config(self.active.metrics))
        await backfill_labels(self.store, self.active)  # open runs, under sets new to the store
        self.calls_for(self.active)

    async def swap(self, plan: Plan) -> None:
        """Make `plan` the active one; plans of runs already accepted stay available."""
        await self.store.save_plan(plan.digest, dict(plan.bundle))
        await self.store.sync_metrics(metric_config(plan.metrics))
        self._plans[plan.digest] = plan
        self.active = plan
        await backfill_labels(self.store, plan)

    async def plan_for(self, digest: str) -> Plan:
        """The plan a run started with: from memory, else rebuilt from the stored bundle."""
        plan = self._plans.get(digest)
        if plan is None:
            bundle = await self.store.load_plan(digest)
            if bundle is None:
                raise StoreError(f"plan {digest} is not in the store")
            plan = await asyncio.to_thread(_compile_warm, bundle)
            self._plans[digest] = plan
        return plan

    async def flow_of(self, run: RunRecord) -> CompiledFlow:
        """The flow version `run` executes."""
        return (await self.plan_for(run.plan_digest)).flow(run.flow, run.flow_version)

    def calls_for(self, plan: Plan) -> Calls:
        """The clients of `plan`'s Systems, opened on first use."""
        calls = self._calls.get(plan.digest)
        if calls is None:
            calls = Calls(
                plan.systems.values(),
                self._secrets,
                transport=self._transport,
                connections=self._connections,
                on_call=self._on_call,
                gates=self._gates,
                tracing=self._tracing,
            )
            self._calls[plan.digest] = calls
        return calls

    async def aclose(self) -> None:
        """Close every plan's clients."""
        for calls in self._calls.values():
            await calls.aclose()
        self._calls.clear()


def _compile_warm(bundle: dict[str, Any]) -> Plan:
    """A stored bundle's plan with its generated functions compiled (for a worker thread)."""
    plan = compile_bundle(bundle)
    plan.warm()
    return plan
