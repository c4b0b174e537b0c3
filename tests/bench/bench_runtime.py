"""Runtime benchmarks, figures and ratios measured in one run:

1. executor overhead: runs/s of a flow of map + validate + emit (no HTTP);
2. events/s accepted through the store's group commit (and with one commit per event);
3. a flow of three sequential HTTP calls to a local target (uvicorn in a separate process):
   runs/s of the runtime vs a hand-written asyncio + httpx script making the same three calls with
   the same concurrency. The issue asks for a ratio of at least 0.60. The script is idiomatic: one
   AsyncClient with httpx's default pool limits (100 connections, 20 kept alive). The runtime
   gives each System one kept-alive connection per concurrent run, each its own one-connection
   pool (`engine.runtime.calls.KeepAliveTransport`), which sidesteps httpcore's per-request pool
   bookkeeping; so the script is also timed with that same transport, and that ratio is the
   runtime's own overhead (durable checkpoints, lineage) over equally tuned hand-written code.

    python tests/bench/bench_runtime.py [--runs N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

from engine.compiler import compile_project
from engine.runtime import EventMeta, Runtime
from engine.runtime.transport import KeepAliveTransport
from engine.store import EventRecord, NewRun, SQLiteStore

PROJECT = """\
apiVersion: syncline/v1
kind: Project
metadata: {{name: bench, owner: bench}}
spec:
  paths: [flows]
  environments:
    dev:
      vars: {{TARGET_URL: "{url}"}}
"""

DEFINITIONS = """\
apiVersion: syncline/v1
kind: System
metadata: {name: target, owner: bench}
spec:
  baseUrl: ${env.TARGET_URL}
  idempotencyHeader: Idempotency-Key
  webhooks: {scheme: none}
  operations:
    one: {method: POST, path: /one}
    two: {method: POST, path: /two}
    three: {method: POST, path: /three}
---
apiVersion: syncline/v1
kind: Schema
metadata: {name: order, owner: bench}
spec:
  jsonSchema:
    type: object
    required: [order_id, amount]
    properties: {order_id: {type: string}, amount: {type: number}, currency: {type: string}}
---
apiVersion: syncline/v1
kind: Mapping
metadata: {name: to-order, owner: bench}
spec:
  target: order
  fields: {order_id: Id, amount: Amount, currency: {expr: Currency, default: USD}}
---
apiVersion: syncline/v1
kind: Flow
metadata: {name: local, owner: bench}
spec:
  trigger: {webhook: {path: /local, system: target}}
  steps:
    - id: order
      map: to-order
    - id: check
      validate:
        schema: order
        rules: [{assert: "steps.order.amount > `0`", code: NO_AMOUNT, message: no amount}]
    - id: done
      emit: {type: com.bench.done, data: steps.order}
---
apiVersion: syncline/v1
kind: Flow
metadata: {name: calls, owner: bench}
spec:
  trigger: {webhook: {path: /calls, system: target}}
  steps:
    - id: one
      call: {system: target, operation: one, body: data}
    - id: two
      call: {system: target, operation: two, body: "{prev: steps.one.body.id}"}
    - id: three
      call: {system: target, operation: three, body: "{prev: steps.two.body.id}"}
"""

TARGET_APP = """
import itertools
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
counter = itertools.count()
async def write(request):
    await request.body()
    return JSONResponse({"id": next(counter)}, 201)
