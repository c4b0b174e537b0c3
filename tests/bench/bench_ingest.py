"""Durable, verified webhook ingest of `syncline serve` vs a bare Starlette endpoint, with wrk.

    python tests/bench/bench_ingest.py [--connections 64] [--duration 10] [--rounds 3]
                                       [--modes ingest-only,with-worker,in-process]

Each round starts a fresh server per contender, each in its own process on uvicorn (1 worker,
uvloop + httptools, no access log), and wrk sends them the same requests, one contender after
the other, for `--rounds` rounds (the medians are reported; ratios are taken within a round):

- bare: a Starlette route that reads the body and answers 202 (the HTTP ceiling);
- syncline, on a one-flow project whose System verifies Standard Webhooks signatures: every
  request is verified over its raw bytes, parsed, and acknowledged 202 only after its event and
  run (with its dedup key) are committed to SQLite in one transaction. The modes say what else
  runs on the machine's cores meanwhile:
  - ingest-only: `syncline serve --no-workers`, the ingest node of a split deployment. Nothing
    executes the accepted runs during the measurement: they wait, pending, for a worker.
  - with-worker: the same node plus one `syncline worker` process on the same store, executing
    the runs (claim, one `set` step, checkpoints) while the node ingests.
  - in-process: plain `syncline serve`: the runtime executes the runs in the server process.
  - postgres: the ingest node of ingest-only on the PostgreSQL store (`--database`, a fresh
    schema of SYNCLINE_BENCH_POSTGRES, default postgresql://127.0.0.1:5432/test), the server on
    the same cores. Not in the default modes: ask for it with --modes.

Honesty of the load: wrk's Lua cannot compute HMACs, so this script pre-signs distinct requests
(a unique webhook-id, a unique `Id` in a ~1 KB body -- the flow's idempotency key -- and a fresh
timestamp) and the Lua script cycles through them. There are more pre-signed requests than any
run sends (the warm-up uses its own set), so every measured request is a new, verified, durably
accepted event, never a duplicate; any answer other than 2xx is counted and reported. After each
syncline server stops, the runs in its database are counted against the 202s wrk received
(`lost`; should a request set ever wrap around, the round says so and skips that count).

The flow has `orderingKey: data.AccountId` (~1,000 accounts; --no-ordering-key drops it).
--metric-labels adds a Metric gauge of its runs labelled by currency and stage, so that each
accept also resolves and counts the run's labels. The
executing modes also time how long the backlog takes to drain once the load stops. --baseline DIR
adds each mode run from another checkout (`git worktree add /tmp/old COMMIT`) to every round,
so two commits are compared under the same load and noise.

Targets (issue 15): ratio >= 0.5 ingest-only, >= 0.4 executing (backlog drained within 30 s),
>= 0.3 postgres; p99 < 50 ms in every mode; every 202 stored.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from engine.server.signatures import sign

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PATH = "/hooks/crm/opportunity"

PROJECT = """\
apiVersion: syncline/v1
kind: Project
metadata: {name: bench, owner: bench}
spec:
  paths: [flows]
  environments:
    dev: {vars: {CRM_URL: "http://127.0.0.1:9"}}
"""

FLOWS = f"""\
apiVersion: syncline/v1
kind: System
metadata: {{name: crm, owner: bench}}
spec:
  baseUrl: ${{env.CRM_URL}}
  webhooks: {{scheme: standard-webhooks, secret: "${{secret.CRM_HOOK}}", tolerance: 30m}}
---
apiVersion: syncline/v1
kind: Flow
metadata: {{name: opportunity, owner: bench}}
spec:
  trigger: {{webhook: {{path: {PATH}, system: crm}}}}
  filter: "data.StageName == 'Closed Won'"
  idempotencyKey: data.Id
  steps:
    - id: order
      set: {{order_id: data.Id, account: data.AccountId, amount: data.Amount}}
"""

# --metric-labels: a gauge of the flow's runs labelled from their data, so that every accept
# also resolves the labels and counts the run under them (label_tallies).
METRIC = """\
---
apiVersion: syncline/v1
kind: Metric
metadata: {name: deals-awaiting-erp, owner: bench}
spec:
  help: Closed-won deals not executed yet
  gauge: {flow: opportunity, states: [pending, running, waiting, parked]}
  labels: {currency: data.CurrencyIsoCode, stage: data.StageName}
"""

BARE_APP = """\
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

async def hook(request):
    await request.body()
    return Response(b'{"status":"accepted"}', status_code=202, media_type="application/json")

app = Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])
"""

LUA = """\
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  requests = {}
  for line in io.lines(args[1] .. "/requests-" .. id .. ".tsv") do
    local mid, ts, sig, body = line:match("^([^\\t]*)\\t([^\\t]*)\\t([^\\t]*)\\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", args[2], {
      ["Content-Type"] = "application/json", ["webhook-id"] = mid,
      ["webhook-timestamp"] = ts, ["webhook-signature"] = sig}, body)
  end
  n = 0
end
function request()
  n = n % #requests + 1
  return requests[n]
end
"""


def payload(n: int) -> bytes:
    """A ~1 KB CRM opportunity with a unique Id."""
    document = {
        "Id": f"006B{n:012d}",
        "StageName": "Closed Won",
        "AccountId": f"001A{n % 997:08d}",
        "CurrencyIsoCode": "EUR",
        "Amount": 125000.0,
        "Name": "Acme renewal " + "x" * 60,
        "OpportunityLineItems": [
            {
                "ProductCode": f"SKU-{i:04d}",
                "Quantity": i + 1,
                "UnitPrice": 99.5,
                "Description": "y" * 40,
            }
            for i in range(8)
        ],
    }
    return json.dumps(document, separators=(",", ":")).encode()


def write_requests(directory: Path, threads: int, per_thread: int, start: int) -> None:
    """Pre-signed requests, `per_thread` for each wrk thread, numbered from `start`."""
    stamp = time.time()
    for t in range(threads):
        with open(directory / f"requests-{t}.tsv", "w") as out:
            for i in range(per_thread):
                n = start + t * per_thread + i
                body = payload(n)
                headers = sign(
                    "standard-webhooks", SECRET, body, msg_id=f"msg_{n}", timestamp=stamp
                )
                out.write(
                    f"msg_{n}\t{headers['webhook-timestamp']}\t"
                    f"{headers['webhook-signature']}\t{body.decode()}\n"
                )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"server at {url} did not start")


def start_bare(work: Path, port: int) -> subprocess.Popen[bytes]:
    (work / "bare_app.py").write_text(BARE_APP)
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "bare_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
    ]
    proc = subprocess.Popen(cmd, cwd=work)
    wait_ready(f"http://127.0.0.1:{port}/", proc)
    return proc


def start_syncline(
    work: Path, port: int, mode: str, args: argparse.Namespace, tree: Path | None = None
) -> list[subprocess.Popen[bytes]]:
    """The syncline processes of `mode`, the server first; `tree`: the source tree whose
    engine runs (another checkout, to compare two commits in one round), else this one."""
    project = work / "project"
    shutil.rmtree(project, ignore_errors=True)
    (project / "flows").mkdir(parents=True)
    (project / "syncline.yaml").write_text(PROJECT)
    ordering = "  orderingKey: data.AccountId\n" if args.ordering_key else ""
    flows = FLOWS.replace("  steps:", ordering + "  steps:")
    (project / "flows" / "crm.yaml").write_text(flows + (METRIC if args.metric_labels else ""))
    env = {**os.environ, "SYNCLINE_SECRET_CRM_HOOK": SECRET}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    cli = [sys.executable, "-m", "engine.cli"]
    serve = [*cli, "serve", str(project), "--port", str(port), "--no-watch"]
    if mode != "in-process":
        serve.append("--no-workers")
    if mode == "postgres":
        serve += ["--database", fresh_postgres_schema()]
    procs = [subprocess.Popen(serve, env=env, stderr=subprocess.DEVNULL, cwd=tree)]
    wait_ready(f"http://127.0.0.1:{port}/healthz", procs[0])
    if mode == "with-worker":
        worker = [*cli, "worker", str(project)]
        procs.append(subprocess.Popen(worker, env=env, stderr=subprocess.DEVNULL, cwd=tree))
    return procs


def fresh_postgres_schema() -> str:
    """A URL of SYNCLINE_BENCH_POSTGRES whose search_path is a new, empty schema."""
    import psycopg

    global _POSTGRES_URL
    schema = f"bench_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in POSTGRES else "?"
    _POSTGRES_URL = f"{POSTGRES}{separator}options=-csearch_path%3D{schema}"
    return _POSTGRES_URL


def stored_runs(work: Path, mode: str) -> int:
    if mode == "postgres":
        import psycopg

        with psycopg.connect(_POSTGRES_URL) as db:
            row = db.execute("SELECT count(*) FROM runs").fetchone()
            schema = db.execute("SELECT current_schema()").fetchone()
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema[0]} CASCADE")  # type: ignore[index]
        return int(row[0])  # type: ignore[index]
    with sqlite3.connect(work / "project" / ".syncline" / "syncline.db") as db:
        count: int = db.execute("SELECT count(*) FROM runs").fetchone()[0]
    db.close()
    return count


def drain(work: Path, limit: float = 120.0) -> float:
    """Seconds from the end of the load until no accepted run is left to execute (the backlog
    the executing modes built up), or `limit` if it never drains."""
    started = time.monotonic()
    with sqlite3.connect(work / "project" / ".syncline" / "syncline.db", timeout=10) as db:
        while time.monotonic() - started < limit:
            left = db.execute(
                "SELECT count(*) FROM runs WHERE state IN ('pending', 'running', 'waiting')"
            ).fetchone()[0]
            if not left:
                break
            time.sleep(0.2)
    db.close()
    return time.monotonic() - started


POSTGRES = os.environ.get("SYNCLINE_BENCH_POSTGRES", "postgresql://127.0.0.1:5432/test")
_POSTGRES_URL = ""


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def processes(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    """The ids of `procs` and of their children (the SQLite writer process)."""
    pids = [proc.pid for proc in procs]
    for proc in procs:
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text()
            pids += [int(pid) for pid in children.split()]
    return pids


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far; 0 if it is gone. Per request,
    it says what a contender costs however busy the shared machine is."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(
    url: str, script: Path, directory: Path, connections: int, threads: int, duration: int
) -> dict[str, float]:
    cmd = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{duration}s",
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        str(directory),
        PATH,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"99%\s+([\d.]+\w+)", out)[1])  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    return {
        "rps": rps,
        "p99_ms": p99,
        "non_2xx": int(errors[1]) if errors else 0,
        "requests": total,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def one_round(
    work: Path, args: argparse.Namespace, start: int
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    warm, measured = work / "warm", work / "measured"
    for directory, count, first in (
        (warm, WARM, start),
        (measured, args.per_thread, start + args.threads * WARM),
    ):
        directory.mkdir(exist_ok=True)
        write_requests(directory, args.threads, count, first)
    script = work / "signed.lua"
    script.write_text(LUA)

    def load(url: str, procs: list[subprocess.Popen[bytes]]) -> tuple[dict[str, float], int | None]:
        """The measured run, and the 202s of warm-up and run (None: a request set wrapped
        around, so some 202s were duplicates and cannot be counted against stored runs)."""
        first = wrk(url, script, warm, args.connections, args.threads, 2)
        pids = processes(procs)
        before = [cpu_seconds(pid) for pid in pids]
        result = wrk(url, script, measured, args.connections, args.threads, args.duration)
        used = sum(cpu_seconds(pid) - then for pid, then in zip(pids, before, strict=True))
        result["cpu_us"] = used / max(result["requests"], 1) * 1e6
        if (
            first["requests"] > args.threads * WARM
            or result["requests"] > args.threads * args.per_thread
        ):
            return result, None
        acknowledged = first["requests"] - first["non_2xx"] + result["requests"] - result["non_2xx"]
        return result, int(acknowledged)

    port = free_port()
    bare = start_bare(work, port)
    try:
        bare_result, _ = load(f"http://127.0.0.1:{port}", [bare])
    finally:
        stop(bare)
    results = {}
    for mode in args.modes:
        for label, tree in contenders(mode, args):
            port = free_port()
            procs = start_syncline(work, port, mode, args, tree)
            try:
                results[label], acknowledged = load(f"http://127.0.0.1:{port}", procs)
                if mode in EXECUTING:
                    results[label]["drain_s"] = drain(work)
            finally:
                for proc in reversed(procs):
                    stop(proc)
            stored = stored_runs(work, mode)
            if acknowledged is None:
                print(f"  ({label}: a request set wrapped around; raise --per-thread)", flush=True)
            else:
                results[label]["lost"] = max(0, acknowledged - stored)
    return bare_result, results


def contenders(mode: str, args: argparse.Namespace) -> list[tuple[str, Path | None]]:
    """This tree's `mode`, then the same mode on the --baseline checkout if one is given."""
    if args.baseline is None:
        return [(mode, None)]
    return [(mode, None), (f"{mode}@base", args.baseline.resolve())]


