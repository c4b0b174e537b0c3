"""The server's live set of tokens: the environment's plus the tokens file's, reloaded when the
file changes. A file that no longer reads keeps the old tokens serving; why shows in the log and
in /api/v1/status (`tokens`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchfiles import Change, awatch

from engine.errors import UsageError
from engine.server.auth import TokenTable, env_entries, read_tokens_file
from engine.server.times import iso_fields

log = logging.getLogger("syncline.tokens")


@dataclass(frozen=True)
class TokensStatus:
    """The outcome of the last read of the tokens file, as /api/v1/status shows it."""

    ok: bool
    at: float
    file: str | None
    digest: str | None  # SHA-256 of the file now serving
    count: int  # tokens known (the file's and the environment's)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return iso_fields(self.__dict__, "at")


class Tokens:
    """The known tokens (`table`), and how the last read of the tokens file went (`status`).

    Raises UsageError when the file cannot be read at start: a server does not start with
    tokens it cannot know."""

    def __init__(
        self, file: Path | None, admin_token: str | None = None, ingest_token: str | None = None
    ) -> None:
        self.file = file
        self._env = env_entries(admin_token, ingest_token)
        entries, digest = read_tokens_file(file) if file is not None else ([], None)
        self.table = TokenTable([*self._env, *entries])
        self.status = TokensStatus(True, time.time(), _name(file), digest, len(self.table.entries))

    def reload(self) -> TokensStatus:
        """Read the file again; on success its tokens replace the old ones at once."""
        if self.file is None:
            return self.status
        try:
            entries, digest = read_tokens_file(self.file)
        except UsageError as exc:
            log.error("tokens file rejected; the previous tokens stay in use: %s", exc,
                      extra={"event": "tokens.rejected"})
            old = self.status
            self.status = TokensStatus(
                False, time.time(), old.file, old.digest, old.count, str(exc)
            )
            return self.status
        self.table = TokenTable([*self._env, *entries])
        self.status = TokensStatus(
            True, time.time(), _name(self.file), digest, len(self.table.entries)
        )
        log.info("tokens file reloaded: %d tokens", len(self.table.entries),
                 extra={"event": "tokens.reloaded", "tokens": len(self.table.entries)})
        return self.status

    async def watch(
        self, stop: asyncio.Event, changed: Callable[[TokensStatus], Awaitable[None]]
    ) -> None:
        """Reload whenever the file changes, until `stop` is set; `changed` hears each outcome."""
        if self.file is None:
            return
        target = self.file.resolve()

        def this_file(change: Change, path: str) -> bool:
            return Path(path).resolve() == target

        async for _ in awatch(
            target.parent, watch_filter=this_file, step=50, debounce=400, stop_event=stop
        ):
            await changed(self.reload())


def _name(file: Path | None) -> str | None:
    return None if file is None else str(file)
