"""What every `syncline` command shares: its options, compiling with printed diagnostics, JSON
output and how errors become exit codes (1 the checked thing failed, 2 usage error)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from engine.errors import DefinitionErrors
from engine.loader import load_project
from engine.source import Diagnostic

if TYPE_CHECKING:  # the compiler is imported by the commands that compile: --help need not wait
    from engine.compiler.plan import Plan

FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                      show_default=True, help="Output format.")
ENV = click.option("--env", "environment", default=None, envvar="SYNCLINE_ENV",
                   help="Environment of syncline.yaml (default: SYNCLINE_ENV, else the first).")
PROJECT = click.argument("project", type=click.Path(file_okay=False, path_type=Path),
                         default=".", required=False)
PROJECT_OPTION = click.option("--project", type=click.Path(file_okay=False, path_type=Path),
                              default=".", show_default=True, help="The project directory.")
DATABASE = click.option(
    "--database", default=None, metavar="URL",
    help="postgresql://..., a SQLite path or sqlite:///PATH "
         "(default: PROJECT/.syncline/syncline.db).")
LOG_FORMAT = click.option(
    "--log-format", type=click.Choice(["text", "json"]), default=None,
    help="Log lines on stderr: text, or JSON objects (default: text on a terminal, else json).")
LOG_LEVEL = click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
    show_default=True,
    help="Least severe events logged; debug adds every delivery, run and call.")
SECRETS = click.option(
    "--secrets", "secrets_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="File of NAME=value secrets (or a JSON object).")


def compile_or_report(project: Path, environment: str | None, fmt: str = "text"
                      ) -> tuple[Plan | None, list[Diagnostic]]:
    """Compile a project; on failure print every diagnostic and return (None, diagnostics)."""
    from engine.compiler import compile_loaded

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


def print_diagnostics(diagnostics: Iterable[Diagnostic]) -> None:
    diagnostics = sorted(diagnostics)
    for diagnostic in diagnostics:
        click.echo(diagnostic.format())
    errors = sum(1 for d in diagnostics if d.severity == "error")
    if errors:
        click.echo(f"{errors} error{'s' if errors != 1 else ''}", err=True)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def fail_usage(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


@contextlib.contextmanager
def exit_on_errors(*usage: type[Exception]) -> Iterator[None]:
    """Invalid definitions exit 1 with their diagnostics; `usage` errors exit 2 with a message."""
    try:
        yield
    except DefinitionErrors as exc:
        print_diagnostics(exc.diagnostics)
        sys.exit(1)
    except usage as exc:
        fail_usage(exc)


def read_data(file: Path) -> Any:
    """A JSON or YAML payload file."""
    from engine.commands.results import load_fixture

    return load_fixture(None, str(file.resolve()), Path("/"))
