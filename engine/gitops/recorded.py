"""`syncline plan --samples store`: the newest accepted events of each flow, read from the
project's store (or `--database`), or from a running server (`--url`, a viewer token), each with
the responses its run recorded, so the flow preview can answer a call the flow tests do not stub
with what the System really answered.

Both sources give the same thing per run: the event's data and the run's call attempts (method,
URL, response), which the plan's operations turn into `system.operation` -> responses in the
order they came.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import httpx

from engine.commands.remote import HttpRunsClient
from engine.compiler.plan import Plan
from engine.gitops.samples import Sample
from engine.runtime.stubs import StubTransport
from engine.store import RunQuery, Store

PAGE = 500  # runs asked for at a time


async def store_samples(store: Store, plan: Plan, limit: int) -> list[Sample]:
    """Each active flow's newest `limit` distinct events in `store`, with their responses."""

    async def page(query: RunQuery) -> tuple[list[dict[str, Any]], str | None]:
        runs = await store.list_runs(query)
        rows = [{"id": r.id, "event_id": r.event_id} for r in runs]
        return rows, query.next_cursor(runs)

    async def detail(row: Mapping[str, Any]) -> tuple[Any, list[dict[str, Any]]] | None:
        event = await store.get_event(row["event_id"])
        if event is None:
            return None
        steps = await store.get_steps(row["id"])
        attempts = [{"request": a.request, "response": a.response, "started_at": a.started_at}
                    for step in steps.values() for a in step.attempts]
        return event.data, attempts

    return await _samples(plan, limit, page, detail, "store")


async def server_samples(url: str, token: str | None, plan: Plan, limit: int,
                         transport: httpx.AsyncBaseTransport | None = None) -> list[Sample]:
    """The same, read through the admin API of the server at `url`."""
    async with HttpRunsClient(url, token, transport=transport) as client:

        async def page(query: RunQuery) -> tuple[list[dict[str, Any]], str | None]:
            runs, cursor = await client.list(query)
            return [{"id": r["id"], "event_id": r.get("event_id")} for r in runs], cursor

        async def detail(row: Mapping[str, Any]) -> tuple[Any, list[dict[str, Any]]] | None:
            shown = await client.show(row["id"])
            event = shown.get("event")
            if not isinstance(event, dict):
                return None
            attempts = [a for step in shown.get("steps", []) for a in step.get("attempts", [])]
            return event.get("data"), attempts

        return await _samples(plan, limit, page, detail, url)


Page = Callable[[RunQuery], Awaitable[tuple[list[dict[str, Any]], str | None]]]
Detail = Callable[[Mapping[str, Any]], Awaitable[tuple[Any, list[dict[str, Any]]] | None]]


async def _samples(plan: Plan, limit: int, page: Page, detail: Detail,
                   origin: str) -> list[Sample]:
    operations = StubTransport(plan)
    samples: list[Sample] = []
    for flow in sorted(plan.flows):
        seen: set[str] = set()
        query = RunQuery(flow=flow, limit=min(limit, PAGE))
        while len(seen) < limit:
            rows, cursor = await page(query)
            for row in rows:
                event_id = row.get("event_id") or row["id"]
                if event_id in seen or len(seen) >= limit:
                    continue  # a replay shares its event: one sample
                found = await detail(row)
                if found is None:
                    continue
                seen.add(event_id)
                data, attempts = found
                samples.append(Sample(f"{origin}: run {row['id']}", flow, data,
                                      _responses(operations, attempts)))
            if cursor is None:
                break
            query = RunQuery(flow=flow, limit=query.limit, cursor=cursor)
    return samples


def _responses(operations: StubTransport,
               attempts: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """`system.operation` -> the responses its calls got, in the order they were sent."""
    answered: dict[str, list[dict[str, Any]]] = {}
    for attempt in sorted(attempts, key=lambda a: str(a.get("started_at"))):
        request, response = attempt.get("request"), attempt.get("response")
        if not isinstance(request, dict) or not isinstance(response, dict):
            continue
        if response.get("status") is None:  # no answer (a timeout, a refused connection)
            continue
        name = operations.operation(str(request.get("method")), str(request.get("url")))
        if name is not None:
            answered.setdefault(name, []).append(
                {"status": response["status"], "body": response.get("body")})
    return answered
