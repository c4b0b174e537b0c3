"""Opening and closing a store, and running plain SQL in one transaction."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, Self


class Lifecycle(abc.ABC):
    """``async with store:`` opens it and closes it."""

    shared = False  # whether several processes (replicas) share it: PostgreSQL

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply numbered schema migrations."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush pending group commits and close."""

    @abc.abstractmethod
    async def transact(
        self,
        statements: Sequence[tuple[str, tuple[Any, ...]]],
        *,
        only_if_first: bool = False,
        read_only: bool = False,
    ) -> list[tuple[list[tuple[Any, ...]], int]]:
        """Run SQL statements (`%s` placeholders) in one transaction: each one's rows and
        rowcount. With `only_if_first`, the later ones run only if the first changed or returned
        something; `read_only` statements only read (SQLite runs them off the writer). For
        engine/store/controls.py, whose statements both stores understand."""
