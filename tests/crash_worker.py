"""A runtime process for the crash test: ingests events 0..N-1 of flow `crash` (again on every
start; duplicates are deduplicated) while executing them, and prints `idle` once every run is
done. The test kills it with SIGKILL at random points and starts it again.

    python tests/crash_worker.py PROJECT_ROOT N [POSTGRESQL_URL]

With a PostgreSQL URL it is one replica of several sharing that database (the default store is
the project's SQLite file).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from engine.compiler import compile_project
from engine.runtime import EventMeta, Runtime
from engine.store import SQLiteStore, Store
from engine.store.postgres import PostgresStore


async def main(root: Path, count: int, database: str | None) -> None:
    plan = compile_project(root)
    store: Store = (
        PostgresStore(database) if database else SQLiteStore(root / ".syncline" / "syncline.db")
    )
    async with store:
        runtime = Runtime(store, plan, lease=1.0, poll=0.05, concurrency=16)
        await runtime.start()
        print("worker", runtime.worker_id, flush=True)
        flow = plan.flows["crash"]
        for start in range(0, count, 25):
            await asyncio.gather(
                *(
                    runtime.ingest(
                        flow, {"i": i}, EventMeta(id=f"ev-{i}", type="webhook:/c", source="erp")
                    )
                    for i in range(start, min(count, start + 25))
                )
            )
        print("ingested", flush=True)
        while not await runtime.idle(1.0):
            pass
        print("idle", flush=True)
        await runtime.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), (sys.argv[3:] or [None])[0]))
