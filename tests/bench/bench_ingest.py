"""Durable, verified webhook ingest of `syncline serve` vs a bare Starlette endpoint, with wrk.

    python tests/bench/bench_ingest.py [--connections 64] [--duration 10] [--rounds 3]

Two servers, each in its own process on uvicorn (1 worker, uvloop + httptools, no access log),
get the same requests from wrk in the same run, one after the other, for `--rounds` rounds
(the medians are reported):

- bare: a Starlette route that reads the body and answers 202 (the HTTP ceiling);
- syncline: `syncline serve --no-watch` on a one-flow project whose System verifies
  Standard Webhooks signatures; every request is verified over its raw bytes, parsed, and
  acknowledged 202 only after its event and run are committed to SQLite (the runtime executes
  the runs in the same process meanwhile).

Honesty of the load: wrk's Lua cannot compute HMACs, so this script pre-signs distinct requests
(a unique webhook-id, a unique `Id` in a ~1 KB body -- the flow's idempotency key -- and a fresh
timestamp) and the Lua script cycles through them. There are more pre-signed requests than any
run sends (the warm-up uses its own set), so every measured request is a new, verified, durably
accepted event, never a duplicate; any answer other than 2xx is counted and reported.

Target (issue 4): syncline req/s >= 50% of bare, and syncline p99 < 50 ms at 64 connections.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
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


def start_syncline(work: Path, port: int) -> subprocess.Popen[bytes]:
    project = work / "project"
    shutil.rmtree(project, ignore_errors=True)
    (project / "flows").mkdir(parents=True)
    (project / "syncline.yaml").write_text(PROJECT)
    (project / "flows" / "crm.yaml").write_text(FLOWS)
    env = {**os.environ, "SYNCLINE_SECRET_CRM_HOOK": SECRET}
    cmd = [
        sys.executable,
        "-m",
        "engine.cli",
        "serve",
        str(project),
        "--port",
        str(port),
        "--no-watch",
    ]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    wait_ready(f"http://127.0.0.1:{port}/healthz", proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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


def one_round(work: Path, args: argparse.Namespace, start: int) -> tuple[dict, dict]:
    warm, measured = work / "warm", work / "measured"
    for directory, count, first in (
        (warm, 5000, start),
        (measured, args.per_thread, start + args.threads * 5000),
    ):
        directory.mkdir(exist_ok=True)
        write_requests(directory, args.threads, count, first)
    script = work / "signed.lua"
    script.write_text(LUA)
    results = {}
    for name, starter in (("bare", start_bare), ("syncline", start_syncline)):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = starter(work, port)
        try:
            wrk(url, script, warm, args.connections, args.threads, 2)
            results[name] = wrk(
                url, script, measured, args.connections, args.threads, args.duration
            )
        finally:
            stop(proc)
    return results["bare"], results["syncline"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--per-thread", type=int, default=60_000)
    args = parser.parse_args()
    bare, sync = [], []
    with tempfile.TemporaryDirectory(prefix="syncline-bench-") as tmp:
        for r in range(args.rounds):
            b, s = one_round(Path(tmp), args, start=r * args.threads * (args.per_thread + 5000))
            bare.append(b)
            sync.append(s)
            print(
                f"round {r + 1}: bare {b['rps']:.0f} req/s p99 {b['p99_ms']:.1f} ms | "
                f"syncline {s['rps']:.0f} req/s p99 {s['p99_ms']:.1f} ms "
                f"(non-2xx {s['non_2xx']}) | ratio {s['rps'] / b['rps']:.2f}",
                flush=True,
            )
    report(bare, sync, args.connections)


def report(bare: list[dict], sync: list[dict], connections: int) -> None:
    b_rps = statistics.median(x["rps"] for x in bare)
    s_rps = statistics.median(x["rps"] for x in sync)
    ratio = statistics.median(s["rps"] / b["rps"] for b, s in zip(bare, sync, strict=True))
    s_p99 = statistics.median(x["p99_ms"] for x in sync)
    print(f"\n{connections} connections, medians of {len(bare)} rounds")
    print(
        f"  bare Starlette 202           {b_rps:8.0f} req/s  "
        f"p99 {statistics.median(x['p99_ms'] for x in bare):6.1f} ms"
    )
    print(f"  syncline durable + verified  {s_rps:8.0f} req/s  p99 {s_p99:6.1f} ms")
    print(f"  ratio {ratio:.2f} (target >= 0.50), p99 target < 50 ms")
    failed = sum(x["non_2xx"] for x in sync)
    if failed:
        print(f"  WARNING: {failed} syncline responses were not 2xx")
    ok = ratio >= 0.5 and s_p99 < 50 and not failed
    print("  PASS" if ok else "  BELOW TARGET")


if __name__ == "__main__":
    main()
