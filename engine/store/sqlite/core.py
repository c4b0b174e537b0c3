"""What every SQLite mixin stands on: the writer process that owns the only write connection
(engine/store/writer.py) and the pool of readers."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from engine.errors import StoreError
from engine.store.controls import run_statements
from engine.store.interface.lifecycle import Lifecycle
from engine.store.sqlite.readers import Readers
from engine.store.writer import WriterProcess

_T = TypeVar("_T")

WRITER_MODULE = "engine.store.sqlite_writes"  # what the writer process imports


class SQLiteCore(Lifecycle):
    """Opens and closes the store; `_write` queues a job for the writer, `_read` runs a query on a
    reader."""

    def __init__(self, path: str | Path, *, max_batch: int | None = None) -> None:
        self.path = Path(path)
        self.migrations_applied: list[int] = []
        self._max_batch = max_batch or sys.maxsize
        self._writer: WriterProcess | None = None
        self._readers: Readers | None = None
        self._closed = False

    @property
    def commits(self) -> int:
        """Transactions committed by the writer since `open()`."""
        return self._writer.commits if self._writer else 0

    @property
    def writes(self) -> int:
        """Writes carried by those transactions (writes / commits = mean batch size)."""
        return self._writer.writes if self._writer else 0

    # lifecycle ---------------------------------------------------------------------------------
    async def open(self) -> None:
        """Create or open the file, apply pending migrations, start the writer process."""
        if self._writer is not None:
            raise StoreError(f"the SQLite store {self.path} is already open")
        self._writer = WriterProcess(WRITER_MODULE, self.path.resolve(), self._max_batch)
        try:
            self.migrations_applied = await self._writer.start()
        except BaseException:
            self._writer = None
            raise
        self._readers = Readers(self.path)

    async def close(self) -> None:
        """Commit every queued write, stop the writer process and close all connections."""
        if self._writer is None or self._closed:
            return
        self._closed = True
        await self._writer.stop()
        assert self._readers is not None
        self._readers.close()

    def _write(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        if self._writer is None or self._closed:
            raise StoreError(f"the SQLite store {self.path} is not open")
        return cast("asyncio.Future[_T]", self._writer.submit(fn, args))

    async def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._readers is None or self._closed:
            raise StoreError(f"the SQLite store {self.path} is not open")
        return cast(_T, await asyncio.to_thread(self._readers.run, fn, *args))

    # operating switches ------------------------------------------------------------------------
    async def transact(
        self,
        statements: Sequence[tuple[str, tuple[Any, ...]]],
        *,
        only_if_first: bool = False,
        read_only: bool = False,
    ) -> list[tuple[list[tuple[Any, ...]], int]]:
        """See `Store.transact`: one job of the writer, so it commits with the others (reads on
        a reader connection)."""
        if read_only:
            return await self._read(run_statements, tuple(statements), only_if_first)
        return await self._write(run_statements, tuple(statements), only_if_first)
