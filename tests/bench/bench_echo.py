"""Webhook ingest with an echo-enabled trigger vs the same without, with wrk (bench_ingest.py's
machinery: pre-signed ~1 KB deliveries, `syncline serve --no-workers`, uvicorn, SQLite).

    python tests/bench/bench_echo.py [--connections 64] [--duration 10] [--rounds 3]
                                     [--written 0.1] [--postgres]

Each round starts two servers, one after the other, on the same requests:
- plain: the one-flow project of bench_ingest.py;
- echo: the same, but its System has `echo: {window: 15m}` and a write operation with a
  `record`, and the webhook trigger names its record (`record: {type: opportunity, id:
  data.Id}`). Every delivery's record id is looked up among the live fingerprints before it is
  accepted; for `--written` of the deliveries (default 10%) Syncline wrote the record moments
  ago (a fingerprint is stored before the load starts), so those are compared field by field
  and the record's last known state is stored (none of them is an echo: each changes a field
  the flow reads, so every request still starts a run and the work per request is the same).

Target (issue 13): echo req/s >= 90% of plain, every 202 stored. The ratio is taken within a
round (the order of the two alternates from round to round); the medians are reported. The
lookups of concurrent deliveries share one read (engine.runtime.echo.LiveLookups).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_ingest as ingest  # noqa: E402 - run as a script from tests/bench

ECHO_FLOWS = ingest.FLOWS.replace(
    "  webhooks: {scheme: standard-webhooks",
    "  operations:\n"
    "    update-opportunity: {method: PATCH, path: \"/opportunities/{id}\",\n"
    "                         record: {type: opportunity, id: params.id}}\n"
    "  echo: {window: 15m}\n"
    "  webhooks: {scheme: standard-webhooks",
).replace(
    f"  trigger: {{webhook: {{path: {ingest.PATH}, system: crm}}}}",
    f"  trigger: {{webhook: {{path: {ingest.PATH}, system: crm, "
    "record: {type: opportunity, id: data.Id}}}",
)
assert ECHO_FLOWS != ingest.FLOWS and "record: {type: opportunity, id: data.Id}" in ECHO_FLOWS


def start(work: Path, port: int, flows: str, postgres: bool) -> subprocess.Popen[bytes]:
    ingest.FLOWS = flows  # start_syncline writes the project from this
    [proc] = ingest.start_syncline(work, port, "postgres" if postgres else "ingest-only")
    return proc


def seed_fingerprints(work: Path, first: int, count: int, every: int) -> None:
    """Fingerprints of Syncline's writes to every `every`-th record of the measured requests,
    stored as the runtime stores them (a stored write the deliveries do not echo)."""
    now = time.time()
    fields = json.dumps([[["StageName"], "Negotiation"]])
    rows = [("crm", "opportunity", f"006B{n:012d}", "run-seed", "update", now, now + 900, fields)
            for n in range(first, first + count, every)]
    with sqlite3.connect(work / "project" / ".syncline" / "syncline.db", timeout=30) as db:
        db.executemany("INSERT INTO echo_writes (system, record_type, record_id, run_id, step_id, "
                       "written_at, expires_at, fields) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.close()


def one_round(work: Path, args: argparse.Namespace, start_at: int) -> dict[str, dict[str, float]]:
    warm, measured = work / "warm", work / "measured"
    first_measured = start_at + args.threads * ingest.WARM
    for directory, count, first in ((warm, ingest.WARM, start_at),
                                    (measured, args.per_thread, first_measured)):
        directory.mkdir(exist_ok=True)
        ingest.write_requests(directory, args.threads, count, first)
    script = work / "signed.lua"
    script.write_text(ingest.LUA)
    results = {}
    contenders = [("plain", PLAIN_FLOWS), ("echo", ECHO_FLOWS)]
    if args.round % 2:  # alternate which goes first: the second of two runs tends to be slower
        contenders.reverse()
    for name, flows in contenders:
        port = ingest.free_port()
        proc = start(work, port, flows, args.postgres)
        try:
            if name == "echo" and args.written and not args.postgres:
                every = max(1, round(1 / args.written))
                seed_fingerprints(work, first_measured, args.threads * args.per_thread, every)
            url = f"http://127.0.0.1:{port}"
            ingest.wrk(url, script, warm, args.connections, args.threads, 2)
            results[name] = ingest.wrk(url, script, measured, args.connections, args.threads,
                                       args.duration)
        finally:
            ingest.stop(proc)
        results[name]["stored"] = ingest.stored_runs(work, "postgres" if args.postgres
                                                     else "ingest-only")
    return results


PLAIN_FLOWS = ingest.FLOWS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--per-thread", type=int, default=60_000)
    parser.add_argument("--written", type=float, default=0.1,
                        help="share of deliveries about a record with a live fingerprint")
    parser.add_argument("--postgres", action="store_true", help="the PostgreSQL store")
    args = parser.parse_args()
    ratios: list[float] = []
    rows: dict[str, list[dict[str, float]]] = {"plain": [], "echo": []}
    with tempfile.TemporaryDirectory(prefix="syncline-bench-echo-") as tmp:
        for r in range(args.rounds):
            start_at = r * args.threads * (args.per_thread + ingest.WARM)
            args.round = r
            result = one_round(Path(tmp), args, start_at)
            ratio = result["echo"]["rps"] / result["plain"]["rps"]
            ratios.append(ratio)
            for name in rows:
                rows[name].append(result[name])
            print(f"round {r + 1}: plain {result['plain']['rps']:.0f} req/s p99 "
                  f"{result['plain']['p99_ms']:.1f} ms | echo {result['echo']['rps']:.0f} req/s "
                  f"p99 {result['echo']['p99_ms']:.1f} ms | ratio {ratio:.2f} (non-2xx "
                  f"{result['plain']['non_2xx']:.0f}/{result['echo']['non_2xx']:.0f})",
                  flush=True)
    ratio = statistics.median(ratios)
    failed = sum(row["non_2xx"] for name in rows for row in rows[name])
    verdict = "PASS" if ratio >= 0.9 and not failed else "BELOW TARGET"
    print(f"\n{args.connections} connections, medians of {args.rounds} rounds, "
          f"{args.written:.0%} of deliveries about a record with a live fingerprint")
    for name, label in (("plain", "without echo"), ("echo", "echo-enabled")):
        print(f"  {label:<13} {statistics.median(r['rps'] for r in rows[name]):8.0f} req/s  "
              f"p99 {statistics.median(r['p99_ms'] for r in rows[name]):6.1f} ms")
    print(f"  ratio echo/plain {ratio:.2f}  non-2xx {failed:.0f}  {verdict}  (target >= 0.90)")


if __name__ == "__main__":
    sys.exit(main())
