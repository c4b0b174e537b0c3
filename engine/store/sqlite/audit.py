"""The audit log in SQLite (engine/store/audit.py has its SQL and hash chain)."""

from __future__ import annotations

import time
from typing import Any

from engine.store import audit as audit_sql
from engine.store.audit import AuditQuery
from engine.store.interface.audit import AuditLog
from engine.store.rows import dumps
from engine.store.sqlite.core import SQLiteCore
from engine.store.sqlite.readers import query_all
from engine.store.sqlite_writes import tx_audit


class SQLiteAudit(SQLiteCore, AuditLog):
    async def audit(self, actor: str, action: str, run_id: str | None, detail: Any) -> None:
        """Append an entry to the audit log (which refuses UPDATE and DELETE)."""
        await self._write(tx_audit, (time.time(), actor, action, run_id, dumps(detail)))

    async def audit_log(self, query: AuditQuery | None = None) -> list[dict[str, Any]]:
        """Audit entries, newest first: ``{seq, at, actor, action, run_id, detail, hash}``."""
        sql, params = audit_sql.select(query or AuditQuery(), "?")
        return [audit_sql.entry(row) for row in await self._read(query_all, sql, params)]

    async def audit_chain(self, after_seq: int, limit: int) -> list[tuple[Any, ...]]:
        """Raw audit rows in chain order after `after_seq` (for `audit_sql.Verifier`)."""
        rows: list[tuple[Any, ...]] = await self._read(
            query_all, audit_sql.chain_page("?"), (after_seq, limit)
        )
        return rows
