"""The `syncline` command: parses arguments, calls the stages, prints. Exit codes: 0 success,
1 the checked thing failed (invalid definitions, failing tests), 2 usage error."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from engine.compiler import compile_loaded
from engine.compiler.plan import Plan
from engine.errors import DefinitionErrors
from engine.loader import load_project
from engine.source import Diagnostic

FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                      show_default=True, help="Output format.")
ENV = click.option("--env", "environment", default=None, envvar="SYNCLINE_ENV",
                   help="Environment of syncline.yaml (default: SYNCLINE_ENV, else the first).")
PROJECT = click.argument("project", type=click.Path(file_okay=False, path_type=Path),
                         default=".", required=False)
DATABASE = click.option(
    "--database", default=None, metavar="URL",
    help="postgresql://..., a SQLite path or sqlite:///PATH "
         "(default: PROJECT/.syncline/syncline.db).")
SECRETS = click.option(
    "--secrets", "secrets_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="File of NAME=value secrets (or a JSON object).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="syncline")
def main() -> None:
    """Syncline: declarative integration-as-code for quote-to-cash."""


def compile_or_report(project: Path, environment: str | None, fmt: str = "text"
                      ) -> tuple[Plan | None, list[Diagnostic]]:
    """Compile a project; on failure print every diagnostic and return (None, diagnostics)."""
    loaded = load_project(project)
    try:
        plan = compile_loaded(loaded, environment=environment, environ=os.environ)
    except DefinitionErrors as exc:
        if fmt == "text":
            print_diagnostics(exc.diagnostics)
        return None, exc.diagnostics
    if fmt == "text":
        print_diagnostics(plan.warnings)
    return plan, list(plan.warnings)


def print_diagnostics(diagnostics: Any) -> None:
    for diagnostic in sorted(diagnostics):
        click.echo(diagnostic.format())
    errors = sum(1 for d in diagnostics if d.severity == "error")
    if errors:
        click.echo(f"{errors} error{'s' if errors != 1 else ''}", err=True)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


@main.command()
@PROJECT
@ENV
@FORMAT
def validate(project: Path, environment: str | None, fmt: str) -> None:
    """Compile a project and report every error as FILE:LINE:COL: error[CODE] message."""
    plan, diagnostics = compile_or_report(project, environment, fmt)
    if fmt == "json":
        emit_json({
            "ok": plan is not None,
            "digest": plan.digest if plan else None,
            "environment": plan.environment if plan else environment,
            "diagnostics": [d.as_dict() for d in sorted(diagnostics)],
        })
    elif plan is not None:
        click.echo(f"ok: {len(plan.flow_versions)} flows, {len(plan.mappings)} mappings, "
                   f"{len(plan.schemas)} schemas, {len(plan.systems)} systems "
                   f"[{plan.environment}] {plan.digest}")
    sys.exit(0 if plan is not None else 1)


@main.command()
@PROJECT
@ENV
@click.option("-k", "pattern", default=None, help="Only tests whose id contains PATTERN.")
@FORMAT
def test(project: Path, environment: str | None, pattern: str | None, fmt: str) -> None:
    """Run every Mapping's and Flow's `tests:`; pytest-like summary, exit 1 on failure."""
    from engine.runtime.testing import run_flow_tests
    from engine.testing import run_tests

    plan, _ = compile_or_report(project, environment)
    if plan is None:
        sys.exit(1)
    results = run_tests(plan, project.resolve(), pattern, flow_runner=run_flow_tests)
    failed = [r for r in results if not r.passed]
    if fmt == "json":
        emit_json([{"id": r.id, "passed": r.passed, "detail": r.detail} for r in results])
    else:
        _print_test_report(results, failed)
    sys.exit(1 if failed else 0)


def _print_test_report(results: list[Any], failed: list[Any]) -> None:
    click.echo("".join("." if r.passed else "F" for r in results))
    for r in failed:
        click.echo(f"\n___ {r.id} ___")
        if r.location:
            click.echo(f"{r.location}")
        click.echo(r.detail)
    passed = len(results) - len(failed)
    summary = f"{passed} passed, {len(failed)} failed" if failed else f"{passed} passed"
    click.echo(f"\n{summary}")


@main.command()
@PROJECT
@ENV
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot", "json"]), default="mermaid",
              show_default=True)
def graph(project: Path, environment: str | None, fmt: str) -> None:
    """Print the plan's flows, steps, systems and events as a graph."""
    from engine.render import RENDERERS

    plan, diagnostics = compile_or_report(project, environment, fmt)  # prints nothing
    for diagnostic in sorted(diagnostics):  # stderr: stdout is the graph (warnings included)
        click.echo(diagnostic.format(), err=True)
    if plan is None:
        sys.exit(1)
    click.echo(RENDERERS[fmt](plan), nl=False)



