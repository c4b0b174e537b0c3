"""What `syncline run` and `syncline runs ...` do, behind a small "runs client" interface so the
CLI stays a thin layer: `LocalRunsClient` works on a project's store (see `open_store`);
`engine.commands.remote.HttpRunsClient` (`--url`) implements the same methods over the admin
API, whose handlers call the same `engine.runtime.actions.perform`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from engine.commands.harness import local_runtime, run_and_describe, run_once
from engine.compiler import compile_project
from engine.compiler.plan import Plan
from engine.compiler.records import StubResponse
from engine.errors import UsageError
from engine.runtime.actions import perform
from engine.runtime.calls import require_secrets
from engine.runtime.runtime import MISSING, Runtime
from engine.runtime.stubs import StubTransport, placeholder_secrets
from engine.server.views import run_detail, run_summary
from engine.store import RunQuery, open_store

RUN_TIMEOUT = 300.0


def store_path(project: Path) -> Path:
    """Where a project keeps its embedded store."""
    return project / ".syncline" / "syncline.db"


class RunsClient(Protocol):
    """Run history and operator actions, on a local store or a running server's admin API."""

    async def list(self, query: RunQuery) -> tuple[list[dict[str, Any]], str | None]:
        """A page of runs and the cursor of the next one (None: the last page)."""
        ...

    async def show(self, run_id: str) -> dict[str, Any]:
        """One run with its steps, attempts and lineage; UsageError if there is none."""
        ...

    async def act(
        self, run_id: str, action: str, data: Any = MISSING, reason: str | None = None
    ) -> dict[str, Any]:
        """One of ACTIONS (resume takes corrected `data`) for `reason`; the affected run's
        detail (for a replay, the new run's)."""
        ...

    async def aclose(self) -> None: ...


class LocalRunsClient:
    """Runs in the project's store: `database` (see `open_store`), by default
    `<project>/.syncline/syncline.db`. Actions change the store; the runtime serving the project
    (`syncline serve` or `syncline worker`) executes the queued runs."""

    def __init__(
        self, project: Path, plan: Plan, actor: str | None = None, database: str | None = None
    ) -> None:
        if database is None and not store_path(project).exists():
            raise UsageError(
                f"no local store at {store_path(project)} (nothing has run in this project yet)"
            )
        self._store = open_store(database, project)
        self._runtime = Runtime(self._store, plan)
        self._actor = actor or f"cli:{os.environ.get('USER', 'operator')}"

    async def open(self) -> LocalRunsClient:
        await self._store.open()
        return self

    async def aclose(self) -> None:
        await self._store.close()

    async def list(self, query: RunQuery) -> tuple[list[dict[str, Any]], str | None]:
        runs, cursor = await self._runtime.list_runs(query)
        return [run_summary(run) for run in runs], cursor

    async def show(self, run_id: str) -> dict[str, Any]:
        detail = await self._runtime.run_detail(run_id)
        if detail is None:
            raise UsageError(f"no run '{run_id}'")
        return run_detail(detail)

    async def act(
        self, run_id: str, action: str, data: Any = MISSING, reason: str | None = None
    ) -> dict[str, Any]:
        return run_detail(await perform(self._runtime, run_id, action, self._actor, data, reason))


async def run_local(
    plan: Plan,
    project: Path,
    flow_name: str,
    data: Any,
    *,
    dry_run: bool = False,
    secrets: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Execute one flow on `data` with the real runtime: against the Systems, in the project's
    store; or with `dry_run`, against stubs that answer 200 `{}`, in a throwaway store. Returns
    the run's detail plus the calls a dry run would have made."""
    flow = plan.flows.get(flow_name)
    if flow is None:
        raise UsageError(f"no flow '{flow_name}' (flows: {', '.join(sorted(plan.flows))})")
    if not dry_run:
        require_secrets(plan.secret_names, secrets or {})
        async with local_runtime(
            plan, store_file=store_path(project), secrets=secrets, grace=5
        ) as runtime:
            run = await run_once(runtime, flow, data, "cli", RUN_TIMEOUT)
            found = await runtime.run_detail(run.id)
            return {} if found is None else run_detail(found)
    stubs = StubTransport(plan, default=StubResponse(status=200, body={}))
    async with local_runtime(
        plan, secrets=placeholder_secrets(plan), transport=stubs.transport(), grace=5
    ) as runtime:
        described = await run_and_describe(runtime, flow, data, stubs, RUN_TIMEOUT)
    calls = [
        {
            "system": c.system,
            "operation": c.operation,
            "method": c.method,
            "url": c.url,
            "headers": c.headers,
            "body": c.body,
        }
        for c in stubs.calls
    ]
    return {**described["detail"], "calls": calls}


def load_project_plan(project: Path, environment: str | None) -> Plan:
    """The project's plan for an environment (raises DefinitionErrors)."""
    return compile_project(project, environment=environment, environ=os.environ)
