"""Backup and restore time of the embedded store: the RPO/RTO figures of README's Operations.

    python tests/bench/bench_backup.py [--runs 1000000] [--dir DIR]

Builds a store of N succeeded runs (each with its ~1 KB event and two step records, the shape a
webhook -> map -> call flow leaves), then times `syncline store backup` (engine.store.backup),
once with the store idle and once while a writer commits a run every millisecond (as a serving
store would), and `restore` into a fresh path. Prints seconds, MB/s and the ratio to a plain
file copy (`shutil.copyfile`) of the same file: the floor any backup pays on this disk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

from engine.store import SQLiteStore
from engine.store.backup import backup, restore

EVENT = json.dumps({"Id": "0065g00000XyZ1AAA", "StageName": "Closed Won", "Amount": 125000.0,
                    "Lines": [{"sku": f"SKU-{n:04d}", "qty": n, "note": "x" * 60}
                              for n in range(8)]})
OUTPUT = json.dumps({"status": 201, "body": {"id": "SO-000001", "total": 125000.0}})
ATTEMPT = json.dumps([{"n": 1, "started_at": 1.0, "finished_at": 1.1, "outcome": "ok"}])
BATCH = 20_000


def build(path: Path, runs: int) -> None:
    async def migrate() -> None:
        async with SQLiteStore(path):
            pass

    asyncio.run(migrate())
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    now = time.time()
    for start in range(0, runs, BATCH):
        rows = range(start, min(runs, start + BATCH))
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO events (id, type, source, subject, time, data, attributes, received_at) "
            "VALUES (?, 'webhook:/hooks/crm', 'crm', NULL, NULL, ?, '{}', ?)",
            [(f"ev-{n}", EVENT, now) for n in rows],
        )
        conn.executemany(
            "INSERT INTO runs (id, flow, flow_version, plan_digest, event_id, state, key, "
            "ordering_key, correlation_id, created_at, updated_at) VALUES (?, 'closed-won', 1, "
            "'sha256:x', ?, 'succeeded', ?, NULL, ?, ?, ?)",
            [(f"run-{n:09d}", f"ev-{n}", f"k-{n}", f"c-{n}", now, now) for n in rows],
        )
        conn.executemany(
            "INSERT INTO steps (run_id, step_id, state, output, attempts, updated_at) "
            "VALUES (?, ?, 'succeeded', ?, ?, ?)",
            [(f"run-{n:09d}", step, OUTPUT, ATTEMPT, now) for n in rows for step in ("map", "erp")],
        )
        conn.execute("COMMIT")
    conn.close()


def keep_writing(path: Path, stop: threading.Event) -> int:
    """Commit one small run a millisecond until `stop`; how many."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    written = 0
    while not stop.is_set():
        conn.execute(
            "INSERT INTO events (id, type, source, data, attributes, received_at) "
            "VALUES (?, 't', 's', '{}', '{}', 0)", (f"live-{written}",),
        )
        written += 1
        time.sleep(0.001)
    conn.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="Where to build (default: temp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        store = root / "syncline.db"
        started = time.monotonic()
        build(store, args.runs)
        size = store.stat().st_size / 1e6
        print(f"built {args.runs:,} runs ({size:,.0f} MB) in {time.monotonic() - started:.1f} s")

        started = time.monotonic()
        shutil.copyfile(store, root / "plain-copy.db")
        plain = time.monotonic() - started
        (root / "plain-copy.db").unlink()
        print(f"plain file copy:          {plain:6.2f} s  {size / plain:7.0f} MB/s")

        idle = backup(store, root / "idle-backup.db")
        print(f"backup, store idle:       {idle.seconds:6.2f} s  {size / idle.seconds:7.0f} MB/s  "
              f"x{idle.seconds / plain:.2f} a plain copy")
        (root / "idle-backup.db").unlink()

        stop = threading.Event()
        writer = threading.Thread(target=keep_writing, args=(store, stop))
        writer.start()
        try:
            busy = backup(store, root / "busy-backup.db")
        finally:
            stop.set()
            writer.join()
        print(f"backup, store writing:    {busy.seconds:6.2f} s  {size / busy.seconds:7.0f} MB/s  "
              f"x{busy.seconds / plain:.2f} a plain copy ({busy.runs:,} runs in the snapshot)")

        restored = restore(root / "busy-backup.db", root / "restored" / "syncline.db")
        print(f"restore (check + copy):   {restored.seconds:6.2f} s  "
              f"{size / restored.seconds:7.0f} MB/s  x{restored.seconds / plain:.2f} a plain copy")


if __name__ == "__main__":
    main()
