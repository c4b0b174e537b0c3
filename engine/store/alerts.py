"""Alert state kept in the store: which subjects of each Alert fire (and since when), when each
was last notified, and the notifications themselves (a durable outbox), the same on SQLite and
PostgreSQL (MIGRATION, appended to each store's migrations):

    alert_subjects (alert, subject)   -> firing_since (NULL: not firing), last_sent
    alert_notifications (id)          -> alert, subject, created_at, state pending|sent|failed,
                                         request (JSON), attempts, next_at, lease_until, ...

`claim` is the one decision replicas must make once: it moves `last_sent` forward only if the
subject was not notified within the repeat interval, and creates the notification in the same
transaction (on PostgreSQL a second replica's UPDATE waits for the first and then finds the
condition false). A notification is then delivered by whichever process leases it; a lease that
runs out (its process died) lets another take it over.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from engine.store.base import Store

MIGRATION = """
CREATE TABLE alert_subjects (
    alert           text NOT NULL,
    subject         text NOT NULL,
    firing_since    double precision,
    last_sent       double precision,
    PRIMARY KEY (alert, subject)
);
CREATE TABLE alert_notifications (
    id              text PRIMARY KEY,
    alert           text NOT NULL,
    subject         text NOT NULL,
    created_at      double precision NOT NULL,
    state           text NOT NULL,
    request         text NOT NULL,
    summary         text NOT NULL,
    attempts        integer NOT NULL,
    next_at         double precision NOT NULL,
    lease_until     double precision,
    sent_at         double precision,
    error           text
);
CREATE INDEX alert_notifications_due ON alert_notifications (state, next_at);
CREATE INDEX alert_notifications_alert ON alert_notifications (alert, created_at);
"""

_COLUMNS = ("id, alert, subject, created_at, state, request, summary, attempts, next_at, "
            "lease_until, sent_at, error")


@dataclass(frozen=True)
class Subject:
    """What the store knows of one subject of an Alert."""

    firing_since: float | None  # None: not firing
    last_sent: float | None     # when a notification about it was last created


@dataclass(frozen=True)
class Notification:
    """One notification: what to send (`request`: params, query, headers, body) and how far
    its delivery got."""

    id: str
    alert: str
    subject: str
    created_at: float
    state: str                  # pending | sent | failed
    request: dict[str, Any]
    summary: str                # a line for people (the API, logs)
    attempts: int
    next_at: float
    lease_until: float | None = None
    sent_at: float | None = None
    error: str | None = None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Notification:
        values = list(row)
        values[5] = json.loads(values[5])
        return cls(*values)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "alert": self.alert, "subject": self.subject, "state": self.state,
            "summary": self.summary, "created_at": self.created_at, "sent_at": self.sent_at,
            "attempts": self.attempts, "next_attempt_at": self.next_at if self.state == "pending"
            else None, "error": self.error, "request": self.request,
        }


class AlertLog:
    """The alert operations on a store (each a few statements through `Store.transact`)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def subjects(self, alert: str) -> dict[str, Subject]:
        [(rows, _)] = await self.store.transact(
            [("SELECT subject, firing_since, last_sent FROM alert_subjects WHERE alert = %s",
              (alert,))],
            read_only=True,
        )
        return {subject: Subject(since, last) for subject, since, last in rows}

    async def mark(self, alert: str, firing: list[str], cleared: list[str], now: float,
                   repeat: float = 0.0) -> None:
        """Subjects that started firing now, and subjects that stopped. With subjects stopping,
        those quiet and not notified within `repeat` are forgotten (a subject per run would
        otherwise keep a row per run ever parked)."""
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("INSERT INTO alert_subjects (alert, subject, firing_since) VALUES (%s, %s, %s) "
             "ON CONFLICT (alert, subject) DO UPDATE SET firing_since = excluded.firing_since "
             "WHERE alert_subjects.firing_since IS NULL", (alert, subject, now))
            for subject in firing
        ] + [
            ("UPDATE alert_subjects SET firing_since = NULL WHERE alert = %s AND subject = %s",
             (alert, subject))
            for subject in cleared
        ]
        if cleared:
            statements.append(
                ("DELETE FROM alert_subjects WHERE alert = %s AND firing_since IS NULL AND "
                 "(last_sent IS NULL OR last_sent <= %s)", (alert, now - repeat)))
        if statements:
            await self.store.transact(statements)

    async def claim(self, notification: Notification, repeat: float) -> bool:
        """Create `notification` unless its subject was notified less than `repeat` seconds
        before its `created_at`: True if this caller created it."""
        n = notification
        (_, claimed), _ = await self.store.transact(
            [
                ("UPDATE alert_subjects SET last_sent = %s WHERE alert = %s AND subject = %s "
                 "AND (last_sent IS NULL OR last_sent <= %s)",
                 (n.created_at, n.alert, n.subject, n.created_at - repeat)),
                (f"INSERT INTO alert_notifications ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, "
                 "%s, %s, %s, NULL, NULL, NULL)",
                 (n.id, n.alert, n.subject, n.created_at, n.state, json.dumps(n.request),
                  n.summary, n.attempts, n.next_at)),
            ],
            only_if_first=True,
        )
        return claimed == 1

    async def due(self, now: float, limit: int) -> list[Notification]:
        """Pending notifications whose time has come and that nobody holds a lease on."""
        [(rows, _)] = await self.store.transact(
            [(f"SELECT {_COLUMNS} FROM alert_notifications WHERE state = 'pending' AND "
              "next_at <= %s AND (lease_until IS NULL OR lease_until <= %s) "
              "ORDER BY created_at LIMIT %s", (now, now, limit))],
            read_only=True,
        )
        return [Notification.from_row(row) for row in rows]

    async def lease(self, notification_id: str, until: float, now: float) -> bool:
        """Take a due notification for delivery until `until`: True if this caller has it."""
        [(_, leased)] = await self.store.transact(
            [("UPDATE alert_notifications SET lease_until = %s WHERE id = %s AND state = "
              "'pending' AND next_at <= %s AND (lease_until IS NULL OR lease_until <= %s)",
              (until, notification_id, now, now))]
        )
        return leased == 1

    async def finish(self, notification_id: str, state: str, *, now: float, attempted: bool,
                     next_at: float | None = None, error: str | None = None) -> None:
        """An attempt's outcome: `sent`, `failed`, or `pending` again at `next_at`."""
        await self.store.transact(
            [("UPDATE alert_notifications SET state = %s, attempts = attempts + %s, "
              "next_at = %s, lease_until = NULL, sent_at = %s, error = %s WHERE id = %s",
              (state, int(attempted), next_at if next_at is not None else now,
               now if state == "sent" else None, error, notification_id))]
        )

    async def recent(self, alert: str | None, limit: int) -> list[Notification]:
        """Notifications newest first (of one alert, or all)."""
        where, params = ("WHERE alert = %s ", (alert,)) if alert else ("", ())
        [(rows, _)] = await self.store.transact(
            [(f"SELECT {_COLUMNS} FROM alert_notifications {where}ORDER BY created_at DESC "
              "LIMIT %s", (*params, limit))],
            read_only=True,
        )
        return [Notification.from_row(row) for row in rows]

    async def counts(self) -> dict[tuple[str, str], int]:
        """(alert, state) -> notifications: what syncline_alerts_total exports."""
        [(rows, _)] = await self.store.transact(
            [("SELECT alert, state, COUNT(*) FROM alert_notifications GROUP BY alert, state",
              ())],
            read_only=True,
        )
        return {(alert, state): int(n) for alert, state, n in rows}
