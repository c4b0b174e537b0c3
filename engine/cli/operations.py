"""`syncline` commands for operating through incidents: pause switches for flows and Systems,
backup and restore of the embedded store, and definition owners as code reviewers; the work is
in engine/commands/switches.py, engine/store/backup.py and engine/gitops/codeowners.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from engine.cli.common import (
    DATABASE,
    FORMAT,
    PROJECT_OPTION,
    emit_json,
    exit_on_errors,
    print_diagnostics,
)
from engine.cli.runs import _runs_target, _Target, cli_token


def _switch_group(kind: str, help_text: str) -> click.Group:
    """`syncline flows|systems pause|resume NAME`: the same switch on the store or a server."""

    @click.group(f"{kind}s", help=help_text)
    def group() -> None:
        pass

    for action in ("pause", "resume"):
        _switch_command(group, kind, action)
    return group


def _switch_command(group: click.Group, kind: str, action: str) -> None:
    @group.command(action, help=f"{action.capitalize()} a {kind} (operator; audited).")
    @click.argument("name")
    @click.option("--reason", default="", help="Why (kept in the audit trail).")
    @_runs_target
    def command(name: str, reason: str, target: _Target, fmt: str) -> None:
        import asyncio

        from engine.commands.runs import load_project_plan
        from engine.commands.switches import switch_local, switch_remote
        from engine.errors import StoreError, UsageError

        actor = f"cli:{os.environ.get('USER', 'operator')}"
        with exit_on_errors(UsageError, StoreError):
            if target.url:
                token = cli_token()
                work = switch_remote(target.url, token, kind, name, action, reason, actor)
            else:
                plan = load_project_plan(target.project, target.environment)
                work = switch_local(target.project.resolve(), plan, target.database, kind, name,
                                    action, reason, actor)
            answer = asyncio.run(work)
        if fmt == "json":
            emit_json(answer)
        else:
            said = f" ({answer['reason']})" if answer.get("reason") else ""
            click.echo(f"{kind} '{name}' {'paused' if answer['paused'] else 'resumed'}{said}")


flows = _switch_group(
    "flow",
    "Pause and resume flows: a paused flow still accepts and stores deliveries (202) but starts "
    "no run until resumed; then they run in arrival order.",
)
systems = _switch_group(
    "system",
    "Pause and resume Systems (a maintenance window): no call is sent to a paused System; runs "
    "needing it wait (reason SYSTEM_PAUSED) and continue on resume.",
)


def write_codeowners(project: Path, output: Path | None, check: bool) -> None:
    """`syncline owners --codeowners`: the CODEOWNERS file of a project (see
    engine/gitops/codeowners.py); with `check`, exit 1 with a diff when the file is stale."""
    import difflib

    from engine.gitops.codeowners import render_codeowners, repository_root
    from engine.loader import load_project

    loaded = load_project(project)
    text, problems = render_codeowners(loaded, repository_root(project))
    problems = [*loaded.diagnostics, *problems]
    if problems:
        print_diagnostics(problems)
        sys.exit(1)
    target = output or repository_root(project) / "CODEOWNERS"
    if str(target) == "-":
        click.echo(text, nl=False)
        return
    if check:
        current = target.read_text() if target.is_file() else ""
        if current != text:
            click.echo(f"{target} is not current; run `syncline owners --codeowners`:", err=True)
            diff = difflib.unified_diff(current.splitlines(True), text.splitlines(True),
                                        str(target), "expected")
            click.echo("".join(diff), nl=False, err=True)
            sys.exit(1)
        click.echo(f"{target} is current")
        return
    target.write_text(text)
    files = sum(1 for line in text.splitlines() if not line.startswith("#"))
    click.echo(f"wrote {target} ({files} files)")


@click.group("store")
def store_group() -> None:
    """Back up and restore the embedded store (SQLite). PostgreSQL: pg_dump and pg_restore
    (README, Operations)."""


def _store_file(project: Path, database: str | None) -> Path:
    from engine.errors import UsageError
    from engine.store import SQLiteStore, open_store

    store = open_store(database, project)
    if not isinstance(store, SQLiteStore):
        raise UsageError(
            "a PostgreSQL store is backed up with PostgreSQL's tools: pg_dump --format=custom "
            "--file FILE URL, restored with pg_restore --dbname URL FILE (README, Operations)"
        )
    return store.path


def _print_copy(copied: Any, verb: str, fmt: str) -> None:
    if fmt == "json":
        emit_json({"path": str(copied.path), "schema": copied.schema, "runs": copied.runs,
                   "bytes": copied.bytes, "seconds": round(copied.seconds, 3),
                   "replaced": str(copied.replaced) if copied.replaced else None})
        return
    click.echo(f"{verb} {copied.runs:,} runs (schema {copied.schema}, "
               f"{copied.bytes / 1e6:,.1f} MB) to {copied.path} in {copied.seconds:.2f} s")
    if copied.replaced:
        click.echo(f"the store it replaced is kept as {copied.replaced}")


@store_group.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@DATABASE
@PROJECT_OPTION
@FORMAT
def store_backup(file: Path, database: str | None, project: Path, fmt: str) -> None:
    """A consistent copy of the store in FILE, taken while it serves (SQLite's online backup
    API: one snapshot; writers go on meanwhile)."""
    from engine.errors import StoreError, UsageError
    from engine.store.backup import backup

    with exit_on_errors(UsageError, StoreError):
        copied = backup(_store_file(project, database), file)
    _print_copy(copied, "backed up", fmt)


@store_group.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@DATABASE
@PROJECT_OPTION
@FORMAT
def store_restore(file: Path, database: str | None, project: Path, fmt: str) -> None:
    """Make the backup FILE the store. Refuses (changing nothing) a file that is not a backup,
    a backup of a newer schema, and a store that a running process has open; the store it
    replaces is renamed aside, not deleted."""
    from engine.errors import StoreError, UsageError
    from engine.store.backup import restore

    with exit_on_errors(UsageError, StoreError):
        copied = restore(file, _store_file(project, database))
    _print_copy(copied, "restored", fmt)
