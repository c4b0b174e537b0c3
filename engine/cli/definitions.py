"""The compiler's faces: `syncline validate`, `test`, `graph`, `owners` and `init`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from engine.cli.common import ENV, FORMAT, PROJECT, compile_or_report, emit_json
from engine.commands.results import TestResult


@click.command()
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


@click.command()
@PROJECT
@ENV
@click.option("-k", "pattern", default=None, help="Only tests whose id contains PATTERN.")
@click.option("-v", "--verbose", is_flag=True, help="List each test with its outcome.")
@FORMAT
def test(project: Path, environment: str | None, pattern: str | None, verbose: bool,
         fmt: str) -> None:
    """Run every Mapping's and Flow's `tests:`; pytest-like summary, exit 1 on failure.

    A test id is KIND:NAME@VERSION::TEST (e.g. mapping:to-order@1::basic); a failure is
    reported at FILE:LINE:COL of its test entry."""
    from engine.commands.testing import run_tests

    plan, _ = compile_or_report(project, environment)
    if plan is None:
        sys.exit(1)
    results = run_tests(plan, project.resolve(), pattern)
    failed = [r for r in results if not r.passed]
    if fmt == "json":
        emit_json([{"id": r.id, "passed": r.passed, "detail": r.detail,
                    "location": str(r.location) if r.location else None} for r in results])
    else:
        _print_test_report(results, failed, verbose)
    sys.exit(1 if failed else 0)


def _print_test_report(results: list[TestResult], failed: list[TestResult],
                       verbose: bool) -> None:
    if verbose:
        for r in results:
            click.echo(f"{r.id} {'PASSED' if r.passed else 'FAILED'}")
    else:
        click.echo("".join("." if r.passed else "F" for r in results))
    for r in failed:
        click.echo(f"\n___ {r.id} ___")
        if r.location:
            click.echo(f"{r.location}: test '{r.name}' failed")
        click.echo(r.detail)
    passed = len(results) - len(failed)
    summary = f"{passed} passed, {len(failed)} failed" if failed else f"{passed} passed"
    click.echo(f"\n{summary}")


@click.command()
@PROJECT
@ENV
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot", "json"]), default="mermaid",
              show_default=True)
def graph(project: Path, environment: str | None, fmt: str) -> None:
    """Print the plan's flows, steps, systems and events as a graph."""
    from engine.commands.graph import RENDERERS

    plan, diagnostics = compile_or_report(project, environment, fmt)  # prints nothing
    for diagnostic in sorted(diagnostics):  # stderr: stdout is the graph (warnings included)
        click.echo(diagnostic.format(), err=True)
    if plan is None:
        sys.exit(1)
    click.echo(RENDERERS[fmt](plan), nl=False)


@click.command()
@PROJECT
@ENV
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown", "mermaid"]),
              default="text", show_default=True, help="Output format.")
@click.option("--codeowners", is_flag=True,
              help="Instead: write a CODEOWNERS file, each definition file -> its owners' "
                   "handles (metadata.owner, mapped by syncline.yaml spec.teams).")
@click.option("--output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              default=None, help="--codeowners: where to write it ('-': print it; default: "
                                 "CODEOWNERS at the git repository's root).")
@click.option("--check", is_flag=True,
              help="--codeowners: write nothing; exit 1 if the file is not current (for CI).")
def owners(project: Path, environment: str | None, fmt: str, codeowners: bool,
           output: Path | None, check: bool) -> None:
    """Print the domain ownership matrix: entity, field, owning System, and which flows write
    copies of it where (Schema owner/fieldOwners, operations' schema). With --codeowners, the
    definitions' owners become the reviewers of their files instead."""
    from engine.commands.owners import RENDERERS
    from engine.compiler.ownership import plan_ownership

    if codeowners:
        from engine.cli.operations import write_codeowners

        write_codeowners(project, output, check)
        return

    plan, diagnostics = compile_or_report(project, environment, "quiet")
    for diagnostic in sorted(diagnostics):
        click.echo(diagnostic.format(), err=True)
    if plan is None:
        sys.exit(1)
    click.echo(RENDERERS[fmt](plan_ownership(plan.bundle)), nl=False)


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".",
                required=False)
@click.option("--from", "template", type=click.Choice(["reference", "minimal"]),
              default="minimal", show_default=True,
              help="reference: the quote-to-cash integration `syncline demo` runs; minimal: one "
                   "schema, one mapping with a test and one flow with a test.")
def init(directory: Path, template: str) -> None:
    """Write a new project into DIRECTORY (default: here; it must not hold a syncline.yaml).

    The project validates and its tests pass: try `syncline validate DIRECTORY` and
    `syncline test DIRECTORY`."""
    from engine.commands.init import init_project
    from engine.errors import UsageError

    try:
        written = init_project(directory, template)
    except UsageError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"next: syncline validate {directory} && syncline test {directory}")
