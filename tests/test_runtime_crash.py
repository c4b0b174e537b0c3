"""The crash test: a real runtime process (tests/crash_worker.py) on a SQLite file is killed with
SIGKILL at random points while it processes hundreds of events against a real local HTTP target
that fails some writes (503 before applying, or after applying: a lost answer). After restarts,
every accepted event reaches a terminal state and every logical write reached the target exactly
once by idempotency key."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runtime_kit import LiveTarget, Target, flow, write_project

EVENTS = 500
KILLS = 6

CRASH_FLOW = flow(
    "crash",
    """
    - id: first
      call: {system: erp, operation: create, body: "{i: data.i, step: 'first'}"}
      retry: patient
    - id: second
      call:
        system: erp
        operation: create
        body: "{i: data.i, step: 'second', after: steps.first.body.id}"
      retry: patient
    - id: done
      set: {first: steps.first.body.id, second: steps.second.body.id}
""",
    trigger="{webhook: {path: /c, system: erp}}",
    extra="  orderingKey: to_string(data.i)\n",
)

PATIENT = """\
apiVersion: syncline/v1
kind: RetryPolicy
metadata: {name: patient, owner: qa}
spec:
  maxAttempts: 100
  backoff: {initial: 10ms, multiplier: 2, max: 100ms}
  timeout: 3s
"""


def start_worker(root: Path) -> subprocess.Popen[str]:
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)])}
    return subprocess.Popen(
        [sys.executable, str(here / "crash_worker.py"), str(root), str(EVENTS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing_and_writes_once(tmp_path: Path):
    rng = random.Random(os.environ.get("CRASH_SEED", "1"))
    live = LiveTarget(Target(flaky=0.1, lost=0.05))
    with live as target:
        root = write_project(tmp_path, live.url, CRASH_FLOW, {"flows/policy.yaml": PATIENT})
        for kill in range(KILLS):
            # Each worker dies at a random point of its share of the work (measured in writes
            # the target applied, not in seconds: a fast machine would finish everything before
            # the last kill, a slow one before the first write).
            share = 2 * EVENTS / (KILLS + 1)
            goal = max(int(share * (kill + rng.uniform(0.2, 1.0))), len(target.writes) + 1)
            worker = start_worker(root)
            deadline = time.monotonic() + 30
            while len(target.writes) < goal and time.monotonic() < deadline:
                time.sleep(0.002)
            worker.send_signal(signal.SIGKILL)
            worker.communicate(timeout=10)
        before_last = len(target.writes)
        worker = start_worker(root)
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        assert "idle" in out

    conn = sqlite3.connect(root / ".syncline" / "syncline.db")
    states = dict(conn.execute("SELECT state, count(*) FROM runs GROUP BY state").fetchall())
    conn.close()
    assert states == {"succeeded": EVENTS}
    assert 0 < before_last < 2 * EVENTS  # the kills did land in the middle of the work

    keys_per_step: dict[tuple[int, str], set[str]] = {}
    for request in target.to("/orders"):
        keys_per_step.setdefault((request.body["i"], request.body["step"]), set()).add(request.key)
    assert len(keys_per_step) == 2 * EVENTS
    assert all(len(keys) == 1 for keys in keys_per_step.values())  # one key per logical write
    assert len(target.writes) == 2 * EVENTS
    assert all(len(bodies) == 1 for bodies in target.writes.values())  # applied once per key
