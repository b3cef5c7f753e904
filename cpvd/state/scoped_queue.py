"""One registry's share of the durable queue: the jobs of its artifacts.

The queue stays one (one database, one order, one instance lock); with several registries
each registry's worker claims, waits for and recovers only the jobs of the artifacts its
registry holds, so a registry whose storage or remote is failing never holds back another's
jobs. ``scope`` None is the whole queue (a single registry).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

from cpvd.state.db import StateDB
from cpvd.state.queue import Job, JobQueue

#: the artifacts a registry holds, read on every claim (a SIGHUP may move watches)
Scope = Callable[[], Collection[str]]


class ScopedQueue(JobQueue):
    """A :class:`JobQueue` whose claims, waits, recovery and listing see only ``scope``."""

    def __init__(self, db: StateDB, scope: Scope | None, backoff_cap: float) -> None:
        super().__init__(db, backoff_cap=backoff_cap)
        self.scope = scope

    def _names(self) -> list[str] | None:
        return None if self.scope is None else sorted(self.scope())

    def _head_filter(self, paused: Collection[str]) -> tuple[str, list[Any]]:  # type: ignore[override]
        where, params = JobQueue._head_filter(paused)
        names = self._names()
        if names is None:
            return where, list(params)
        if not names:
            return f"{where} AND 0", list(params)
        marks = ", ".join("?" for _ in names)
        return f"{where} AND j.artifact IN ({marks})", [*params, *names]

    def recover(self) -> list[Job]:
        """Jobs of this scope left ``running`` go back to the queue (another registry's
        worker may be running its own job right now: that one is left alone)."""
        names = self._names()
        if names is None:
            return super().recover()
        running = self.list(states=("running",), limit=1_000_000)
        now = time.time()
        with self.db.write() as conn:
            for j in running:
                conn.execute(
                    "UPDATE jobs SET state = 'queued', next_attempt_at = ?, updated_at = ?"
                    " WHERE id = ? AND state = 'running'",
                    (now, now, j.id),
                )
        return [j for j in (self.get(r.id) for r in running) if j is not None]

    def depth(self) -> int:
        """Queued and running jobs of this scope (the pusher waits while its own registry
        still has versions coming, not while another's storage is down)."""
        if self.scope is None:
            return super().depth()
        return len(self.list(states=("queued", "running"), limit=1_000_000))

    def list(
        self,
        states: Collection[str] | None = None,
        artifact: str | None = None,
        limit: int = 100,
        **kwargs: Any,
    ) -> list[Job]:
        """Only this scope's jobs (the worker's look-ahead upload reads the next few)."""
        names = self._names()
        if names is None or artifact is not None:
            if artifact is not None and names is not None and artifact not in names:
                return []
            return super().list(states, artifact, limit, **kwargs)
        out: list[Job] = []
        for name in names:
            out += super().list(states, name, limit, **kwargs)
        newest_first = not kwargs.get("oldest_first", False)
        out.sort(key=lambda j: j.created_at, reverse=newest_first)
        return out[:limit]
