"""The `poll` trigger: read a System's list operation every `every` seconds, one event per item.

One poll of a flow reads page after page (`pages.next` names the next page's token, sent in
`pages.param`) from the stored cursor (sent in `cursor.param`), accepts one event per item (its
run keyed by the flow's `idempotencyKey`: an item seen twice starts one run), and only then stores
the new cursor (`cursor.next` of the last page that names one) in the store's `trigger_state`
(name `poll:<flow>`). A crash mid-poll leaves the old cursor: the next poll reads the same items
again and their runs are duplicates, so nothing is lost and nothing runs twice.

Calls go through the runtime's `Calls` (the System's rate limit and connection pool) and are
retried as the System's RetryPolicy says (else the project's default; else one attempt). What
goes wrong is recorded in the poll's state as `last.error` `{code, message}` and logged, never
raised: POLL_FAILED (the call failed for good this time), POLL_BAD_RESPONSE (`items` is not a
list), PAGE_LOOP (a page token came back a second time: the poll stops and the flow's polling
is parked until the plan changes or the process restarts, since reading on would loop). An item
without a key is reported (`last.skipped`, a warning) and starts no run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from engine.compiler.compiled import CompiledFlow
from engine.compiler.plan import Plan
from engine.compiler.triggers import CompiledPoll, tick_text
from engine.errors import CallError, StoreError
from engine.runtime.calls import Calls, OutboundRequest, Response
from engine.runtime.retry import decide
from engine.store.base import Acceptance, Store

log = logging.getLogger("syncline.polling")

# (flow, item, event id, event time) -> the acceptance of the item's run
IngestItem = Callable[[CompiledFlow, Any, str, str], Awaitable[Acceptance]]
MAX_PAGES = 10_000  # a list longer than this in one poll is taken for a loop the tokens hide
MAX_SLEEP = 30.0


class PollProblem(Exception):
    """Why one poll stopped: a reason code and a message for the poll's state."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


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
        """Poll due flows until cancelled; a store failure is logged and tried again."""
        while True:
            try:
                await self.poll_due()
            except StoreError:
                log.exception("polling failed on the store; retrying")
            await self._sleep(self.delay())

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
            result.cursor = await self._read_pages(flow, poll, result)
        except PollProblem as problem:
            result.error = {"code": problem.code, "message": problem.message}
            log.error("poll %s: %s %s", flow.name, problem.code, problem.message,
                      extra={"event": "poll.failed", "flow": flow.name})
        state = {**state, "cursor": result.cursor, "polled_at": self._clock(),
                 "last": result.as_dict()}
        await self._store.put_trigger_state(name, state)
        return result

    async def _read_pages(self, flow: CompiledFlow, poll: CompiledPoll, result: PollResult) -> Any:
        """Accept every page's items; answer the cursor to store (unchanged on a problem)."""
        cursor, latest = result.cursor, result.cursor
        token: Any = None
        seen: set[str] = set()
        while result.pages < MAX_PAGES:
            query = {}
            if poll.cursor_param is not None and cursor is not None:
                query[poll.cursor_param] = cursor
            if token is not None:
                query[poll.page_param or ""] = token
            response = await self._get(poll, query)
            context = {"status": response.status, "headers": response.headers,
                       "body": response.body}
            items = poll.items.search(context)
            if not isinstance(items, list):
                raise PollProblem("POLL_BAD_RESPONSE", f"{poll.operation}: items expression gave "
                                  f"{type(items).__name__ if items is not None else 'null'}, "
                                  f"not a list (status {response.status})")
            await self._accept(flow, items, result)
            result.pages += 1
            if poll.cursor_next is not None:
                found = poll.cursor_next.search(context)
                latest = latest if found is None else found
            token = poll.page_next.search(context) if poll.page_next is not None else None
            if token is None or token == "":
                return latest
            text = json.dumps(token, sort_keys=True, default=str)
            if text in seen:
                raise PollProblem("PAGE_LOOP", f"{poll.operation}: page token {text} came back "
                                  f"after {result.pages} pages; polling is parked")
            seen.add(text)
        raise PollProblem("PAGE_LOOP", f"{poll.operation}: more than {MAX_PAGES} pages in one poll")

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

    async def _get(self, poll: CompiledPoll, query: dict[str, Any]) -> Response:
        """One page, retried as the poll's RetryPolicy says; PollProblem when it gives up."""
        calls = self._calls(self._plan())
        request = OutboundRequest(poll.system, poll.operation, poll.method, poll.path, query, {},
                                  None, None, f"poll-{poll.system.name}", None, False)
        policy = poll.retry.policy if poll.retry is not None else None
        timeout = policy.timeout if policy is not None and policy.timeout else poll.system.timeout
        first, attempt = time.time(), 0
        while True:
            attempt += 1
            try:
                return await calls.send(request, timeout=timeout)
            except CallError as error:
                decision = None if policy is None else decide(
                    policy, error, attempt=attempt, first_attempt_at=first, now=time.time())
                if decision is None or decision.action != "retry":
                    reason = decision.reason if decision is not None else str(error)
                    raise PollProblem("POLL_FAILED", f"{poll.operation}: {reason}") from None
                await self._sleep(decision.delay)