@main.command()
@PROJECT
@ENV
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8080, show_default=True, type=int, help="TCP port.")
@click.option("--no-watch", is_flag=True, help="Do not hot-reload on definition changes.")
@DATABASE
@SECRETS
@click.option("--no-workers", is_flag=True,
              help="Ingest only: accept and store, execute nothing; run `syncline worker` "
                   "processes on the same store to execute the runs.")
def serve(project: Path, environment: str | None, host: str, port: int, no_watch: bool,
          database: str | None, secrets_file: Path | None, no_workers: bool) -> None:
    """Serve webhooks, /events, process APIs and the admin API; hot-reload definitions.

    Runs execute in this process unless --no-workers. Tokens and limits come from
    SYNCLINE_ADMIN_TOKEN, SYNCLINE_INGEST_TOKEN, SYNCLINE_MAX_BODY, SYNCLINE_MAX_PENDING and
    SYNCLINE_API_TIMEOUT. SIGTERM shuts down gracefully (exit 0)."""
    from engine.errors import UsageError
    from engine.server.config import ServerConfig
    from engine.server.serve import build_server, load_secrets, run_server

    with _exit_on_errors(UsageError):
        config = ServerConfig.from_environ(os.environ, project=project.resolve(),
                                           environment=environment, watch=not no_watch,
                                           workers=not no_workers)
        secrets = load_secrets(os.environ, secrets_file)
        app, _ = build_server(config, environ=os.environ, secrets=secrets, database=database)
    sys.exit(run_server(app, host, port, grace=config.shutdown_grace))


@main.command()
@PROJECT
@ENV
@DATABASE
@SECRETS
@click.option("--concurrency", default=32, show_default=True, type=click.IntRange(1, 10_000),
              help="Runs executing at once in this process.")
def worker(project: Path, environment: str | None, database: str | None,
           secrets_file: Path | None, concurrency: int) -> None:
    """Execute the runs that `syncline serve --no-workers` accepts into the same store.

    Start as many as the machine has cores to spare; runs are leased, so each executes once.
    On a SQLite file every process queues for the one write lock, which shows in the ingest
    node's tail latency; PostgreSQL (--database postgresql://...) has no such single lock.
    SIGTERM lets in-flight steps checkpoint, then exits 0."""
    import asyncio

    from engine.errors import UsageError
    from engine.server.serve import load_secrets, run_worker

    with _exit_on_errors(UsageError):
        secrets = load_secrets(os.environ, secrets_file)
        asyncio.run(run_worker(project.resolve(), environment=environment, environ=os.environ,
                               secrets=secrets, database=database, concurrency=concurrency))


# --- GitOps: plan, promote, status (engine/gitops) ----------------------------------------------


@main.command("plan")
@PROJECT
@click.option("--base", required=True, metavar="REF|DIR",
              help="A directory, or a git ref of the repository holding PROJECT (read with git; "
                   "the working tree is not touched).")
@ENV
@FORMAT
@click.option("--fail-on", type=click.Choice(["breaking", "never"]), default="never",
              show_default=True, help="Exit 1 when a breaking schema change is found.")
