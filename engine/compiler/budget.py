"""The budget of one template rendering: range items, output size and wall-clock time.

Counted where it can be: every ``range()`` a rendering calls charges its length to one budget
(so nested loops are bounded by their product, not each loop alone), and the output is counted
as it is produced. Where it cannot be counted (a loop over data, a slow filter), a watchdog
thread interrupts the rendering thread at its deadline with `BudgetExceeded`, raised between
Python bytecodes. Single C-level operations that could allocate without bound are refused before
they run by the sandbox's guards (`sandbox.py`).

The budget applies to templates Jinja2 renders (loops, blocks); expression-only templates run as
generated Python that cannot loop.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Iterable
from typing import Any

from jinja2.sandbox import safe_range

__all__ = ["MAX_OUTPUT_CHARS", "MAX_RANGE_ITEMS", "MAX_SECONDS", "BudgetExceeded", "Budget",
           "budgeted_range", "collect"]

MAX_RANGE_ITEMS = 1_000_000     #: items all of one rendering's range() calls may produce
MAX_OUTPUT_CHARS = 1024 * 1024  #: characters one rendering may output
MAX_SECONDS = 2.0               #: wall-clock time one rendering may take


class BudgetExceeded(Exception):
    """A rendering went beyond its budget (the message says which)."""


_local = threading.local()


def budgeted_range(*args: int) -> range:
    """``range`` as the sandbox offers it: capped alone, and charged to the rendering's budget."""
    items = safe_range(*args)
    left = getattr(_local, "range_left", None)
    if left is not None:
        left -= len(items)
        if left < 0:
            raise BudgetExceeded(f"loops over range() went beyond {MAX_RANGE_ITEMS} items")
        _local.range_left = left
    return items


def collect(pieces: Iterable[Any]) -> list[Any]:
    """A rendering's output pieces, refused once they exceed MAX_OUTPUT_CHARS."""
    out: list[Any] = []
    size = 0
    for piece in pieces:
        size += len(piece) if type(piece) is str else 1
        if size > MAX_OUTPUT_CHARS:
            raise BudgetExceeded(f"output went beyond {MAX_OUTPUT_CHARS} characters")
        out.append(piece)
    return out


class _Watchdog:
    """One daemon thread interrupting renderings past their deadline."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deadlines: dict[int, float] = {}  # thread id -> deadline (time.monotonic)
        self.fired: set[int] = set()
        self.thread: threading.Thread | None = None

    def arm(self, seconds: float) -> int:
        ident = threading.get_ident()
        with self.lock:
            self.deadlines[ident] = time.monotonic() + seconds
            self.fired.discard(ident)
            if self.thread is None:
                self.thread = threading.Thread(target=self._watch, name="syncline-budget",
                                               daemon=True)
                self.thread.start()
        return ident

    def disarm(self, ident: int) -> bool:
        """Stop watching; True if the deadline passed (any pending interrupt is withdrawn)."""
        with self.lock:
            self.deadlines.pop(ident, None)
            if ident not in self.fired:
                return False
            self.fired.discard(ident)
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)
            return True

    def _watch(self) -> None:
        while True:
            time.sleep(0.05)
            now = time.monotonic()
            with self.lock:
                for ident, deadline in list(self.deadlines.items()):
                    if deadline <= now and ident not in self.fired:
                        self.fired.add(ident)
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(ident), ctypes.py_object(BudgetExceeded))


_WATCHDOG = _Watchdog()


class Budget:
    """``with Budget():`` around one rendering (not reentrant within a thread)."""

    __slots__ = ("ident", "outer")

    def __enter__(self) -> Budget:
        self.outer = getattr(_local, "range_left", None)
        _local.range_left = MAX_RANGE_ITEMS
        self.ident = _WATCHDOG.arm(MAX_SECONDS)
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        timed_out = _WATCHDOG.disarm(self.ident)
        _local.range_left = self.outer
        if timed_out or (kind is BudgetExceeded and not str(exc)):
            raise BudgetExceeded(f"rendering took longer than {MAX_SECONDS:g} s") from exc
