"""`plan --samples`: 1,000 samples through a changed 25-field mapping, old and new, diffed.
Prints the time of reading the samples, previewing and rendering, and its ratio to applying the
new mapping alone 1,000 times. Run: python tests/bench/bench_preview.py [N]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from engine.compiler import compile_project
from engine.compiler.compiled import MapAction
from engine.compiler.plan import Plan
from engine.gitops.preview import preview
from engine.gitops.preview_render import render_text
from engine.gitops.samples import Redactor, load_samples

FIELDS = 25

PROJECT = """\
apiVersion: syncline/v1
kind: Project
metadata: {name: bench}
spec:
  paths: [defs]
"""

FLOW = """\
apiVersion: syncline/v1
kind: Flow
metadata: {name: orders, version: 1}
spec:
  trigger: {event: com.acme.order}
  steps:
    - {id: order, map: wide}
"""


def mapping(changed: bool) -> str:
    """25 fields; the head changes one field in five (an expression, a default, a template)."""
    lines = ["apiVersion: syncline/v1", "kind: Mapping", "metadata: {name: wide, version: 1}",
             "spec:", "  fields:"]
    for i in range(FIELDS):
        if changed and i % 5 == 0:
            lines.append(f"    f{i}: {{template: '{{{{ source.a{i} }}}}-{i}'}}")
        elif i % 3 == 0:
            lines.append(f"    nested.f{i}: {{expr: a{i}, default: none}}")
        else:
            lines.append(f"    f{i}: a{i}")
    return "\n".join(lines) + "\n"


def project(root: Path, changed: bool) -> Plan:
    (root / "defs").mkdir(parents=True)
    (root / "syncline.yaml").write_text(PROJECT)
    (root / "defs" / "flow.yaml").write_text(FLOW)
    (root / "defs" / "wide.yaml").write_text(mapping(changed))
    return compile_project(root, environment="dev", environ={})


def write_samples(directory: Path, count: int) -> None:
    (directory / "orders").mkdir(parents=True)
    with (directory / "orders" / "recorded.jsonl").open("w") as out:
        for n in range(count):
            out.write(json.dumps({f"a{i}": f"v{n}-{i}" for i in range(FIELDS)}) + "\n")


def measure(count: int) -> tuple[float, float]:
    """(seconds to read, preview and render `count` samples; seconds to apply the mapping
    alone `count` times)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base, head = project(root / "base", False), project(root / "head", True)
        write_samples(root / "samples", count)
        start = time.perf_counter()
        shown = preview(base, head, load_samples(root / "samples"), Redactor(), flows=False)
        render_text(shown)
        took = time.perf_counter() - start
        assert shown.total("changed") == count, shown.as_dict()["totals"]
        action = head.flows["orders"].steps[0].action
        assert isinstance(action, MapAction)
        payloads = [s.data for s in load_samples(root / "samples")]
        start = time.perf_counter()
        for payload in payloads:
            action.mapping.apply(payload)
        return took, time.perf_counter() - start


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    took, bare = measure(count)
    print(f"preview of {count} samples through a changed {FIELDS}-field mapping: "
          f"{took * 1000:.0f} ms (applying the new mapping alone: {bare * 1000:.1f} ms; "
          f"ratio {took / bare:.1f}x)")
    flows = measure_flows(min(count, 200))
    print(f"flow level (old and new through the runtime, Systems stubbed): {min(count, 200)} "
          f"samples in {flows * 1000:.0f} ms, {flows / took * count / min(count, 200):.0f}x "
          "the mapping level per sample")


def measure_flows(count: int) -> float:
    """Seconds to preview `count` samples at both levels (flows through the runtime)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base, head = project(root / "base", False), project(root / "head", True)
        write_samples(root / "samples", count)
        samples = load_samples(root / "samples")
        start = time.perf_counter()
        shown = preview(base, head, samples, Redactor())
        took = time.perf_counter() - start
        assert shown.flows[0].count("changed") == count, shown.as_dict()["totals"]
        return took


if __name__ == "__main__":
    main()
