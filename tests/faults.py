"""A Store that delegates to a real one and fails chosen methods on chosen calls, or holds them
until an event is set: the seam the tests use to make the store misbehave (instead of patching a
store's methods)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from engine.store.base import Store


@dataclass
class Fault:
    """Raise `error` (a fresh one from a factory, or the same instance) on the `calls` given
    (1-based numbers of calls to the method; None: every call)."""

    error: BaseException | Callable[[], BaseException]
    calls: Collection[int] | None = None


class _FaultyStore(Store):
    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.faults: dict[str, Fault] = {}
        self.holds: dict[str, tuple[asyncio.Event, Callable[..., bool]]] = {}
        self.calls: Counter[str] = Counter()  # method -> calls so far

    def fail(
        self,
        method: str,
        error: BaseException | Callable[[], BaseException],
        calls: Collection[int] | None = None,
    ) -> None:
        """From now on, `method` raises `error` on the `calls` given (None: on every call)."""
        if method not in Store.__abstractmethods__:
            raise AttributeError(f"Store has no method {method!r}")
        self.faults[method] = Fault(error, calls)
        self.calls[method] = 0

    def hold(self, method: str, until: asyncio.Event, when: Callable[..., bool]) -> None:
        """From now on, the calls of `method` whose arguments `when` accepts wait until `until`
        is set (a slow store, or one a test keeps busy)."""
        if method not in Store.__abstractmethods__:
            raise AttributeError(f"Store has no method {method!r}")
        self.holds[method] = (until, when)

    def heal(self, method: str | None = None) -> None:
        """Stop failing `method` (None: every method)."""
        if method is None:
            self.faults.clear()
        else:
            self.faults.pop(method, None)

    async def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.calls[method] += 1
        fault = self.faults.get(method)
        if fault is not None and (fault.calls is None or self.calls[method] in fault.calls):
            error = fault.error
            raise error if isinstance(error, BaseException) else error()
        held = self.holds.get(method)
        if held is not None and held[1](*args, **kwargs):
            await held[0].wait()
        return await getattr(self.inner, method)(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # commits, path, ...: the real store's
        return getattr(self.inner, name)


def _delegate(method: str) -> Callable[..., Any]:
    async def delegate(self: _FaultyStore, *args: Any, **kwargs: Any) -> Any:
        return await self._call(method, args, kwargs)

    delegate.__name__ = delegate.__qualname__ = method
    return delegate


# Every method of the Store interface, delegated (and failed when asked).
FaultyStore: type[_FaultyStore] = type(
    "FaultyStore",
    (_FaultyStore,),
    {method: _delegate(method) for method in sorted(Store.__abstractmethods__)},
)
