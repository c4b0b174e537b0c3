"""What `syncline test`, `syncline runs ...` print for a person at a terminal: every test with
-v, failures at their test entry with the reason spelled out, tables with headers and times,
whole JSON, the state an action leaves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from runtime_kit import flow, write_project

from engine.cli import main

MAPPING = """\
apiVersion: syncline/v1
kind: Schema
metadata: {name: order, version: 1, owner: qa}
spec:
  jsonSchema:
    type: object
    required: [id]
    properties: {id: {type: string}, amount: {type: number}}
---
apiVersion: syncline/v1
kind: Mapping
metadata: {name: to-order, version: 1, owner: qa}
spec:
  target: order@1
  fields:
    id: Id
    amount: Amount
  tests:
    - name: maps
      input: {Id: A, Amount: 1}
      expect: {id: A, amount: 1}
    - name: wants the wrong code
      input: {Amount: 1}
      expectError: EXPRESSION
    - name: reads a missing file
      inputFile: fixtures/nope.json
      expect: {id: A}
"""

SKIPPING = flow(
    "skipping",
    """
    - id: order
      map: to-order
    - id: big
      when: "steps.order.amount > `100`"
      set: {amount: steps.order.amount}
""",
    extra="""\
  tests:
    - name: sets the amount
      input: {Id: A, Amount: 5}
      expect:
        steps: {big: {amount: 5}}
""",
)

CHECKING = flow(
    "checking",
    """
    - id: check
      validate:
        input: data
        rules:
          - {assert: "data.amount > `0`", code: BAD_AMOUNT, message: amount must be positive}
    - id: echo
      set: {text: data.text}
""",
)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_verbose_lists_every_test_and_failures_point_at_their_entry(tmp_path: Path) -> None:
    root = write_project(tmp_path, "http://127.0.0.1:9", SKIPPING,
                         {"flows/order.yaml": MAPPING})
    code, out = invoke("test", str(root), "-v")
    assert code == 1, out
    assert out.splitlines()[:4] == [
        "mapping:to-order@1::maps PASSED",
        "mapping:to-order@1::wants the wrong code FAILED",
        "mapping:to-order@1::reads a missing file FAILED",
        "flow:skipping@1::sets the amount FAILED",
    ]
    # FILE:LINE:COL of each failing test's `- name:` entry, not of its document
    assert "flows/order.yaml:22:7: test 'wants the wrong code' failed\n" in out
    assert "flows/order.yaml:25:7: test 'reads a missing file' failed\n" in out
    assert "flows/flows.yaml:7:7: test 'sets the amount' failed\n" in out
    assert "expected error EXPRESSION, got REQUIRED: mapping 'to-order@1' failed: id:" in out
    missing = (root / "flows" / "fixtures" / "nope.json").resolve()
    assert f"cannot read fixture fixtures/nope.json ({missing}): No such file" in out
    assert "step 'big' was skipped: its `when` (steps.order.amount > `100`) was false" in out
    assert out.rstrip().endswith("1 passed, 3 failed")


def test_runs_list_show_and_cancel(tmp_path: Path) -> None:
    root = write_project(tmp_path, "http://127.0.0.1:9", CHECKING)
    long_text = "word " * 80
    (tmp_path / "ok.json").write_text(f'{{"amount": 1, "text": "{long_text}"}}')
    (tmp_path / "bad.json").write_text('{"amount": 0, "text": "x"}')
    for payload in ("ok.json", "bad.json"):
        invoke("run", "checking", "--input", str(tmp_path / payload), "--project", str(root))

    code, out = invoke("runs", "list", "--project", str(root))
    assert code == 0, out
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "FLOW", "STATE", "REASON", "KEY", "CREATED", "(UTC)",
                              "UPDATED", "(UTC)"]
    assert len(rows) == 2
    for column in ("FLOW", "STATE", "KEY", "CREATED"):  # aligned under the header
        at = header.index(column)
        assert all(row[at - 2:at] == "  " and row[at] != " " for row in rows), out
    parked = rows[0].split()
    assert parked[1:4] == ["checking@1", "parked", "BAD_AMOUNT"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", parked[5]) and re.fullmatch(r"\d\d:\d\d:\d\d",
                                                                         parked[6])
    succeeded = rows[1].split()[0]

    code, out = invoke("runs", "show", succeeded, "--project", str(root))
    assert code == 0 and long_text.strip() in out, out  # the whole output, never cut

    code, out = invoke("runs", "cancel", parked[0], "--project", str(root))
    assert code == 0, out
    assert out.splitlines()[0] == f"cancel: run {parked[0]} is now pending"
    assert "a worker compensates its completed steps, then it ends cancelled" in out


def test_help_does_not_wait_for_the_compiler() -> None:
    # `syncline --help` and the commands that read the store answer without importing the
    # compiler (0.33 s of imports); the commands that compile import it themselves.
    code = ("import sys, engine.cli; "
            "print(sorted(m for m in sys.modules if m.startswith('engine.compiler')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
