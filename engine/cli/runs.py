"""`syncline run` (one flow, locally) and `syncline runs ...` (history and operator actions on
the project's store, or on a running server with --url); the work is in engine/commands/runs.py
and engine/commands/remote.py."""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from engine.cli.common import (
    DATABASE,
    ENV,
    FORMAT,
    PROJECT_OPTION,
    SECRETS,
    compile_or_report,
    emit_json,
    exit_on_errors,
    fail_usage,
    read_data,
)
from engine.cli.run_text import print_run


@click.command("run")
@click.argument("flow")
@click.option("--input", "input_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Payload file.")
@click.option("--dry-run", is_flag=True, help="Make no calls: print the calls it would make.")
@PROJECT_OPTION
@ENV
@SECRETS
@FORMAT
def run_command(flow: str, input_file: Path, dry_run: bool, project: Path,
                environment: str | None, secrets_file: Path | None, fmt: str) -> None:
    """Execute one flow locally on a payload and print the run (steps, outputs, reason).

    The run is kept in the project's store (see `syncline runs`). With --dry-run, every System
    is stubbed (200 {}), nothing is stored and no secrets are needed."""
    import asyncio

    from engine.commands.runs import run_local
    from engine.errors import SynclineError, UsageError
    from engine.server.serve import load_secrets

    plan, _ = compile_or_report(project, environment)
    if plan is None:
        sys.exit(1)
    try:
        data = read_data(input_file)
        secrets = {} if dry_run else load_secrets(os.environ, secrets_file)
        detail = asyncio.run(run_local(plan, project.resolve(), flow, data, dry_run=dry_run,
                                       secrets=secrets))
    except UsageError as exc:
        fail_usage(exc)
    except SynclineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if fmt == "json":
        emit_json(detail)
    else:
        print_run(detail, dry_run)
    sys.exit(0 if detail.get("state") in ("succeeded", "filtered") else 1)


def _print_table(rows: list[list[str]]) -> None:
    """Rows under a header row, each column as wide as its widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                   .rstrip())


def _time(value: Any) -> str:
    """A run time (ISO 8601 UTC, as the admin API writes it) as `YYYY-MM-DD HH:MM:SS`."""
    return str(value or "").replace("T", " ")[:19]


@click.group()
def runs() -> None:
    """Run history and operator actions: on the project's local store, or with --url on a
    running server's admin API (token from SYNCLINE_TOKEN, else SYNCLINE_ADMIN_TOKEN)."""


@dataclass(frozen=True)
class _Target:
    """Whose runs: a running server (`url`), else the project's store (`database`, by default
    its SQLite file) under the project's plan for `environment`."""

    project: Path
    environment: str | None
    url: str | None
    database: str | None


def _runs_target(command: Any) -> Any:
    """The options that say whose runs, given to `command` as one `target` (a _Target)."""
    url = click.option("--url", default=None, metavar="URL",
                       help="A running `syncline serve` to act on through its admin API, "
                            "instead of the store (token: SYNCLINE_TOKEN or "
                            "SYNCLINE_ADMIN_TOKEN).")

    @functools.wraps(command)
    def with_target(*args: Any, project: Path, environment: str | None, url: str | None,
                    database: str | None, **kwargs: Any) -> Any:
        return command(*args, target=_Target(project, environment, url, database), **kwargs)

    for option in (FORMAT, DATABASE, url, ENV, PROJECT_OPTION):
        with_target = option(with_target)
    return with_target


def _with_client(target: _Target, action: Any) -> Any:
    """Open the runs client (the server at `target.url`, else the project's store), run
    `await action(client)`, close it. Usage errors exit 2, definition errors 1."""
    import asyncio

    from engine.commands.remote import HttpRunsClient
    from engine.commands.runs import LocalRunsClient, RunsClient, load_project_plan
    from engine.errors import StoreError, UsageError

    async def go() -> Any:
        client: RunsClient
        if target.url:
            client = HttpRunsClient(target.url, cli_token())
        else:
            plan = load_project_plan(target.project, target.environment)
            project = target.project.resolve()
            client = await LocalRunsClient(project, plan, database=target.database).open()
        try:
            return await action(client)
        finally:
            await client.aclose()

    with exit_on_errors(UsageError, StoreError):
        return asyncio.run(go())


@runs.command("list")
@click.option("--flow", default=None, help="Only runs of this flow.")
@click.option("--state", default=None, help="Only runs in this state.")
@click.option("--key", default=None, help="Only runs with this idempotency key.")
@click.option("--cursor", default=None, help="Continue after this cursor (from the last page).")
@click.option("--limit", default=50, show_default=True, type=int)
@_runs_target
def runs_list(target: _Target, flow: str | None, state: str | None, key: str | None,
              cursor: str | None, limit: int, fmt: str) -> None:
    """Runs, newest first."""
    from engine.store import RunQuery

    query = RunQuery(flow=flow, state=state, key=key, cursor=cursor, limit=limit)
    items, following = _with_client(target, lambda c: c.list(query))
    if fmt == "json":
        emit_json({"runs": items, "cursor": following})
        return
    if not items:
        click.echo("no runs")
        return
    rows = [["ID", "FLOW", "STATE", "REASON", "KEY", "CREATED (UTC)", "UPDATED (UTC)"]]
    rows += [[run["id"], f"{run['flow']}@{run['flow_version']}", run["state"],
              run["reason"]["code"] if run["reason"] else "", str(run["key"]),
              _time(run["created_at"]), _time(run["updated_at"])] for run in items]
    _print_table(rows)
    if following:
        click.echo(f"(more: --cursor {following})")


