"""`syncline reconcile`: run a Reconciliation now and print its report."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import click

from engine.cli.common import (
    DATABASE,
    ENV,
    FORMAT,
    PROJECT_OPTION,
    SECRETS,
    emit_json,
    exit_on_errors,
)
from engine.cli.runs import REASON, cli_token
from engine.errors import UsageError


@click.command()
@click.argument("name")
@click.option("--url", default=None, help="Run it on the server at URL (its admin API).")
@PROJECT_OPTION
@ENV
@DATABASE
@SECRETS
@REASON
@FORMAT
def reconcile(name: str, url: str | None, project: Path, environment: str | None,
              database: str | None, secrets_file: Path | None, reason: str | None,
              fmt: str) -> None:
    """Run the Reconciliation NAME now and print its report: items missing on either side and
    fields that differ (numbers compared as decimals). The result is stored, and a mismatch
    emits or parks as its `onMismatch` says. Exit 0 when the systems agree, 1 on mismatches
    (or when a side could not be read). With --url the server runs it (token: SYNCLINE_TOKEN,
    else SYNCLINE_ADMIN_TOKEN; operator or admin); else it runs here against the project's
    store."""
    from engine.commands.reconcile import reconcile_local, reconcile_remote, render_report
    from engine.server.serve import load_secrets

    with exit_on_errors(UsageError):
        if url:
            job = reconcile_remote(url, name, cli_token(), reason)
        else:
            secrets = load_secrets(os.environ, secrets_file)
            job = reconcile_local(project.resolve(), name, environment=environment,
                                  secrets=secrets, database=database, reason=reason)
        report = asyncio.run(job)
    if fmt == "json":
        emit_json(report)
    else:
        click.echo(render_report(report))
    sys.exit(0 if report["state"] == "ok" else 1)