def plan_command(project: Path, base: str, environment: str | None, fmt: str,
                 fail_on: str) -> None:
    """What changes against a git ref or a directory, for one environment, like `terraform
    plan`: resources added, removed and changed, active versions, breaking schema changes.

    Exit 1 when PROJECT does not compile, a Schema was edited incompatibly in place, or
    (with --fail-on breaking) something is breaking."""
    from engine.gitops.diff import diff_bundles, render_text

    head, diagnostics = compile_or_report(project, environment, fmt)
    if head is None:
        if fmt == "json":
            emit_json({"ok": False, "diagnostics": [d.as_dict() for d in sorted(diagnostics)]})
        sys.exit(1)
    before, label = _compile_base(project, base, head.environment, fmt)
    diff = diff_bundles(before.bundle if before else None, head.bundle,
                        base_digest=before.digest if before else None, head_digest=head.digest,
                        head_documents=load_project(project).documents)
    failed = bool(diff.errors) or (fail_on == "breaking" and bool(diff.breaking))
    if fmt == "json":
        emit_json({"ok": not failed, "base": label, **diff.as_dict()})
    else:
        click.echo(render_text(diff, label, str(project)), nl=False)
    sys.exit(1 if failed else 0)


def _compile_base(project: Path, base: str, environment: str, fmt: str) -> tuple[Plan | None, str]:
    """The base compiled for `environment` (None: it has no project or environment yet)."""
    from engine.errors import UsageError
    from engine.gitops.base import compile_base, load_base

    try:
        loaded, label = load_base(project, base)
        return compile_base(loaded, environment, os.environ), label
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="--base") from exc
    except DefinitionErrors as exc:
        if fmt == "json":
            emit_json({"ok": False, "base": base,
                       "base_diagnostics": [d.as_dict() for d in sorted(exc.diagnostics)]})
        else:
            click.echo(f"the base {base} does not compile:", err=True)
            print_diagnostics(exc.diagnostics)
        sys.exit(1)


@main.command()
@click.option("--from", "source", required=True, metavar="ENV", help="Environment to copy from.")
@click.option("--to", "target", required=True, metavar="ENV", help="Environment to copy into.")
@click.option("--project", type=click.Path(file_okay=False, path_type=Path), default=".",
              show_default=True, help="The project directory.")
@FORMAT
def promote(source: str, target: str, project: Path, fmt: str) -> None:
    """Make --to run what --from runs: write --from's pins (active flow versions) into --to's in
    syncline.yaml, keeping every comment and the layout, and print the plan of what --to will
    now run. Running it again changes nothing."""
    from engine.errors import UsageError
    from engine.gitops.diff import diff_bundles, render_text
    from engine.gitops.promote import promote_project

    try:
        promotion, before, after = promote_project(project, source, target, os.environ)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc
    except DefinitionErrors as exc:
        click.echo(f"{target} would not compile with {source}'s pins; nothing written:", err=True)
        print_diagnostics(exc.diagnostics)
        sys.exit(1)
    if promotion.changed:
        (project / "syncline.yaml").write_bytes(promotion.text.encode("utf-8"))
    diff = diff_bundles(before.bundle if before else None, after.bundle,
                        base_digest=before.digest if before else None, head_digest=after.digest)
    if fmt == "json":
        emit_json({"from": source, "to": target, "changed": promotion.changed,
                   "old_pins": promotion.old_pins, "new_pins": promotion.new_pins,
                   "plan": diff.as_dict()})
        return
    verb = "wrote syncline.yaml" if promotion.changed else "syncline.yaml unchanged"
    click.echo(f"promote {source} -> {target}: pins {promotion.old_pins} -> "
               f"{promotion.new_pins}; {verb}")
    click.echo(render_text(diff, f"{target} before", f"{target} now"), nl=False)


@main.command()
@click.option("--url", required=True, help="Base URL of a running `syncline serve`.")
@ENV
@click.option("--project", type=click.Path(file_okay=False, path_type=Path), default=".",
              show_default=True, help="The project directory.")