@click.group()
def shadow() -> None:
    """Shadow calls: writes mirrored to a candidate System (`shadow:` on a call step)."""


@shadow.command("report")
@click.option("--flow", default=None, help="Only runs of this flow.")
@click.option("--limit", default=500, show_default=True, type=click.IntRange(1, 100_000),
              help="Look at the newest LIMIT runs.")
@_runs_target
def shadow_report(target: _Target, flow: str | None, limit: int, fmt: str) -> None:
    """Per flow, step and candidate System: how many shadow calls matched the primary, which
    paths differed, and what failed (from the runs' lineage; --url for a running server)."""
    from engine.runtime.shadow import summarize
    from engine.store import RunQuery

    async def collect(client: Any) -> list[dict[str, Any]]:
        details: list[dict[str, Any]] = []
        cursor = None
        while len(details) < limit:
            query = RunQuery(flow=flow, cursor=cursor, limit=min(100, limit - len(details)))
            page, cursor = await client.list(query)
            details.extend([await client.show(run["id"]) for run in page])
            if cursor is None or not page:
                break
        return summarize(details)

    groups = _with_client(target, collect)
    if fmt == "json":
        emit_json({"shadows": groups})
        return
    if not groups:
        click.echo("no shadow calls in the runs looked at")
    for g in groups:
        total = g["match"] + g["mismatch"] + g["error"]
        paths = ", ".join(f"{p} x{n}" for p, n in sorted(g["paths"].items(), key=lambda i: -i[1]))
        click.echo(f"{g['flow']} {g['step']} -> {g['system']}: {g['match']} of {total} matched, "
                   f"{g['mismatch']} mismatched{f' ({paths})' if paths else ''}, "
                   f"{g['error']} errors")
        for message, n in sorted(g["errors"].items(), key=lambda i: -i[1])[:5]:
            click.echo(f"  error x{n}: {message}")


@runs.command("show")
@click.argument("run_id")
@_runs_target
def runs_show(run_id: str, target: _Target, fmt: str) -> None:
    """One run: its steps with every attempt of every generation, and its history (what
    started each generation, with which data; every reason it stopped for; corrected data;
    the audit entries of the actions on it). Times are ISO 8601 UTC."""
    detail = _with_client(target, lambda c: c.show(run_id))
    emit_json(detail) if fmt == "json" else print_run(detail)


REASON = click.option("--reason", default=None, metavar="TEXT",
                      help="Why, in words: kept with the action in the audit trail.")


def cli_token() -> str | None:
    """The token `--url` commands present: SYNCLINE_TOKEN, else SYNCLINE_ADMIN_TOKEN."""
    return os.environ.get("SYNCLINE_TOKEN") or os.environ.get("SYNCLINE_ADMIN_TOKEN") or None


def _action(name: str, doc: str) -> None:
    @runs.command(name, help=doc)
    @click.argument("run_id")
    @REASON
    @_runs_target
    def command(run_id: str, reason: str | None, target: _Target, fmt: str) -> None:
        from engine.runtime.runtime import MISSING

        detail = _with_client(target, lambda c: c.act(run_id, name, MISSING, reason))
        emit_json(detail) if fmt == "json" else _print_action(name, run_id, detail)


_action("retry", "Queue a dead-lettered run again (same idempotency keys).")
_action("cancel", "Cancel a run; its completed steps are compensated.")
_action("replay", "Run a run's event again under the current plan (a new, linked run).")


@runs.command("resume")
@click.argument("run_id")
@click.option("--data", "data_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Corrected payload (JSON or YAML) to run on.")
@REASON
@_runs_target
def runs_resume(run_id: str, data_file: Path | None, reason: str | None, target: _Target,
                fmt: str) -> None:
    """Queue a parked run again, optionally with corrected data."""
    from engine.runtime.runtime import MISSING

    data = read_data(data_file) if data_file else MISSING
    detail = _with_client(target, lambda c: c.act(run_id, "resume", data, reason))
    emit_json(detail) if fmt == "json" else _print_action("resume", run_id, detail)


def _print_action(action: str, run_id: str, detail: dict[str, Any]) -> None:
    """What the action left: the run's (for a replay, the new run's) state, then the run."""
    state = detail["state"]
    if action == "replay":
        click.echo(f"replay: run {run_id} replayed as run {detail['id']}, now {state}")
    else:
        click.echo(f"{action}: run {run_id} is now {state}")
    if action == "cancel" and state != "cancelled":
        click.echo("  a worker compensates its completed steps, then it ends cancelled "
                   "(see `syncline runs show`)")
    print_run(detail)
