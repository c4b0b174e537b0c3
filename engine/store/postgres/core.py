"""What every PostgreSQL mixin stands on: the connection pool, migrations on open, and one
transaction per write (`_transaction`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from engine.errors import StoreError
from engine.store.controls import run_statements_async
from engine.store.interface.lifecycle import Lifecycle
from engine.store.postgres_schema import migrate
from engine.store.postgres_sql import AcceptItem

BATCHES_IN_FLIGHT = 2  # accept batches committing at once (see `PostgresStore.accept`)


class PostgresCore(Lifecycle):
    """Opens and closes the pool; `_transaction` is one transaction on a pooled connection."""

    def __init__(self, url: str, *, pool_size: int = 10, connect_timeout: float = 10.0) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.migrations_applied: list[int] = []
        self._pool_size = pool_size
        self._pool: AsyncConnectionPool | None = None
        self._accepts: list[tuple[AcceptItem, asyncio.Future[Any]]] = []  # queued for a batch
        self._batchers: set[asyncio.Future[None]] = set()  # the tasks committing them
        self._accepted_runs = 0  # runs this store inserted (see postgres_sql.PLAN_ONCE_PAST)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redacted(self.url)!r})"

    # lifecycle ---------------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect, and apply the migrations the database has not seen (once across replicas)."""
        if self._pool is not None:
            raise StoreError(f"the PostgreSQL store {redacted(self.url)} is already open")
        pool = AsyncConnectionPool(
            self.url, min_size=1, max_size=self._pool_size, open=False,
            kwargs={"autocommit": True}, name="syncline",
        )  # fmt: skip
        try:
            await pool.open(wait=True, timeout=self.connect_timeout)
        except Exception as exc:  # PoolTimeout (with the real cause inside), OperationalError
            await pool.close()
            raise StoreError(
                f"cannot connect to the PostgreSQL store {redacted(self.url)}: {exc}"
            ) from exc
        self._pool = pool
        try:
            self.migrations_applied = await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the pool (queued accepts and in-flight transactions finish first)."""
        if self._batchers:
            await asyncio.gather(*self._batchers)
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _migrate(self) -> list[int]:
        async with self._transaction() as conn:
            return await migrate(conn)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """One transaction on a pooled connection; database errors become StoreError."""
        async with self._connection() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection in autocommit mode (each statement its own transaction, as for
        an accept batch's one statement); database errors become StoreError."""
        if self._pool is None:
            raise StoreError("the PostgreSQL store is not open")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}".strip()) from exc

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._transaction() as conn:
            return await (await conn.execute(sql, params)).fetchall()

    # operating switches ------------------------------------------------------------------------
    async def transact(
        self,
        statements: Sequence[tuple[str, tuple[Any, ...]]],
        *,
        only_if_first: bool = False,
        read_only: bool = False,
    ) -> list[tuple[list[tuple[Any, ...]], int]]:
        """See `Store.transact`."""
        async with self._transaction() as conn:
            return await run_statements_async(conn, statements, only_if_first)


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "<invalid connection string>"
    if "password" not in info:
        return url
    info["password"] = "***"
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
