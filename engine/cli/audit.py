"""`syncline audit` (the audit trail, and `verify` of its hash chain) and `syncline tokens`
(named tokens for the tokens file)."""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from pathlib import Path
from typing import Any

import click

from engine.cli.runs import cli_token

FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                      show_default=True, help="Output format.")  # fmt: skip
DATABASE = click.option(
    "--database",
    default=None,
    metavar="URL",
    help="postgresql://... or a SQLite path (default: the project's).",
)

PROJECT_DIR = click.option(
    "--project", type=click.Path(file_okay=False, path_type=Path), default=".",
    help="Project whose store to read (default: the current directory).")  # fmt: skip


@click.group(invoke_without_command=True)
@click.option(
    "--url",
    default=None,
    metavar="URL",
    help="A running `syncline serve` (token: SYNCLINE_TOKEN or SYNCLINE_ADMIN_TOKEN; "
    "any role but ingest) instead of the project's store.",
)
@click.option("--run", "run_id", default=None, help="Only entries about this run.")
@click.option("--actor", default=None, help="Only entries by this token name.")
@click.option("--action", default=None, help="Only this action (resume, cancel, reload...).")
@click.option("--since", default=None, metavar="TIME", help="Only entries since (ISO 8601).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 500))
@PROJECT_DIR
@DATABASE
@FORMAT
@click.pass_context
def audit(ctx: click.Context, url: str | None, run_id: str | None, actor: str | None,
          action: str | None, since: str | None, limit: int, project: Path,
          database: str | None, fmt: str) -> None:  # fmt: skip
    """The audit trail, newest first: who did what to which run, when and why.

    `syncline audit verify` checks its hash chain."""
    if ctx.invoked_subcommand is not None:
        return
    given = {"run": run_id, "actor": actor, "action": action, "since": since}
    params = {k: v for k, v in given.items() if v is not None}
    found = _run(_entries(url, project, database, params, limit))
    if fmt == "json":
        click.echo(json.dumps({"entries": found}, indent=2, ensure_ascii=False))
        return
    for e in found:
        run = f" run={e['run_id']}" if e["run_id"] else ""
        why = f'  "{e["reason"]}"' if e.get("reason") else ""
        click.echo(f"{e['at']}  #{e['seq']:<5} {e['actor']:<12} {e['action']:<14}{run}{why}")


@audit.command()
@click.option(
    "--url",
    default=None,
    metavar="URL",
    help="Check the chain of a running `syncline serve` (token: SYNCLINE_TOKEN or "
    "SYNCLINE_ADMIN_TOKEN; viewer or above): its entries are fetched and every hash is "
    "recomputed here.",
)
@PROJECT_DIR
@DATABASE
@click.pass_context
def verify(ctx: click.Context, url: str | None, project: Path, database: str | None) -> None:
    """Check the audit trail's hash chain in the store (or of the server at --url); exit 1
    naming the first entry that was altered, or follows one that was removed."""
    from engine.store import open_store
    from engine.store.audit import verify as verify_chain

    url = url or (ctx.parent.params.get("url") if ctx.parent else None)

    async def go() -> Any:
        if url:
            return await _verify_remote(url)
        async with open_store(database, project.resolve()) as store:
            return await verify_chain(store)

    verdict = _run(go())
    if verdict.broken is not None:
        click.echo(f"audit entry {verdict.broken} is broken: {verdict.problem}", err=True)
        click.echo(f"({verdict.checked - 1} entries before it hold)", err=True)
        sys.exit(1)
    click.echo(f"audit trail intact: {verdict.checked} entries; head {verdict.head}")


async def _verify_remote(url: str) -> Any:
    """The Verdict of the chain the server at `url` serves, its hashes recomputed here."""
    from engine.commands.remote import HttpRunsClient
    from engine.server.audit import CHAIN_PAGE, chain_rows
    from engine.store.audit import Verifier

    verifier, after = Verifier(), 0
    async with HttpRunsClient(url, cli_token()) as client:
        while True:
            page = await client.audit_chain(after, CHAIN_PAGE)
            verifier.feed(chain_rows(page["entries"]))
            if page.get("next_after") is None:
                return verifier.verdict()
            after = int(page["next_after"])


async def _entries(url: str | None, project: Path, database: str | None,
                   params: dict[str, str], limit: int) -> list[dict[str, Any]]:  # fmt: skip
    from engine.commands.remote import HttpRunsClient
    from engine.server.audit import entries, query_from
    from engine.store import open_store

    if url:
        async with HttpRunsClient(url, cli_token()) as client:
            page = await client.audit({**params, "limit": str(limit)})
            found: list[dict[str, Any]] = page["entries"]
            return found
    async with open_store(database, project.resolve()) as store:
        found, _ = await entries(store, query_from({**params, "limit": str(limit)}))
        return found


def _run(work: Any) -> Any:
    from engine.errors import StoreError, UsageError
    from engine.server.http import Problem

    try:
        return asyncio.run(work)
    except (UsageError, StoreError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except Problem as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)


@click.group()
def tokens() -> None:
    """Named tokens for the tokens file (serve --tokens FILE / SYNCLINE_TOKENS_FILE)."""


@tokens.command("hash")
@click.argument("token", required=False)
def hash_token(token: str | None) -> None:
    """Print the SHA-256 digest of TOKEN (read from stdin when omitted), the file's `sha256`."""
    from engine.server.auth import token_digest

    text = token if token is not None else sys.stdin.readline().strip()
    if not text:
        raise click.UsageError("no token given")
    click.echo(token_digest(text).hex())


@tokens.command("new")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["viewer", "operator", "admin", "ingest"]),
    required=True,
    help="What the token may do.",
)
@click.option(
    "--flow",
    "flows",
    multiple=True,
    metavar="GLOB",
    help="An operator's flows (glob, repeatable; default: every flow).",
)
def new_token(name: str, role: str, flows: tuple[str, ...]) -> None:
    """Make a random token for NAME: prints the token (give it to its holder, once) on stderr
    and the line to append to the tokens file on stdout."""
    from engine.server.auth import token_digest

    if flows and role != "operator":
        raise click.UsageError("only an operator takes --flow")
    token = f"sl_{secrets.token_urlsafe(32)}"
    click.echo(f"token for {name}: {token}", err=True)
    entry = f"- {{name: {name}, role: {role}, sha256: {token_digest(token).hex()}"
    if flows:
        entry += ", flows: [" + ", ".join(f'"{f}"' for f in flows) + "]"
    click.echo(entry + "}")
