"""The PostgreSQL store's schema: numbered migrations, as in SQLite (append, never edit one that
has shipped), applied under an advisory lock so that replicas starting together apply each once."""

from __future__ import annotations

from typing import Any

import psycopg

from engine.errors import StoreError
from engine.store import audit, history, ordering, postgres_claims
from engine.store.aggregates_postgres import (
    POSTGRES_DONE_MIGRATION,
    POSTGRES_MIGRATION,
    POSTGRES_NEW_RUNS_MIGRATION,
)
from engine.store.alerts import MIGRATION as ALERTS_MIGRATION
from engine.store.controls import MIGRATION as CONTROLS_MIGRATION
from engine.store.echoes import ANSWERS_MIGRATION as ECHO_ANSWERS_MIGRATION
from engine.store.echoes import MIGRATION as ECHOES_MIGRATION
from engine.store.label_tallies import POSTGRES_LABELS_MIGRATION, POSTGRES_NEW_LABELS_MIGRATION
from engine.store.quotas import MIGRATION as QUOTAS_MIGRATION

MIGRATION_LOCK = 0x53594E43  # "SYNC": the advisory lock replicas migrate under

# Numbered schema migrations, as in SQLite: append, never edit one that has shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE plans (
        digest      text PRIMARY KEY,
        bundle      text NOT NULL,
        created_at  double precision NOT NULL
    );
    CREATE TABLE events (
        id          text PRIMARY KEY,
        type        text NOT NULL,
        source      text NOT NULL,
        subject     text,
        time        text,
        data        text NOT NULL,
        attributes  text NOT NULL,
        received_at double precision NOT NULL
    );
    CREATE TABLE runs (
        seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id              text NOT NULL UNIQUE,
        flow            text NOT NULL,
        flow_version    integer NOT NULL,
        plan_digest     text NOT NULL,
        event_id        text NOT NULL REFERENCES events (id),
        state           text NOT NULL,
        key             text NOT NULL,
        ordering_key    text,
        correlation_id  text NOT NULL,
        traceparent     text,
        created_at      double precision NOT NULL,
        updated_at      double precision NOT NULL,
        next_attempt_at double precision,
        reason          text,
        replay_of       text,
        data_override   text,
        has_override    boolean NOT NULL DEFAULT false,
        lease_owner     text,
        lease_until     double precision,
        generation      integer NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX runs_dedup ON runs (flow, key) WHERE state <> 'filtered';
    CREATE INDEX runs_key ON runs (key, seq);
    CREATE INDEX runs_flow ON runs (flow, seq);
    CREATE INDEX runs_state ON runs (state, seq);
    CREATE INDEX runs_replay_of ON runs (replay_of) WHERE replay_of IS NOT NULL;
    CREATE INDEX runs_runnable ON runs (seq) WHERE state IN ('pending', 'running', 'waiting');
    CREATE INDEX runs_blocking ON runs (ordering_key, seq)
        WHERE state IN ('pending', 'running', 'waiting', 'parked');
    CREATE INDEX runs_waiting ON runs (next_attempt_at) WHERE state = 'waiting';
    CREATE TABLE steps (
        run_id        text NOT NULL REFERENCES runs (id),
        step_id       text NOT NULL,
        state         text NOT NULL,
        output        text NOT NULL,
        input_digest  text,
        error         text,
        attempts      text NOT NULL,
        updated_at    double precision NOT NULL,
        PRIMARY KEY (run_id, step_id)
    );
    CREATE TABLE outbox (
        seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id        text NOT NULL REFERENCES runs (id),
        event         text NOT NULL,
        created_at    double precision NOT NULL,
        dispatched_at double precision
    );
    CREATE INDEX outbox_pending ON outbox (seq) WHERE dispatched_at IS NULL;
    CREATE TABLE audit (
        seq     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at      double precision NOT NULL,
        actor   text NOT NULL,
        action  text NOT NULL,
        run_id  text,
        detail  text NOT NULL
    );
    CREATE INDEX audit_run ON audit (run_id, seq);
    CREATE FUNCTION syncline_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the audit log is append-only';
    END $$;
    CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
        FOR EACH ROW EXECUTE FUNCTION syncline_audit_append_only();
    """,
    # 2: audit entries are hash-chained (engine/store/audit.py).
    audit.POSTGRES_MIGRATION,
    # 3: the aggregates business metrics read (engine/store/aggregates.py), kept by triggers.
    POSTGRES_MIGRATION,
    # 4: what the timed triggers remember across restarts: a schedule's last tick, a poll's
    # cursor (engine/runtime/schedules.py, polling.py), one JSON value per name; and the results
    # of Reconciliations, one per (name, tick): the row claims the tick for one replica.
    """
    CREATE TABLE trigger_state (
        name        text PRIMARY KEY,
        value       text NOT NULL,
        updated_at  double precision NOT NULL
    );
    CREATE TABLE reconciliations (
        seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name        text NOT NULL,
        tick        text NOT NULL,
        started_at  double precision NOT NULL,
        state       text NOT NULL,
        report      text,
        UNIQUE (name, tick)
    );
    """,
    # 5: paused flows and Systems, and circuit breakers that are not closed.
    CONTROLS_MIGRATION,
    # 6: the call budgets of Systems (engine/store/quotas.py), shared by replicas.
    QUOTAS_MIGRATION,
    # 7: alerts: subjects firing and last notified, and the notifications (an outbox).
    ALERTS_MIGRATION,
    # 8: run history that is never rewritten: generations, reasons, reset step records.
    history.POSTGRES_MIGRATION,
    # 9: `orderingKey: {whileParked: continue}`: a parked run may let its key go.
    ordering.POSTGRES_MIGRATION,
    # 10: echo fingerprints of writes, and what was last known of each written record.
    ECHOES_MIGRATION,
    # 11: echo fingerprints completed from the write's answer (a create's id, the record as held).
    ECHO_ANSWERS_MIGRATION,
    # 12: metric labels resolved from runs' data and steps (engine/store/label_tallies.py).
    POSTGRES_LABELS_MIGRATION,
    # 13: a step compensated after it completed stays done for `beforeStep` (aggregates).
    POSTGRES_DONE_MIGRATION,
    # 14: the runs holding their ordering key in arrival order: a claim's window (heads first).
    postgres_claims.MIGRATION,
    # 15: new runs tallied once per insert statement (an accept batch), not once per row.
    POSTGRES_NEW_RUNS_MIGRATION,
    # 16: new runs' metric labels tallied once per insert statement too.
    POSTGRES_NEW_LABELS_MIGRATION,
)


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[int]:
    """Apply the migrations the database has not seen (inside the caller's transaction); return
    their numbers."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
    await conn.execute("CREATE TABLE IF NOT EXISTS syncline_schema (version integer NOT NULL)")
    row = await (await conn.execute("SELECT max(version) FROM syncline_schema")).fetchone()
    version = (row[0] if row else None) or 0
    if version > len(MIGRATIONS):
        raise StoreError(
            f"the database schema is version {version}, newer than this Syncline "
            f"understands ({len(MIGRATIONS)}); upgrade Syncline"
        )
    applied = list(range(version + 1, len(MIGRATIONS) + 1))
    for number in applied:
        await conn.execute(MIGRATIONS[number - 1])
        await conn.execute("INSERT INTO syncline_schema (version) VALUES (%s)", (number,))
    return applied