@FORMAT
def status(url: str, environment: str | None, project: Path, fmt: str) -> None:
    """Compare what the server at URL runs (GET /api/v1/status: digest, flow versions) with
    the project compiled for ENV (default: the server's environment). Exit 0 in sync, 1 on
    drift or when the server cannot be asked. The token is SYNCLINE_ADMIN_TOKEN."""
    from engine.gitops.drift import StatusUnavailable, compare_status, fetch_status, render_text

    try:
        document = fetch_status(url, os.environ.get("SYNCLINE_ADMIN_TOKEN"))
    except StatusUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    plan, diagnostics = compile_or_report(project, environment or document.get("environment"), fmt)
    if plan is None:
        if fmt == "json":
            emit_json({"url": url, "in_sync": False,
                       "diagnostics": [d.as_dict() for d in sorted(diagnostics)]})
        sys.exit(1)
    drift = compare_status(plan, document)
    if fmt == "json":
        emit_json({"url": url, **drift.as_dict()})
    else:
        click.echo(render_text(drift, url), nl=False)
    sys.exit(0 if drift.in_sync else 1)


# -- run one flow, and operate on runs (engine.runtime.client does the work) ---------------------
PROJECT_OPTION = click.option("--project", type=click.Path(file_okay=False, path_type=Path),
                              default=".", show_default=True, help="The project directory.")


def _read_data(file: Path) -> Any:
    """A JSON or YAML payload file."""
    from engine.testing import load_fixture

    return load_fixture(None, str(file.resolve()), Path("/"))


def _fail_usage(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


@contextlib.contextmanager
def _exit_on_errors(*usage: type[Exception]) -> Iterator[None]:
    """Invalid definitions exit 1 with their diagnostics; `usage` errors exit 2 with a message."""
    try:
        yield
    except DefinitionErrors as exc:
        print_diagnostics(exc.diagnostics)
        sys.exit(1)
    except usage as exc:
        _fail_usage(exc)


@main.command("run")
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

    from engine.errors import SynclineError, UsageError
    from engine.runtime.client import run_local
    from engine.server.serve import load_secrets

    plan, _ = compile_or_report(project, environment)
    if plan is None:
        sys.exit(1)
    try:
        data = _read_data(input_file)
        secrets = {} if dry_run else load_secrets(os.environ, secrets_file)
        detail = asyncio.run(run_local(plan, project.resolve(), flow, data, dry_run=dry_run,
                                       secrets=secrets))
    except UsageError as exc:
        _fail_usage(exc)
    except SynclineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if fmt == "json":
        emit_json(detail)
    else:
        _print_run(detail, dry_run)
    sys.exit(0 if detail.get("state") in ("succeeded", "filtered") else 1)


def _print_run(detail: dict[str, Any], dry_run: bool = False) -> None:
    if dry_run:
        for call in detail.get("calls", []):
            click.echo(f"would call {call['system']}.{call['operation']}: "
                       f"{call['method']} {call['url']}")
            for name, value in call["headers"].items():
                click.echo(f"  {name}: {value}")
            if call["body"] is not None:
                click.echo("  " + json.dumps(call["body"], indent=2).replace("\n", "\n  "))
    click.echo(f"run {detail['id']} {detail['flow']}@{detail['flow_version']}: {detail['state']}")
    if detail.get("reason"):
        reason = detail["reason"]
        click.echo(f"  reason: {reason['code']} at step {reason['step']}: {reason['message']}")
    for step in detail.get("steps", []):
        tries = len(step["attempts"])
        click.echo(f"  {step['id']:<20} {step['state']:<12} attempts={tries} "
                   f"output={json.dumps(step['output'], default=str)[:200]}")


@main.group()
def runs() -> None:
    """Run history and operator actions: on the project's local store, or with --url on a
    running server's admin API (token from SYNCLINE_ADMIN_TOKEN)."""


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
                            "instead of the store (token: SYNCLINE_ADMIN_TOKEN).")

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

    from engine.errors import StoreError, UsageError
    from engine.runtime.client import LocalRunsClient, RunsClient, load_project_plan
    from engine.server.client import HttpRunsClient

    async def go() -> Any:
        client: RunsClient
        if target.url:
            client = HttpRunsClient(target.url, os.environ.get("SYNCLINE_ADMIN_TOKEN") or None)
        else:
            plan = load_project_plan(target.project, target.environment)
            project = target.project.resolve()
            client = await LocalRunsClient(project, plan, database=target.database).open()
        try:
            return await action(client)
        finally:
            await client.aclose()

    with _exit_on_errors(UsageError, StoreError):
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
    from engine.runtime.client import RunQuery

    query = RunQuery(flow=flow, state=state, key=key, cursor=cursor, limit=limit)
    items, following = _with_client(target, lambda c: c.list(query))
    if fmt == "json":
        emit_json({"runs": items, "cursor": following})
        return
    for run in items:
        reason = run["reason"]["code"] if run["reason"] else ""
        click.echo(f"{run['id']}  {run['flow']}@{run['flow_version']:<3} {run['state']:<14} "
                   f"key={run['key']} {reason}".rstrip())
    if following:
        click.echo(f"(more: --cursor {following})")