MODES = ("ingest-only", "with-worker", "in-process", "postgres")
DEFAULT_MODES = MODES[:3]
EXECUTING = ("with-worker", "in-process")  # modes whose backlog is timed after the load
# Issue 15's targets: the ratio of bare each mode must reach.
TARGETS = {"ingest-only": 0.5, "with-worker": 0.4, "in-process": 0.4, "postgres": 0.3}
DRAIN_TARGET_S = 30.0
WARM = 20_000  # pre-signed warm-up requests per wrk thread: more than 2 s of warm-up sends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--per-thread", type=int, default=80_000)
    parser.add_argument("--modes", type=lambda text: text.split(","), default=list(DEFAULT_MODES))
    parser.add_argument(
        "--no-ordering-key",
        dest="ordering_key",
        action="store_false",
        help="the flow without `orderingKey: data.AccountId` (~1,000 accounts)",
    )
    parser.add_argument(
        "--metric-labels",
        action="store_true",
        help="add a Metric whose labels read each run's data (its currency and stage)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (git worktree add /tmp/old COMMIT) run as a contender in each round",
    )
    args = parser.parse_args()
    if unknown := set(args.modes) - set(MODES):
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    bare: list[dict[str, float]] = []
    sync: dict[str, list[dict[str, float]]] = {
        label: [] for mode in args.modes for label, _ in contenders(mode, args)
    }
    with tempfile.TemporaryDirectory(prefix="syncline-bench-") as tmp:
        for r in range(args.rounds):
            b, by_mode = one_round(
                Path(tmp), args, start=r * args.threads * (args.per_thread + WARM)
            )
            bare.append(b)
            line = (
                f"round {r + 1}: bare {b['rps']:.0f} req/s p99 {b['p99_ms']:.1f} ms "
                f"cpu {b['cpu_us']:.0f} us/req"
            )
            for mode, s in by_mode.items():
                s["ratio"] = s["rps"] / b["rps"]
                sync[mode].append(s)
                line += (
                    f" | {mode} {s['rps']:.0f} req/s p99 {s['p99_ms']:.1f} ms "
                    f"cpu {s['cpu_us']:.0f} us/req "
                    f"ratio {s['ratio']:.2f} (non-2xx {s['non_2xx']}, lost {s.get('lost', '?')}"
                    + (f", drained in {s['drain_s']:.1f} s)" if "drain_s" in s else ")")
                )
            print(line, flush=True)
    report(bare, sync, args.connections)


