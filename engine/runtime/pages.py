"""Reading a list operation page by page (a `ListRead`): for the poll trigger and for both sides
of a Reconciliation.

`read_pages(calls, read, query, on_page)` calls the operation with `query`, hands each page's
items and response to `on_page`, and follows `pages.next` (sent in `pages.param`) until it is
null or "". Each page is retried as the read's RetryPolicy says (one attempt without one), and
waits for the System's rate limit (`Calls`). What goes wrong is a `ReadProblem` with a code:

    LIST_READ_FAILED     the call failed for good (not retryable, or retries used up)
    LIST_BAD_RESPONSE    `items` gave no list (an HTML error page, an object, ...)
    PAGE_LOOP            a page token came back a second time (or MAX_PAGES pages)
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from engine.compiler.triggers import ListRead
from engine.errors import CallError, CallHeld
from engine.runtime.calls import Calls, OutboundRequest, Response
from engine.runtime.retry import decide

_RNG = random.Random()  # backoff jitter: it must vary, not be secret
MAX_PAGES = 10_000  # a list longer than this in one read is taken for a loop the tokens hide
OnPage = Callable[[list[Any], dict[str, Any]], Awaitable[None]]
Sleep = Callable[[float], Awaitable[Any]]


class ReadProblem(Exception):
    """Why a list read stopped: a reason code and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


async def read_pages(
    calls: Calls, read: ListRead, query: dict[str, Any], on_page: OnPage,
    *, sleep: Sleep = asyncio.sleep,
) -> int:
    """Read every page, calling `on_page(items, response)` for each; answers the page count."""
    token: Any = None
    seen: set[str] = set()
    pages = 0
    while pages < MAX_PAGES:
        page_query = dict(query)
        if token is not None:
            page_query[read.page_param or ""] = token
        response = await fetch(calls, read, page_query, sleep)
        context = {"status": response.status, "headers": response.headers, "body": response.body}
        items = read.items.search(context)
        if not isinstance(items, list):
            got = "null" if items is None else type(items).__name__
            raise ReadProblem("LIST_BAD_RESPONSE", f"{read.operation}: items expression gave "
                              f"{got}, not a list (status {response.status})")
        pages += 1
        await on_page(items, context)
        token = read.page_next.search(context) if read.page_next is not None else None
        if token is None or token == "":
            return pages
        text = json.dumps(token, sort_keys=True, default=str)
        if text in seen:
            raise ReadProblem("PAGE_LOOP", f"{read.operation}: page token {text} came back "
                              f"after {pages} pages")
        seen.add(text)
    raise ReadProblem("PAGE_LOOP", f"{read.operation}: more than {MAX_PAGES} pages in one read")


async def fetch(calls: Calls, read: ListRead, query: dict[str, Any], sleep: Sleep) -> Response:
    """One page, retried as the read's RetryPolicy says."""
    request = OutboundRequest(read.system, read.operation, read.method, read.path, query, {},
                              None, None, f"list-{read.system.name}", None, False)
    policy = read.retry.policy if read.retry is not None else None
    timeout = policy.timeout if policy is not None and policy.timeout else read.system.timeout
    first, attempt = time.time(), 0
    while True:
        attempt += 1
        try:
            return await calls.send(request, timeout=timeout)
        except CallHeld as held:  # a paused System or an open circuit: nothing was sent
            raise ReadProblem(held.code, f"{read.operation}: {held.message}") from None
        except CallError as error:
            decision = None if policy is None else decide(
                policy, error, attempt=attempt, first_attempt_at=first, now=time.time(), rng=_RNG)
            if decision is None or decision.action != "retry":
                reason = decision.reason if decision is not None else str(error)
                raise ReadProblem("LIST_READ_FAILED", f"{read.operation}: {reason}") from None
            await sleep(decision.delay)