@runs.command("show")
@click.argument("run_id")
@_runs_target
def runs_show(run_id: str, target: _Target, fmt: str) -> None:
    """One run with its steps, attempts and lineage."""
    detail = _with_client(target, lambda c: c.show(run_id))
    emit_json(detail) if fmt == "json" else _print_run(detail)


def _action(name: str, doc: str) -> None:
    @runs.command(name, help=doc)
    @click.argument("run_id")
    @_runs_target
    def command(run_id: str, target: _Target, fmt: str) -> None:
        detail = _with_client(target, lambda c: c.act(run_id, name))
        emit_json(detail) if fmt == "json" else _print_run(detail)


_action("retry", "Queue a dead-lettered run again (same idempotency keys).")
_action("cancel", "Cancel a run; its completed steps are compensated.")
_action("replay", "Run a run's event again under the current plan (a new, linked run).")


@runs.command("resume")
@click.argument("run_id")
@click.option("--data", "data_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Corrected payload (JSON or YAML) to run on.")
@_runs_target
def runs_resume(run_id: str, data_file: Path | None, target: _Target, fmt: str) -> None:
    """Queue a parked run again, optionally with corrected data."""
    from engine.runtime.runtime import MISSING

    data = _read_data(data_file) if data_file else MISSING
    detail = _with_client(target, lambda c: c.act(run_id, "resume", data))
    emit_json(detail) if fmt == "json" else _print_run(detail)


@main.command()
@click.option("--events", default=40, show_default=True, type=click.IntRange(4, 100_000),
              help="Deals closing in the day; amendments, renewals and invoices scale along.")
@click.option("--seed", default=7, show_default=True, type=int, help="Seed of the scripted day.")
@click.option("--project", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Source checkout with the reference project (default: this package's).")
@FORMAT
def demo(events: int, seed: int, project: Path | None, fmt: str) -> None:
    """Run the reference quote-to-cash integration end to end against sandbox systems.

    Starts sandbox CRM, ERP, billing and support systems and Syncline (SQLite in a temporary
    folder), plays a business day through real signed webhooks, and reports runs by flow and
    state, sync latency, exceptions and a reconciliation of the systems. Exits 0 only if the
    systems reconcile."""
    import asyncio

    from engine.demo import DemoOptions, exit_code, format_report, run_demo
    from engine.errors import SynclineError, UsageError

    try:
        report = asyncio.run(run_demo(DemoOptions(events=events, seed=seed, project=project)))
    except UsageError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except SynclineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    emit_json(report) if fmt == "json" else click.echo(format_report(report))
    sys.exit(exit_code(report))


if __name__ == "__main__":
    main()
