"""The GitOps commands: `syncline plan`, `promote` and `status` (the work is in engine/gitops)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from engine.cli.common import (
    DATABASE,
    ENV,
    FORMAT,
    PROJECT,
    PROJECT_OPTION,
    compile_or_report,
    emit_json,
    print_diagnostics,
)
from engine.errors import DefinitionErrors
from engine.loader import load_project

if TYPE_CHECKING:
    from engine.compiler.plan import Plan
    from engine.gitops.preview import Preview
    from engine.gitops.samples import Redactor, Sample


@click.command("plan")
@PROJECT
@click.option("--base", required=True, metavar="REF|DIR",
              help="A directory, or a git ref of the repository holding PROJECT (read with git; "
                   "the working tree is not touched).")
@ENV
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]),
              default="text", show_default=True,
              help="Output format (markdown: a pull request comment).")
@click.option("--fail-on", type=click.Choice(["breaking", "changed", "failing", "never"]),
              default="never", show_default=True,
              help="Exit 1 on a breaking schema change; with --samples, on any changed or newly "
                   "failing sample (changed) or on a newly failing one (failing).")
@click.option("--samples", default=None, metavar="DIR|store",
              help="Also run the base's and the head's changed mappings and flows on recorded "
              "payloads and show how each output, and each request a call would send, changes: "
              "DIR holds them (DIR/<flow>/*.json|yaml|jsonl, or {flow|trigger, data} wrappers "
              "at the top); `store` reads the newest --samples-limit events of each flow from "
              "the project's store, --database or a server's --url. Nothing is called: Systems "
              "answer with the flow tests' stubs, else what the sample's run recorded.")
@click.option("--samples-limit", default=200, show_default=True, type=click.IntRange(min=1),
              help="With --samples store: events per flow (the newest).")
@DATABASE
@click.option("--url", default=None, metavar="URL",
              help="With --samples store: read them from the server at URL (token: "
                   "SYNCLINE_TOKEN or SYNCLINE_ADMIN_TOKEN; the viewer role suffices).")
def plan_command(project: Path, base: str, environment: str | None, fmt: str,
                 fail_on: str, samples: str | None, samples_limit: int, database: str | None,
                 url: str | None) -> None:
    """What changes against a git ref or a directory, for one environment, like `terraform
    plan`: resources added, removed and changed, active versions, breaking schema changes;
    with --samples, what the changed mappings do to recorded payloads.

    Exit 1 when PROJECT does not compile, a Schema was edited incompatibly in place, or
    --fail-on finds what it names; exit 2 on an unknown base or an unreadable sample."""
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
    if (database or url) and samples != "store":
        raise click.BadParameter("--database and --url go with --samples store",
                                 param_hint="--samples")
    shown = (_preview(project, before, head, samples, samples_limit, database, url)
             if samples is not None else None)
    if shown is not None:
        failing = shown.total("newly_failing") > 0
        failed = failed or (fail_on == "failing" and failing) or (
            fail_on == "changed" and (failing or shown.total("changed") > 0))
    text = render_text(diff, label, str(project))
    if fmt == "json":
        preview = {"preview": shown.as_dict()} if shown is not None else {}
        emit_json({"ok": not failed, "base": label, **diff.as_dict(), **preview})
    elif fmt == "markdown":
        from engine.gitops.preview_render import render_markdown

        click.echo(render_markdown(shown, text), nl=False)
    else:
        click.echo(text, nl=False)
        if shown is not None:
            from engine.gitops.preview_render import render_text as render_preview

            click.echo("\n" + render_preview(shown), nl=False)
    sys.exit(1 if failed else 0)


def _preview(project: Path, before: Plan | None, head: Plan, samples: str, limit: int,
             database: str | None, url: str | None) -> Preview:
    """The change preview on the samples (a directory, or `store`); exit 2 on unreadable ones."""
    from engine.errors import StoreError, UsageError
    from engine.gitops.preview import preview
    from engine.gitops.samples import load_samples

    try:
        if samples == "store":
            loaded = _recorded_samples(project, head, limit, database, url)
        else:
            loaded = load_samples(Path(samples), project)
    except (UsageError, StoreError) as exc:
        click.echo(f"{exc}", err=True)
        sys.exit(2)
    return preview(before, head, loaded, _redactor(project))


def _recorded_samples(project: Path, head: Plan, limit: int, database: str | None,
                      url: str | None) -> list[Sample]:
    import asyncio

    from engine.cli.runs import cli_token
    from engine.commands.runs import store_path
    from engine.errors import UsageError
    from engine.gitops.recorded import server_samples, store_samples
    from engine.store import open_store

    if url:
        return asyncio.run(server_samples(url, cli_token(), head, limit))
    if database is None and not store_path(project).exists():
        raise UsageError(f"--samples store: no local store at {store_path(project)} (give "
                         "--database or --url)")

    async def read() -> list[Sample]:
        store = open_store(database, project.resolve())
        await store.open()
        try:
            return await store_samples(store, head, limit)
        finally:
            await store.close()

    return asyncio.run(read())


def _redactor(project: Path) -> Redactor:
    """The redaction list of the project's syncline.yaml (`spec.redact`), else the default."""
    from engine.gitops.samples import Redactor

    document = load_project(project).project
    spec = document.data.get("spec") if document and isinstance(document.data, dict) else None
    return Redactor((spec or {}).get("redact") if isinstance(spec, dict) else None)


