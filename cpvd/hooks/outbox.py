"""The durable outbox: hook events wait in the state database until each hook took them.

Why here: an event is recorded in the same transaction as the change it reports (a job
ending as a version, a job failing for good), so a kill -9 at any moment leaves either both
or neither; the dispatcher delivers after the commit and deletes a delivery only once its
hook accepted it (exit 0, a 2xx). A row left by a crash is simply delivered again, with the
same event id. ``record`` joins a transaction already open on the calling thread
(:meth:`cpvd.state.db.StateDB.write`).

Bounded: a hook's pending deliveries are capped (:data:`MAX_PENDING`); past it the oldest
are dropped and counted, so a receiver that is gone for weeks cannot fill the disk. An
event is deleted with its last delivery.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cpvd.hooks.event import HookEvent
from cpvd.hooks.model import HookConfig
from cpvd.state.db import StateDB

MAX_PENDING = 10_000
SCHEMA_VERSION = 1
_DDL = """
CREATE TABLE IF NOT EXISTS hook_events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    time REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hook_deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    hook TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    error TEXT,
    UNIQUE (event_id, hook)
);
CREATE INDEX IF NOT EXISTS hook_deliveries_due ON hook_deliveries(hook, next_attempt_at, seq);
"""


@dataclass(frozen=True)
class Delivery:
    seq: int
    hook: str
    attempts: int
    event: HookEvent


class Outbox:
    """Events per hook, durable until delivered. ``hooks`` gives the running config's hooks
    (a SIGHUP changes them); ``notify`` is called after a record, from any thread."""

    def __init__(
        self,
        db: StateDB,
        hooks: Callable[[], Sequence[HookConfig]],
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self.db, self.hooks, self.notify = db, hooks, notify
        self.dropped = 0
        db.ensure_schema("hooks", SCHEMA_VERSION, _DDL)

    def record(self, type: str, data: dict[str, Any]) -> HookEvent | None:
        """Queue ``type`` for every hook it matches (None: no hook wants it; nothing is
        written, so a daemon without hooks pays nothing)."""
        wanted = [h.name for h in self.hooks() if h.matches(type, data)]
        if not wanted:
            return None
        event = HookEvent(type, data)
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO hook_events (id, type, time, data) VALUES (?, ?, ?, ?)",
                (event.id, event.type, event.time, json.dumps(data, default=str)),
            )
            conn.executemany(
                "INSERT INTO hook_deliveries (event_id, hook, next_attempt_at) VALUES (?, ?, ?)",
                [(event.id, name, event.time) for name in wanted],
            )
            for name in wanted:
                self._cap(conn, name)
        self.notify()
        return event

    def _cap(self, conn: Any, hook: str) -> None:
        sql = "SELECT COUNT(*) FROM hook_deliveries WHERE hook = ?"
        (n,) = conn.execute(sql, (hook,)).fetchone()
        if n > MAX_PENDING:
            cur = conn.execute(
                "DELETE FROM hook_deliveries WHERE seq IN (SELECT seq FROM hook_deliveries"
                " WHERE hook = ? ORDER BY seq LIMIT ?)",
                (hook, n - MAX_PENDING),
            )
            self.dropped += cur.rowcount
            self._forget_events(conn)

    def due(self, hook: str, now: float, limit: int = 50) -> list[Delivery]:
        """The hook's deliveries due at ``now``, oldest first."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT d.seq, d.attempts, e.id, e.type, e.time, e.data FROM hook_deliveries d"
                " JOIN hook_events e ON e.id = d.event_id WHERE d.hook = ?"
                " AND d.next_attempt_at <= ? ORDER BY d.seq LIMIT ?",
                (hook, now, limit),
            ).fetchall()
        return [
            Delivery(seq, hook, attempts, HookEvent(type, json.loads(data), id, when))
            for seq, attempts, id, type, when, data in rows
        ]

    def next_due_at(self, hook: str) -> float | None:
        with self.db.read() as conn:
            (when,) = conn.execute(
                "SELECT MIN(next_attempt_at) FROM hook_deliveries WHERE hook = ?", (hook,)
            ).fetchone()
        return None if when is None else float(when)

    def oldest(self, hook: str) -> float | None:
        """When the oldest event still waiting for ``hook`` happened (None: none waits)."""
        with self.db.read() as conn:
            (when,) = conn.execute(
                "SELECT MIN(e.time) FROM hook_deliveries d JOIN hook_events e"
                " ON e.id = d.event_id WHERE d.hook = ?",
                (hook,),
            ).fetchone()
        return None if when is None else float(when)

    def delivered(self, done: Sequence[Delivery]) -> None:
        """The hook took these: forget them (and events no other hook still waits for)."""
        if not done:
            return
        with self.db.write() as conn:
            conn.executemany("DELETE FROM hook_deliveries WHERE seq = ?", [(d.seq,) for d in done])
            conn.executemany(
                "DELETE FROM hook_events WHERE id = ? AND NOT EXISTS"
                " (SELECT 1 FROM hook_deliveries d WHERE d.event_id = ?)",
                [(d.event.id, d.event.id) for d in done],
            )

    def failed(self, seq: int, error: str, retry_at: float) -> None:
        with self.db.write() as conn:
            conn.execute(
                "UPDATE hook_deliveries SET attempts = attempts + 1, next_attempt_at = ?,"
                " error = ? WHERE seq = ?",
                (retry_at, error, seq),
            )

    def recover(self) -> int:
        """At start-up every waiting delivery is due now: the receiver that was down may be
        back, and a backoff computed by a dead process means nothing. Returns how many."""
        with self.db.write() as conn:
            cur = conn.execute("UPDATE hook_deliveries SET next_attempt_at = ?", (time.time(),))
            return int(cur.rowcount)

    def pending(self) -> dict[str, int]:
        """Waiting deliveries per hook name (hooks removed from the config included)."""
        with self.db.read() as conn:
            rows = conn.execute("SELECT hook, COUNT(*) FROM hook_deliveries GROUP BY hook")
            return {str(h): int(n) for h, n in rows}

    @staticmethod
    def _forget_events(conn: Any) -> None:
        conn.execute(
            "DELETE FROM hook_events WHERE NOT EXISTS"
            " (SELECT 1 FROM hook_deliveries d WHERE d.event_id = hook_events.id)"
        )
