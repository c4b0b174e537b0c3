"""Replica failover on PostgreSQL, measured: three runtime processes (tests/crash_worker.py, lease
1 s) share 600 deliveries of a two-call flow against a real HTTP target that is slow and flaky;
one is killed with SIGKILL mid-work. Prints how long after the kill the runs it had leased were
all finished by the others, and checks that nothing was lost or applied twice.

    python tests/bench/bench_failover.py [EVENTS]   (PostgreSQL on 127.0.0.1:5432)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))

from runtime_kit import LiveTarget, Target, write_project  # noqa: E402
from test_runtime_crash import CRASH_FLOW, PATIENT  # noqa: E402

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def replica(root: Path, url: str, events: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), str(HERE.parent)])}
    return subprocess.Popen([sys.executable, str(HERE.parent / "crash_worker.py"), str(root),
                             str(events), url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def main(events: int) -> None:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
    live = LiveTarget(Target(flaky=0.05))
    try:
        with live as target, tempfile.TemporaryDirectory() as tmp:
            root = write_project(Path(tmp), live.url, CRASH_FLOW,
                                 {"flows/policy.yaml": PATIENT})
            procs = [replica(root, url, events) for _ in range(3)]
            owners = [p.stdout.readline().split()[1] for p in procs if p.stdout]
            with psycopg.connect(url, autocommit=True) as conn:
                def leased(owner: str) -> set[str]:
                    return {r for (r,) in conn.execute(
                        "SELECT id FROM runs WHERE state = 'running' AND lease_owner = %s",
                        (owner,))}

                deadline = time.monotonic() + 60
                while not leased(owners[0]) and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.5)
                orphans = leased(owners[0])
                procs[0].send_signal(signal.SIGKILL)
                killed = time.monotonic()
                procs[0].communicate(timeout=10)
                while True:
                    left = conn.execute(
                        "SELECT count(*) FROM runs WHERE id = ANY(%s) AND state NOT IN "
                        "('succeeded', 'failed', 'parked', 'dead-lettered')", (list(orphans),)
                    ).fetchone()
                    if left and left[0] == 0:
                        break
                    time.sleep(0.01)
                recovered = time.monotonic() - killed
                for proc in procs[1:]:
                    proc.communicate(timeout=300)
                states = dict(conn.execute("SELECT state, count(*) FROM runs GROUP BY state"))
            writes = [bodies for bodies in target.writes.values()]
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
    twice = sum(1 for bodies in writes if len(bodies) > 1)
    print(f"{len(orphans)} runs leased by the killed replica were finished by the other two "
          f"{recovered:.1f} s after the SIGKILL (lease 1 s); runs {states}; writes applied "
          f"twice: {twice} of {len(writes)}")
    assert states == {"succeeded": events} and twice == 0 and len(writes) == 2 * events


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 600)
