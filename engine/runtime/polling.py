"""The `poll` trigger: read a System's list operation every `every` seconds, one event per item.

One poll of a flow reads page after page (`pages.next` names the next page's token, sent in
`pages.param`) from the stored cursor (sent in `cursor.param`), accepts one event per item (its
run keyed by the flow's `idempotencyKey`: an item seen twice starts one run), and only then stores
the new cursor (`cursor.next` of the last page that names one) in the store's `trigger_state`
(name `poll:<flow>`). A crash mid-poll leaves the old cursor: the next poll reads the same items
again and their runs are duplicates, so nothing is lost and nothing runs twice.

Pages are read by engine.runtime.pages (the System's rate limit, its RetryPolicy). What goes
wrong is recorded in the poll's state as `last.error` `{code, message}` and logged, never raised:
LIST_READ_FAILED and LIST_BAD_RESPONSE are tried again at the next interval; after PAGE_LOOP (a
page token came back) the flow's polling is parked until the plan changes or the process
restarts, since reading on would loop. An item without a key is reported (`last.skipped`, a
warning) and starts no run.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from engine.compiler.compiled import CompiledFlow
from engine.compiler.plan import Plan
from engine.compiler.triggers import CompiledPoll, tick_text
from engine.runtime.calls import Calls
from engine.runtime.pages import ReadProblem, read_pages
from engine.runtime.schedules import keep_running
from engine.store.base import Acceptance, Store

log = logging.getLogger("syncline.polling")

# (flow, item, event id, event time) -> the acceptance of the item's run
IngestItem = Callable[[CompiledFlow, Any, str, str], Awaitable[Acceptance]]
MAX_SLEEP = 30.0


@dataclass
class PollResult:
    """What one poll of a flow did."""

    flow: str
    pages: int = 0
    accepted: int = 0
    duplicates: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)  # items without a key
    cursor: Any = None            # the cursor stored after the poll
    error: dict[str, str] | None = None  # {code, message}

    def as_dict(self) -> dict[str, Any]:
        return {
            "pages": self.pages, "accepted": self.accepted, "duplicates": self.duplicates,
            "skipped": self.skipped[:20], "skipped_count": len(self.skipped), "error": self.error,
        }


class Polls:
    """Polls the active plan's poll flows when due (`poll_due`), sleeping in between (`run`).

    `clock` and `sleep` are injected (tests move time instead of waiting)."""

    def __init__(
        self,
        store: Store,
        plan: Callable[[], Plan],
        calls: Callable[[Plan], Calls],
        ingest: IngestItem,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._store, self._plan, self._calls, self._ingest = store, plan, calls, ingest
        self._clock, self._sleep = clock, sleep
        self._due: dict[str, float] = {}      # flow -> when its next poll is due
        self._parked: dict[str, str] = {}     # flow -> the plan digest it was parked under

    async def run(self) -> None:
        """Poll due flows until cancelled; a failure is logged and tried again."""
        await keep_running(self.poll_due, self.delay, self._sleep, "polling")

    def delay(self) -> float:
        """Seconds until the next poll is due (at most MAX_SLEEP)."""
        now = self._clock()
        waits = [self._due.get(f.name, now) - now for f in self._flows()]
        return max(0.0, min([MAX_SLEEP, *waits]))

    async def poll_due(self) -> list[PollResult]:
        """Poll every poll flow whose interval has passed (each once, one after the other)."""
        results = []
        digest = self._plan().digest
        for flow in self._flows():
            if self._parked.get(flow.name) == digest or self._due.get(flow.name, 0) > self._clock():
                continue
            poll = flow.trigger.poll
            assert poll is not None
            self._due[flow.name] = self._clock() + poll.every
            result = await self.poll(flow)
            if result.error is not None and result.error["code"] == "PAGE_LOOP":
                self._parked[flow.name] = digest
            results.append(result)
        return results

    def _flows(self) -> list[CompiledFlow]:
        return [f for f in self._plan().flows.values() if f.trigger.poll is not None]

    async def poll(self, flow: CompiledFlow) -> PollResult:
        """One poll of `flow` now: every page, every item accepted, then the cursor stored."""
        poll = flow.trigger.poll
        assert poll is not None
        name = f"poll:{flow.name}"
        state = await self._store.get_trigger_state(name)
        if not isinstance(state, dict) or state.get("poll") != poll.identity:
            state = {"poll": poll.identity, "cursor": None}
        result = PollResult(flow.name, cursor=state.get("cursor"))
        try:
            result.cursor = await self._read(flow, poll, result)
        except ReadProblem as problem:
            result.error = problem.as_dict()
            log.error("poll %s: %s %s", flow.name, problem.code, problem.message,
                      extra={"event": "poll.failed", "flow": flow.name})
        state = {**state, "cursor": result.cursor, "polled_at": self._clock(),
                 "last": result.as_dict()}
        await self._store.put_trigger_state(name, state)
        return result

    async def _read(self, flow: CompiledFlow, poll: CompiledPoll, result: PollResult) -> Any:
        """Accept every page's items; answer the cursor to store (unchanged on a problem)."""
        latest = result.cursor
        query = {}
        if poll.cursor_param is not None and result.cursor is not None:
            query[poll.cursor_param] = result.cursor

        async def on_page(items: list[Any], response: dict[str, Any]) -> None:
            nonlocal latest
            await self._accept(flow, items, result)
            result.pages += 1
            found = poll.cursor_next.search(response) if poll.cursor_next is not None else None
            latest = latest if found is None else found

        await read_pages(self._calls(self._plan()), poll.read, query, on_page, sleep=self._sleep)
        return latest

    async def _accept(self, flow: CompiledFlow, items: list[Any], result: PollResult) -> None:
        key_of = flow.idempotency_key
        assert key_of is not None  # the compiler requires it of a poll flow
        when = tick_text(self._clock())
        pending = []
        for index, item in enumerate(items):
            key = key_of.search({"data": item}) if isinstance(item, dict) else None
            if key is None:
                result.skipped.append({"page": result.pages + 1, "index": index,
                                       "reason": "the idempotencyKey found no value"})
                log.warning("poll %s: item %d of page %d has no key; skipped", flow.name, index,
                            result.pages + 1, extra={"event": "poll.item-skipped"})
                continue
            key_text = key if isinstance(key, str) else json.dumps(key, sort_keys=True)
            pending.append(self._ingest(flow, item, f"poll:{flow.name}:{key_text}", when))
        for acceptance in await asyncio.gather(*pending):
            if acceptance.status == "duplicate":
                result.duplicates += 1
            else:
                result.accepted += 1