def report(bare: list[dict], sync: dict[str, list[dict]], connections: int) -> None:
    def median(rows: list[dict], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    def spread(rows: list[dict], key: str) -> str:
        return f"{min(row[key] for row in rows):.0f}-{max(row[key] for row in rows):.0f}"

    print(f"\n{connections} connections, medians of {len(bare)} rounds (min-max req/s)")
    print(
        f"  bare Starlette 202     {median(bare, 'rps'):8.0f} req/s ({spread(bare, 'rps')})  "
        f"p99 {median(bare, 'p99_ms'):6.1f} ms  cpu {median(bare, 'cpu_us'):4.0f} us/req"
    )
    for mode, rows in sync.items():
        failed = sum(row["non_2xx"] for row in rows)
        lost = sum(row.get("lost", 0) for row in rows)
        ratio, p99 = median(rows, "ratio"), median(rows, "p99_ms")
        drained = max((row["drain_s"] for row in rows if "drain_s" in row), default=0.0)
        met = (
            ratio >= TARGETS[mode.split("@")[0]]
            and p99 < 50
            and drained <= DRAIN_TARGET_S
            and not failed
            and not lost
        )
        print(
            f"  syncline {mode:<18} {median(rows, 'rps'):8.0f} req/s ({spread(rows, 'rps')})  "
            f"p99 {p99:6.1f} ms (worst round {max(row['p99_ms'] for row in rows):.1f})  "
            f"cpu {median(rows, 'cpu_us'):4.0f} us/req  ratio {ratio:.2f}  "
            f"non-2xx {failed}  lost {lost}"
            + (f"  drained <= {drained:.1f} s" if drained else "")
            + f"  {'PASS' if met else 'BELOW TARGET'}"
        )
    targets = ", ".join(f"{mode} {ratio:.2f}" for mode, ratio in TARGETS.items())
    print(
        f"  targets: ratio >= ({targets}), p99 < 50 ms, every 202 stored, "
        f"backlog drained within {DRAIN_TARGET_S:.0f} s"
    )


if __name__ == "__main__":
    main()
