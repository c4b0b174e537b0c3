"""The audit log in PostgreSQL (engine/store/audit.py has its SQL and hash chain)."""

from __future__ import annotations

import time
from typing import Any

from engine.store import audit as audit_sql
from engine.store.audit import AuditQuery
from engine.store.interface.audit import AuditLog
from engine.store.postgres.core import PostgresCore
from engine.store.postgres_sql import audit


class PostgresAudit(PostgresCore, AuditLog):
    async def audit(self, actor: str, action: str, run_id: str | None, detail: Any) -> None:
        """Append an entry to the audit log (a trigger refuses UPDATE and DELETE)."""
        async with self._transaction() as conn:
            await audit(conn, time.time(), actor, action, run_id, detail)

    async def audit_log(self, query: AuditQuery | None = None) -> list[dict[str, Any]]:
        """Audit entries, newest first: ``{seq, at, actor, action, run_id, detail, hash}``."""
        sql, params = audit_sql.select(query or AuditQuery(), "%s")
        return [audit_sql.entry(row) for row in await self._rows(sql, params)]

    async def audit_chain(self, after_seq: int, limit: int) -> list[tuple[Any, ...]]:
        """Raw audit rows in chain order after `after_seq` (for `audit_sql.Verifier`)."""
        return await self._rows(audit_sql.chain_page("%s"), (after_seq, limit))
