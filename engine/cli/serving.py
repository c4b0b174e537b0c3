"""Running Syncline: `syncline serve`, `worker` and `demo`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import cast

import click

from engine.cli.common import (
    DATABASE,
    ENV,
    FORMAT,
    LOG_FORMAT,
    LOG_LEVEL,
    PROJECT,
    SECRETS,
    emit_json,
    exit_on_errors,
)


@click.command()
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
@click.option("--tokens", "tokens_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="YAML list of named tokens {name, role, sha256, flows} "
                                 "(default: SYNCLINE_TOKENS_FILE); hot-reloaded.")
@LOG_FORMAT
@LOG_LEVEL
def serve(project: Path, environment: str | None, host: str, port: int, no_watch: bool,
          database: str | None, secrets_file: Path | None, no_workers: bool,
          tokens_file: Path | None, log_format: str | None, log_level: str) -> None:
    """Serve webhooks, /events, process APIs, the admin API and the operator console
    (/console); hot-reload definitions and the tokens file.

    Runs execute in this process unless --no-workers. Tokens and limits come from
    SYNCLINE_TOKENS_FILE, SYNCLINE_ADMIN_TOKEN, SYNCLINE_INGEST_TOKEN, SYNCLINE_SESSION_KEY,
    SYNCLINE_MAX_BODY, SYNCLINE_MAX_PENDING, SYNCLINE_API_TIMEOUT, SYNCLINE_HEAD_TIMEOUT and
    SYNCLINE_BODY_TIMEOUT (a request's head and body must arrive within their sum, or the
    connection closes). Heads over 64 KiB are 431. The Alerts are evaluated every
    SYNCLINE_ALERT_EVERY seconds (default 10). SIGTERM shuts down gracefully (exit 0).

    Logs: one line per event on stderr (startup, shutdown, reload.accepted|rejected,
    webhook.rejected, run.parked|failed|dead-lettered, call.failed, operator.action, ...), never
    a secret, token or body. Traces: set OTEL_EXPORTER_OTLP_ENDPOINT (needs syncline[otel])."""
    from engine.errors import UsageError
    from engine.logs import configure_logging
    from engine.server.config import ServerConfig
    from engine.server.protocol import uvicorn_options
    from engine.server.serve import build_server, load_secrets, run_server

    configure_logging(log_format, log_level)
    with exit_on_errors(UsageError):
        config = ServerConfig.from_environ(os.environ, project=project.resolve(),
                                           environment=environment, watch=not no_watch,
                                           workers=not no_workers, tokens_file=tokens_file,
                                           listen=f"{host}:{port}")
        secrets = load_secrets(os.environ, secrets_file)
        app, _ = build_server(config, environ=os.environ, secrets=secrets, database=database)
    sys.exit(run_server(app, host, port, grace=config.shutdown_grace,
                        **uvicorn_options(config.request_timeout)))


@click.command()
@PROJECT
@ENV
@DATABASE
@SECRETS
@click.option("--concurrency", default=32, show_default=True, type=click.IntRange(1, 10_000),
              help="Runs executing at once in this process.")
@LOG_FORMAT
@LOG_LEVEL
def worker(project: Path, environment: str | None, database: str | None,
           secrets_file: Path | None, concurrency: int, log_format: str | None,
           log_level: str) -> None:
    """Execute the runs that `syncline serve --no-workers` accepts into the same store.

    Start as many as the machine has cores to spare; runs are leased, so each executes once.
    On a SQLite file every process queues for the one write lock, which shows in the ingest
    node's tail latency; PostgreSQL (--database postgresql://...) has no such single lock.
    SIGTERM lets in-flight steps checkpoint, then exits 0. Logs and traces as `serve`'s."""
    import asyncio

    from engine.errors import UsageError
    from engine.logs import configure_logging
    from engine.server.serve import load_secrets, run_worker

    configure_logging(log_format, log_level)
    with exit_on_errors(UsageError):
        secrets = load_secrets(os.environ, secrets_file)
        asyncio.run(run_worker(project.resolve(), environment=environment, environ=os.environ,
                               secrets=secrets, database=database, concurrency=concurrency))


@click.command()
@click.option("--events", default=40, show_default=True, type=click.IntRange(4, 100_000),
              help="Deals closing in the day; amendments, renewals and invoices scale along.")
@click.option("--seed", default=7, show_default=True, type=int, help="Seed of the scripted day.")
@click.option("--project", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A project like the reference one to run instead (default: the reference "
                   "project shipped with Syncline).")
@click.option("--serve", is_flag=True,
              help="Leave the day's exceptions unresolved and keep serving: prints the console's "
                   "address and a token so you can resolve them yourself; Ctrl-C stops.")
@click.option("--backbone", type=click.Choice(["auto", "nats", "memory"]), default="auto",
              show_default=True,
              help="The event backbone the business events are published to. auto: NATS_URL "
                   "if a JetStream server answers there, else a nats-server -js the demo starts "
                   "(when on PATH), else in memory (said so; nothing goes to NATS). nats: a "
                   "real server or an error. memory: in memory.")
@FORMAT
@LOG_FORMAT
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default=None, help="Also log the server's events on stderr from this level on, as "
                                 "`serve` does (default: none; the report tells the day).")
def demo(events: int, seed: int, project: Path | None, serve: bool, backbone: str, fmt: str,
         log_format: str | None, log_level: str | None) -> None:
    """Run the reference quote-to-cash integration end to end against sandbox systems.

    Starts sandbox CRM, ERP, cloud ERP, billing and support systems and Syncline (SQLite in a
    temporary folder) with an event backbone (NATS JetStream, see --backbone), plays a business
    day through real signed webhooks, and reports runs by flow and state, sync latency,
    exceptions, the ERP migration (EU orders routed to the cloud ERP, US orders shadowed onto
    it, per entity), the business events a subscriber found on the backbone and a
    reconciliation of the systems. Exits 0 only if the systems reconcile and every business
    event reached the backbone once."""
    import asyncio

    from engine.demo import DemoOptions, exit_code, format_report, run_demo
    from engine.demo.backbone import Choice
    from engine.errors import SynclineError, UsageError
    from engine.logs import configure_logging, quiet

    if log_level is None:
        quiet()
    else:
        configure_logging(log_format, log_level)
    try:
        options = DemoOptions(events=events, seed=seed, project=project, serve=serve,
                              backbone=cast(Choice, backbone))
        report = asyncio.run(run_demo(options))
    except UsageError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except SynclineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    emit_json(report) if fmt == "json" else click.echo(format_report(report))
    sys.exit(0 if serve else exit_code(report))
