"""Shadow calls: runs/s of bench_runtime's call flow (three sequential writes) with its first
write shadowed onto a candidate System vs the same flow without the shadow, against one local
target (uvicorn in a separate process, serving the candidate's requests too), medians of rounds
run alternately. The issue asks for a ratio of at least 0.80. `--calls 1` times a flow of that
one shadowed write alone, the worst case: a shadow is one more HTTP request for every run.

    python tests/bench/bench_shadow.py [--runs N] [--concurrency C] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import textwrap
from pathlib import Path

from bench_runtime import DEFINITIONS as RUNTIME_DEFINITIONS
from bench_runtime import PROJECT, runtime_runs_per_second, start_target

TARGET = RUNTIME_DEFINITIONS.split("---\n")[0]  # the System `target` (operations one, two, three)

DEFINITIONS = TARGET + """\
---
apiVersion: syncline/v1
kind: System
metadata: {name: candidate, owner: bench}
spec:
  baseUrl: ${env.TARGET_URL}
  idempotencyHeader: Idempotency-Key
  operations:
    one: {method: POST, path: /candidate}
---
apiVersion: syncline/v1
kind: Flow
metadata: {name: plain, owner: bench}
spec:
  trigger: {webhook: {path: /plain, system: target}}
  steps:
    - id: one
      call: {system: target, operation: one, body: data}
REST---
apiVersion: syncline/v1
kind: Flow
metadata: {name: shadowed, owner: bench}
spec:
  trigger: {webhook: {path: /shadowed, system: target}}
  steps:
    - id: one
      call: {system: target, operation: one, body: data}
      shadow: {system: candidate, compare: "{status: status}"}
REST"""

REST = """\
    - id: two
      call: {system: target, operation: two, body: "{prev: steps.one.body.id}"}
    - id: three
      call: {system: target, operation: three, body: "{prev: steps.two.body.id}"}
"""


async def main(runs: int, concurrency: int, rounds: int, calls: int) -> None:
    definitions = DEFINITIONS.replace("REST", REST if calls == 3 else "")
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_target(Path(tmp))
        try:
            root = Path(tmp) / "project"
            (root / "flows").mkdir(parents=True)
            (root / "syncline.yaml").write_text(PROJECT.format(url=url))
            (root / "flows" / "bench.yaml").write_text(textwrap.dedent(definitions))
            await runtime_runs_per_second(root, "plain", 200, concurrency)  # warm up
            plain, shadowed = [], []
            for _ in range(rounds):
                plain.append(await runtime_runs_per_second(root, "plain", runs, concurrency))
                shadowed.append(await runtime_runs_per_second(root, "shadowed", runs, concurrency))
        finally:
            proc.terminate()
            proc.wait()
    a, b = statistics.median(plain), statistics.median(shadowed)
    print(f"{calls} call(s), the first shadowed, {concurrency} concurrent, {runs} runs, "
          f"medians of {rounds} rounds")
    print(f"  unshadowed: {a:,.0f} runs/s  (rounds {', '.join(f'{x:,.0f}' for x in plain)})")
    print(f"  shadowed:   {b:,.0f} runs/s  (rounds {', '.join(f'{x:,.0f}' for x in shadowed)})")
    print(f"  ratio: {b / a:.2f} (target >= 0.80)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, choices=[1, 3], default=3)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.concurrency, args.rounds, args.calls))
