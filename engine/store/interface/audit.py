"""The append-only, hash-chained audit log (engine/store/audit.py has its SQL and chain)."""

from __future__ import annotations

import abc
from typing import Any

from engine.store.audit import AuditQuery


class AuditLog(abc.ABC):
    @abc.abstractmethod
    async def audit(self, actor: str, action: str, run_id: str | None, detail: Any) -> None:
        """Append a hash-chained entry (engine/store/audit.py) to the append-only audit log."""

    @abc.abstractmethod
    async def audit_log(self, query: AuditQuery | None = None) -> list[dict[str, Any]]:
        """Audit entries, newest first, as `query` filters them."""

    @abc.abstractmethod
    async def audit_chain(self, after_seq: int, limit: int) -> list[tuple[Any, ...]]:
        """Raw audit rows (engine.store.audit.COLUMNS) after `after_seq`, in chain order."""