@click.group()
def samples() -> None:
    """Recorded payloads for `syncline plan --samples DIR`."""


@samples.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--limit", default=200, show_default=True, type=click.IntRange(min=1),
              help="Events per flow (the newest).")
@DATABASE
@ENV
@PROJECT_OPTION
def samples_export(directory: Path, limit: int, database: str | None,
                   environment: str | None, project: Path) -> None:
    """Write the last --limit accepted events of each flow of PROJECT from its store (or
    --database) to DIRECTORY/<flow>/<event id>.json, with the redaction list (`spec.redact` in
    syncline.yaml, else emails, names, addresses, phones, tokens, secrets) masked, so the set
    can be committed and previewed with `syncline plan --samples DIRECTORY`."""
    import asyncio

    from engine.cli.common import exit_on_errors
    from engine.commands.runs import store_path
    from engine.errors import StoreError, UsageError
    from engine.gitops.export import export_samples
    from engine.store import open_store

    head, _ = compile_or_report(project, environment)
    if head is None:
        sys.exit(1)
    if database is None and not store_path(project).exists():
        click.echo(f"error: no local store at {store_path(project)}", err=True)
        sys.exit(2)

    async def go() -> dict[str, int]:
        store = open_store(database, project.resolve())
        await store.open()
        try:
            return await export_samples(store, head.flows, directory, limit, _redactor(project))
        finally:
            await store.close()

    with exit_on_errors(UsageError, StoreError):
        written = asyncio.run(go())
    for flow, count in written.items():
        click.echo(f"{flow}: {count} samples")
    click.echo(f"wrote {sum(written.values())} samples to {directory}")


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


@click.command()
@click.option("--from", "source", required=True, metavar="ENV", help="Environment to copy from.")
@click.option("--to", "target", required=True, metavar="ENV", help="Environment to copy into.")
@PROJECT_OPTION
@FORMAT
def promote(source: str, target: str, project: Path, fmt: str) -> None:
    """Make --to run what --from runs: pin, in --to's pins in syncline.yaml, every flow version
    --from runs (its pins, and the newest version of each flow it leaves unpinned), keeping every
    comment and the layout, and print the plan of what --to will now run. Running it again
    changes nothing."""
    from engine.errors import UsageError
    from engine.gitops.diff import diff_bundles, render_text
    from engine.gitops.promote import SourceErrors, promote_project

    try:
        promotion, before, after = promote_project(project, source, target, os.environ)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc
    except SourceErrors as exc:
        click.echo(f"{source} does not compile; nothing written:", err=True)
        print_diagnostics(exc.diagnostics)
        sys.exit(1)
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


@click.command()
@click.option("--url", required=True, help="Base URL of a running `syncline serve`.")
@ENV
@PROJECT_OPTION
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
