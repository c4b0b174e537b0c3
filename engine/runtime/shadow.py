"""Shadow calls: a write mirrored to a candidate System (phased ERP coexistence).

The candidate gets the same request (its own idempotency key, `<step>#shadow`) at the same time
as the primary, through its own connection pool. Once the primary answered after L seconds, the
step waits at most another L (and never past the shadow's own timeout) for the candidate, so a
shadow never delays the next step by more than the primary's own latency. The result is kept in
the attempt's lineage (`response.shadow`): `match`, `mismatch` with the differing paths of the
`compare` expression evaluated on both responses ({status, headers, body}), or `error` (the
candidate failed, timed out, or `compare` failed on its answer). It never changes the run:
failures are recorded, never retried, and the step's output is the primary's.

`summarize` folds the shadow results of run details into the report `syncline shadow report`
prints.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from engine.compiler.compiled import CallShadow
from engine.errors import CallError, ExecutionError
from engine.runtime.calls import Calls, OutboundRequest

MAX_PATHS = 20


@dataclass
class Shadow:
    """A shadow request in flight beside its primary."""

    spec: CallShadow
    task: asyncio.Task[Any] | None
    started: float
    request: OutboundRequest | None
    unsent: str | None = None   # why the request could not be built (then nothing was sent)

    @classmethod
    def start(cls, spec: CallShadow, build: Callable[[], OutboundRequest], calls: Calls,
              clock: Callable[[], float]) -> Shadow:
        """Send the candidate's request now; a request that cannot be built (a path parameter
        without a value) is the shadow's error, never the step's."""
        try:
            request = build()
        except ExecutionError as error:
            return cls(spec, None, clock(), None, f"request not sent: {error}")
        send = calls.send(request, timeout=spec.timeout, shadow=True)
        return cls(spec, asyncio.create_task(send), clock(), request)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def settle(self, primary: dict[str, Any], latency: float,
                     clock: Callable[[], float]) -> dict[str, Any]:
        """Wait up to `latency` more (within the shadow's timeout), then compare."""
        system = self.spec.call.system.name
        if self.task is None:
            return _result(system, "error", error=self.unsent)
        budget = max(0.0, min(latency, self.spec.timeout - (clock() - self.started)))
        try:
            async with asyncio.timeout(budget):
                response = await asyncio.shield(self.task)
        except TimeoutError:
            self.cancel()
            with contextlib.suppress(asyncio.CancelledError, CallError):
                await self.task
            return _result(system, "error", error=f"no answer within {latency:.3f}s "
                           "(the primary's latency)")
        except CallError as error:
            return _result(system, "error", status=error.status, error=error.message)
        try:
            candidate = {"status": response.status, "headers": response.headers,
                         "body": self._adapted(response.status, response.body)}
            paths = differences(self.spec.compare.search(primary),
                                self.spec.compare.search(candidate))
        except ExecutionError as error:
            return _result(system, "error", status=response.status,
                           error=f"compare {self.spec.compare.text} failed: {error}")
        if paths:
            return _result(system, "mismatch", status=response.status, paths=paths[:MAX_PATHS])
        return _result(system, "match", status=response.status)

    def _adapted(self, status: int, body: Any) -> Any:
        """The candidate's answer in the flows' shape (its operation's `response` Mapping)."""
        assert self.request is not None
        adapter = self.request.system.adapters.get(self.request.operation)
        return adapter.inbound(status, body) if adapter is not None else body


def _result(system: str, result: str, **detail: Any) -> dict[str, Any]:
    return {"system": system, "result": result, **detail}


def differences(left: Any, right: Any, path: str = "") -> list[str]:
    """The paths where two JSON values differ; numbers compare by value (100 == 100.0), objects
    by key (order never matters), and a list of another length differs as a whole."""
    if isinstance(left, dict) and isinstance(right, dict):
        return [p for key in sorted(left.keys() | right.keys(), key=str)
                for p in differences(left.get(key), right.get(key), f"{path}.{key}" if path
                                     else str(key))]
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        return [p for i, (a, b) in enumerate(zip(left, right, strict=True))
                for p in differences(a, b, f"{path}[{i}]")]
    return [] if _same(left, right) else [path or "."]


def _same(left: Any, right: Any) -> bool:
    numbers = (int, float)
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if isinstance(left, numbers) and isinstance(right, numbers):
        return float(left) == float(right)
    return bool(left == right)


# -- the report ----------------------------------------------------------------------------------

def shadow_results(run: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    """(step id, shadow result) of each attempt of a run detail that shadowed its call."""
    for step in run.get("steps", []):
        for attempt in step.get("attempts", []):
            found = (attempt.get("response") or {}).get("shadow")
            if isinstance(found, dict):
                yield step["id"], found


def summarize(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per flow, step and candidate System: matches, mismatches (with how often each path
    differed) and errors (with the last message), sorted."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for run in runs:
        for step, found in shadow_results(run):
            key = (run["flow"], step, found["system"])
            group = groups.setdefault(key, {"flow": key[0], "step": step, "system": key[2],
                                            "match": 0, "mismatch": 0, "error": 0,
                                            "paths": {}, "errors": {}})
            group[found["result"]] += 1
            for path in found.get("paths", []):
                group["paths"][path] = group["paths"].get(path, 0) + 1
            if found["result"] == "error":
                message = str(found.get("error", ""))
                group["errors"][message] = group["errors"].get(message, 0) + 1
    return [groups[k] for k in sorted(groups)]
