"""Compile a generated project of 1,000 flows and 1,000 mappings; print ms per definition and
peak memory. Run: python tests/bench/bench_compile.py [N]

Generated Python is compiled by CPython on first use (`Plan.warm()` does it for all, as
`syncline serve` does before serving a plan): both figures are printed.

Each mapping has 12 fields (paths, a projection, a lookup, a template) and a target schema; each
flow maps, validates, calls and emits. Texts vary per definition so no cache can hide the work.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

from engine.compiler import compile_project
from engine.loader import load_project

HEAD = """\
apiVersion: syncline/v1
kind: Project
metadata: {name: bench}
spec:
  paths: [defs]
  environments: {dev: {vars: {URL: "http://127.0.0.1:9"}}}
---
"""

SHARED = """\
apiVersion: syncline/v1
kind: System
metadata: {name: erp}
spec:
  baseUrl: ${env.URL}
  idempotencyHeader: Idempotency-Key
  operations: {create: {method: POST, path: /orders}}
---
apiVersion: syncline/v1
kind: RetryPolicy
metadata: {name: r}
spec: {maxAttempts: 5}
"""

SCHEMA = """\
apiVersion: syncline/v1
kind: Schema
metadata: {{name: order{i}}}
spec:
  jsonSchema:
    type: object
    required: [id]
    properties:
      id: {{type: string}}
      customer: {{type: object, properties: {{id: {{type: string}}, name: {{type: string}}}}}}
      currency: {{type: string}}
      lines: {{type: array}}
      region: {{type: string}}
      term: {{type: integer}}
      f{i}: {{type: string}}
"""

MAPPING = """\
apiVersion: syncline/v1
kind: Mapping
metadata: {{name: m{i}}}
spec:
  target: order{i}
  fields:
    id: Id{i}
    customer.id: Account.Id
    customer.name: Account.Name{i}
    currency: {{expr: Currency, default: USD}}
    lines: "Items[].{{sku: Code{i}, qty: Quantity}}"
    region: {{expr: Country, lookup: region}}
    term: {{template: "{{{{ source.Term{i} | int * 12 }}}}"}}
    f{i}: {{const: x{i}}}
  lookups:
    region: {{US: NA, DE: EMEA, _default: ROW}}
"""

FLOW = """\
apiVersion: syncline/v1
kind: Flow
metadata: {{name: f{i}}}
spec:
  trigger: {{event: com.acme.e{i}}}
  filter: "data.kind == 'k{i}'"
  idempotencyKey: data.id
  steps:
    - {{id: order, map: m{i}}}
    - id: check
      validate:
        schema: order{i}
        rules: [{{assert: "length(steps.order.lines) > `{i}`", code: NO_LINES, message: none}}]
    - {{id: erp, call: {{system: erp, operation: create, body: steps.order}}, retry: r}}
    - {{id: done, emit: {{type: com.acme.done{i}, data: "{{id: steps.erp.body.id}}"}}}}
"""


def generate(root: Path, n: int) -> int:
    defs = root / "defs"
    defs.mkdir()
    (root / "syncline.yaml").write_text(HEAD.split("---")[0])
    (defs / "shared.yaml").write_text(SHARED)
    for i in range(n):
        (defs / f"m{i}.yaml").write_text(SCHEMA.format(i=i) + "---\n" + MAPPING.format(i=i))
        (defs / f"f{i}.yaml").write_text(FLOW.format(i=i))
    return 3 * n + 2


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        count = generate(root, n)
        started = time.perf_counter()
        loaded = load_project(root)
        loaded_at = time.perf_counter()
        plan = compile_project(root, environ={})
        compiled_at = time.perf_counter()
        functions = plan.warm()
        finished = time.perf_counter()
    load_s = loaded_at - started
    compile_s = compiled_at - loaded_at  # compile_project loads again: includes a second load
    warm_s = finished - loaded_at
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"definitions: {count} ({n} flows, {n} mappings, {n} schemas); "
          f"{len(plan.flows)} flows compiled, {functions} generated functions")
    print(f"{'':<38}ms/definition  ms per flow or mapping")
    for label, seconds in (
        ("load only:", load_s),
        ("load + compile (validate, plan):", compile_s),
        ("load + compile + CPython (serve):", warm_s),
    ):
        print(f"{label:<34} {seconds * 1000:6.0f} ms  {seconds / count * 1000:6.2f}"
              f"         {seconds / (2 * n) * 1000:6.2f}")
    print(f"peak memory (RSS): {peak:.0f} MiB")
    assert len(loaded.documents) == count

if __name__ == "__main__":
    main()