app = Starlette(routes=[Route("/{p}", write, methods=["POST"])])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_target(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    (tmp / "bench_target.py").write_text(TARGET_APP)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench_target:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.post(url + "/one", json={})
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("bench target did not start")


def write_project(root: Path, url: str) -> Path:
    (root / "flows").mkdir(parents=True, exist_ok=True)
    (root / "syncline.yaml").write_text(PROJECT.format(url=url))
    (root / "flows" / "bench.yaml").write_text(textwrap.dedent(DEFINITIONS))
    return root


async def runtime_runs_per_second(root: Path, flow: str, runs: int, concurrency: int) -> float:
    """Ingest `runs` events, then time until every run finished."""
    plan = compile_project(root)
    db = root / f".syncline/{flow}-{time.monotonic_ns()}.db"
    async with SQLiteStore(db) as store:
        runtime = Runtime(store, plan, concurrency=concurrency, poll=0.05)
        target = plan.flows[flow]
        payload = {"Id": "O1", "Amount": 10, "Currency": "EUR"}
        started = time.perf_counter()
        await runtime.start()
        await asyncio.gather(
            *(
                runtime.ingest(target, payload, EventMeta(id=f"e{i}", type="bench", source="b"))
                for i in range(runs)
            )
        )
        while not await runtime.idle(0.05):
            pass
        elapsed = time.perf_counter() - started
        counts = await store.count_runs()
        await runtime.stop()
    assert counts.get((flow, "succeeded")) == runs, counts
    return runs / elapsed


async def store_events_per_second(
    root: Path, events: int, concurrency: int, max_batch: int | None
) -> float:
    """Concurrent `accept` calls, each one event with one run."""
    async with SQLiteStore(root / f".syncline/accept-{max_batch}.db", max_batch=max_batch) as store:
        queue = iter(range(events))

        async def client() -> None:
            for i in queue:
                event = EventRecord(f"ev{i}", "bench", "b", {"i": i, "pad": "x" * 800})
                await store.accept(event, [NewRun(f"r{i}", "f", 1, "d", f"k{i}", None, "c")])

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return events / (time.perf_counter() - started)


async def script_runs_per_second(
    url: str, runs: int, concurrency: int, transport: httpx.AsyncBaseTransport | None = None
) -> float:
    """The hand-written baseline: three sequential POSTs per run, `concurrency` at a time."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    async with httpx.AsyncClient(base_url=url, limits=limits, transport=transport) as client:
        queue = iter(range(runs))

        async def worker() -> None:
            for i in queue:
                key = f"run-{i}"
                one = (
                    await client.post(
                        "/one", json={"Id": "O1"}, headers={"Idempotency-Key": key + "/one"}
                    )
                ).json()
                two = (
                    await client.post(
                        "/two", json={"prev": one["id"]}, headers={"Idempotency-Key": key + "/two"}
                    )
                ).json()
                await client.post(
                    "/three", json={"prev": two["id"]}, headers={"Idempotency-Key": key + "/three"}
                )

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return runs / (time.perf_counter() - started)


async def main(runs: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory(prefix="syncline-bench-") as tmp:
        proc, url = start_target(Path(tmp))
        try:
            root = write_project(Path(tmp) / "project", url)
            local = await runtime_runs_per_second(root, "local", runs, concurrency)
            grouped = await store_events_per_second(root, runs * 2, 64, None)
            single = await store_events_per_second(root, runs, 64, 1)
            await script_runs_per_second(url, 200, concurrency)  # warm up the target
            script = await script_runs_per_second(url, runs, concurrency)
            engine = await runtime_runs_per_second(root, "calls", runs, concurrency)
            script_after = await script_runs_per_second(url, runs, concurrency)
            pool = KeepAliveTransport(concurrency)
            tuned = await script_runs_per_second(url, runs, concurrency, pool)
        finally:
            proc.terminate()
            proc.wait()
    baseline = (script + script_after) / 2
    print(f"cpus: {os.cpu_count()}  runs: {runs}  concurrency: {concurrency}")
    print(f"executor, map+validate+emit (no HTTP): {local:8.0f} runs/s")
    print(f"store accept, group commit:            {grouped:8.0f} events/s")
    print(
        f"store accept, one commit per event:    {single:8.0f} events/s  "
        f"(group commit x{grouped / single:.2f})"
    )
    print(
        f"3 HTTP calls, hand-written httpx:      {baseline:8.0f} runs/s "
        f"(before {script:.0f}, after {script_after:.0f})"
    )
    print(f"3 HTTP calls, Syncline runtime:        {engine:8.0f} runs/s")
    print(f"ratio runtime / hand-written:          {engine / baseline:8.2f}  (target >= 0.60)")
    print(
        f"3 HTTP calls, hand-written, same pool:  {tuned:8.0f} runs/s "
        f"(runtime / that: {engine / tuned:.2f})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.concurrency))
