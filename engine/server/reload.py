"""Hot reload: watch the project, recompile off the event loop, swap a valid plan in atomically.

A burst of file events (an editor saving several files) is debounced into one recompile. A plan
that does not compile, or needs a secret the server lacks, is rejected: the old plan keeps
serving and the diagnostics go to the log, `/api/v1/status` and `syncline_reloads_total`.
Runs already started keep the plan they started with (the runtime stores plans by digest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from watchfiles import Change, awatch

from engine.compiler.plan import Plan
from engine.errors import DefinitionErrors, SynclineError
from engine.server import audit, logevents
from engine.server.state import ReloadResult, ServerState
from engine.server.tokens import TokensStatus

log = logging.getLogger("syncline.reload")
SUFFIXES = (".yaml", ".yml")
SKIP_DIRS = frozenset({".syncline", ".git", "__pycache__", "node_modules"})


def definition_filter(change: Change, path: str) -> bool:
    """Only YAML files outside the store and VCS directories count as changes."""
    parts = Path(path).parts
    return path.endswith(SUFFIXES) and not SKIP_DIRS.intersection(parts)


class Reloader:
    """Watches `root` and reloads `state` with `compile()` (which must be thread-safe and pure:
    it runs in a worker thread)."""

    def __init__(
        self, state: ServerState, compile: Callable[[], Plan], root: Path, *, debounce: float = 0.3
    ) -> None:
        self.state = state
        self.compile = compile
        self.root = root
        self.debounce = debounce
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tokens_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._watch(), name="syncline-reload")
        self._tokens_task = asyncio.create_task(
            self.state.tokens.watch(self._stop, self._tokens_changed), name="syncline-tokens"
        )

    async def stop(self) -> None:
        self._stop.set()
        for task in (self._task, self._tokens_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._tokens_task = None

    async def _watch(self) -> None:
        quiet = max(1, int(self.debounce * 1000))
        async for changes in awatch(
            self.root,
            watch_filter=definition_filter,
            step=quiet,
            debounce=max(1600, quiet * 4),
            stop_event=self._stop,
        ):
            log.info("definitions changed (%d file events); recompiling", len(changes),
                     extra={"event": "reload.started", "files": len(changes)})
            await self.reload("watch")

    async def reload(self, trigger: str = "api") -> ReloadResult:
        """Recompile now; install the plan if it is valid. Returns what happened."""
        async with self._lock:
            current = self.state.plan.digest
            try:
                plan = await asyncio.to_thread(self.compile)
                if plan.digest != current:
                    await self.state.install(plan, trigger)
                else:
                    self.state.record_reload(
                        ReloadResult(True, time.time(), current, trigger=trigger)
                    )
            except (SynclineError, OSError) as exc:
                result = self._rejected(exc, current, trigger)
            else:
                logevents.reload_accepted(self.state.plan.digest, current, trigger)
                assert self.state.reload is not None
                result = self.state.reload
            await audit.record(self.state.runtime.store, "reload", result.as_dict())
            return result

    async def _tokens_changed(self, status: TokensStatus) -> None:
        detail = {k: v for k, v in status.as_dict().items() if k != "at"}
        await audit.record(self.state.runtime.store, "tokens.reload", detail)

    def _rejected(self, exc: Exception, current: str, trigger: str) -> ReloadResult:
        if isinstance(exc, DefinitionErrors):
            message = "\n".join(d.format() for d in exc.diagnostics if d.severity == "error")
        else:
            message = str(exc)
        logevents.reload_rejected(current, trigger, message)
        result = ReloadResult(False, time.time(), current, error=message, trigger=trigger)
        self.state.record_reload(result)
        return result
