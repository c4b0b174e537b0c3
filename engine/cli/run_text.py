"""A run as `syncline run` and `syncline runs show` print it: its state, reason, steps, then its
history by generation (what started each, with which data, its attempts, reasons and audit
entries) and the corrected data operators supplied. Reads the admin API's JSON shape
(engine/server/views.py), whether it came from the local store or a server."""

from __future__ import annotations

import json
from typing import Any

import click


def print_run(detail: dict[str, Any], dry_run: bool = False) -> None:
    if dry_run:
        _print_calls(detail.get("calls", []))
    generation = detail.get("generation", 0)
    again = f" (generation {generation})" if generation else ""
    click.echo(f"run {detail['id']} {detail['flow']}@{detail['flow_version']}: "
               f"{detail['state']}{again}")
    if detail.get("reason"):
        reason = detail["reason"]
        click.echo(f"  reason: {reason['code']} at step {reason['step']}: {reason['message']}")
    if detail.get("blocked_by"):
        click.echo(f"  blocked by: {detail['blocked_by']} (an earlier run of its ordering key)")
    for step in detail.get("steps", []):
        _print_step(step)
    history = detail.get("history")
    if history and (len(history["generations"]) > 1 or history["reasons"]):
        _print_history(history)
    for entry in reversed(detail.get("audit", [])):
        click.echo(f"  audit: {entry['action']} by {entry['actor']} at {entry['at']}")


def _print_calls(calls: list[dict[str, Any]]) -> None:
    for call in calls:
        click.echo(f"would call {call['system']}.{call['operation']}: "
                   f"{call['method']} {call['url']}")
        for name, value in call["headers"].items():
            click.echo(f"  {name}: {value}")
        if call["body"] is not None:
            click.echo("  " + json.dumps(call["body"], indent=2).replace("\n", "\n  "))


def _print_step(step: dict[str, Any]) -> None:
    tries = len(step["attempts"])
    line = f"  {step['id']:<20} {step['state']:<12} attempts={tries}"
    compact = json.dumps(step["output"], default=str)
    if len(line) + len(compact) <= 110:  # short: on the step's line; else whole, indented
        click.echo(f"{line} output={compact}")
    else:
        pretty = json.dumps(step["output"], indent=2, default=str)
        click.echo(f"{line} output=\n      " + pretty.replace("\n", "\n      "))


def _print_history(history: dict[str, Any]) -> None:
    click.echo("  history:")
    for g in history["generations"]:
        by = f" by {g['actor']}" if g["actor"] else ""
        note = f" ({g['note']})" if g["note"] else ""
        data = g["data"]
        source = "event data" if data["source"] == "event" else (
            f"correction {data['correction']} (sha256 {str(data['sha256'])[:12]})")
        click.echo(f"  generation {g['generation']}: {g['action']}{by}{note} at "
                   f"{g['started_at']}, on {source}")
        for a in g["attempts"]:
            status = f" HTTP {a['status']}" if a["status"] is not None else ""
            error = f": {a['error']}" if a["error"] else ""
            click.echo(f"    {a['started_at']}  {a['step']} attempt {a['n']} {a['outcome']}"
                       f"{status} ({a['duration_ms']:g} ms){error}")
        for r in g["reasons"]:
            where = f" at step {r['step']}" if r["step"] else ""
            click.echo(f"    {r['at']}  {r['state']}: {r['code']}{where}: {r['message']}")
    for c in history["corrections"]:
        click.echo(f"  correction {c['correction']} by {c['actor']} at {c['at']} "
                   f"(generation {c['generation']}): {json.dumps(c['data'], default=str)}")
