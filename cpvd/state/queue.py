"""The daemon's durable job queue: one SQLite file (WAL) under ``state_dir``.

Why SQLite: a crash or reboot must lose no queued checkpoint and must let the worker resume
a half-done job at its last completed step, so every transition is a committed transaction.

Durability choice: ``synchronous=FULL``. In WAL mode ``NORMAL`` already survives a killed
process; ``FULL`` also survives power loss (the WAL is fsynced at every commit). The queue
sees a handful of transitions per checkpoint, so the extra fsync costs nothing measurable,
and losing an ``add`` on power loss would silently drop a checkpoint whose trainer may have
already rotated the original away.

Ordering: jobs of one artifact run strictly one at a time in arrival order (versions must
follow the order of checkpoints); different artifacts interleave freely.

Thread-safety: one connection guarded by one lock (:class:`cpvd.state.db.StateDB`); the
asyncio thread and worker threads all call in. Cross-process writers (a second daemon) are
excluded by the instance lock, and ``BEGIN IMMEDIATE`` keeps even that case correct.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

from cpvd.errors import InputError, NotFound, StateError
from cpvd.retry import Backoff
from cpvd.state.db import StateDB
from cpvd.state.job import (
    BUMPS,
    JOB_COLUMNS,
    JOB_STATES,
    JSON_FIELDS,
    KINDS,
    ORIGINS,
    STEPS,
    TERMINAL_STATES,
    Job,
)

BACKOFF_BASE = 1.0
BACKOFF_CAP = 300.0
DEFAULT_MAX_ATTEMPTS = 8

#: fields record_step() may set alongside the step
_STEP_FIELDS = frozenset(
    {"snapshot", "kind", "md5", "size", "nfiles", "version", "metrics", "result", "bump"}
)
#: SQL parameters (an alias: JobQueue.list shadows the builtin inside the class)
_Params = list[Any]

_SELECT = "SELECT " + ", ".join(JOB_COLUMNS) + " FROM jobs"

_JOBS_DDL = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    artifact TEXT NOT NULL,
    source TEXT NOT NULL,
    snapshot TEXT,
    kind TEXT,
    state TEXT NOT NULL,
    step TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    md5 TEXT,
    size INTEGER,
    nfiles INTEGER,
    version TEXT,
    bump TEXT NOT NULL DEFAULT 'minor',
    metrics TEXT,
    origin TEXT NOT NULL DEFAULT 'watch',
    result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state_seq ON jobs(state, seq);
CREATE INDEX IF NOT EXISTS jobs_artifact_state ON jobs(artifact, state, seq);
CREATE TABLE IF NOT EXISTS job_signatures (
    job_id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL
);
"""
JOBS_SCHEMA_VERSION = 1

def backoff_delay(
    attempt: int, rng: random.Random | None = None, cap: float = BACKOFF_CAP
) -> float:
    """Delay before a failed job's retry number ``attempt`` (1-based): the shared policy
    (:class:`cpvd.retry.Backoff`, jittered) with the queue's base and ``[daemon]
    retry_max_seconds`` as the cap."""
    return Backoff(BACKOFF_BASE, cap, jitter=True).delay(attempt, rng)


def _check(value: object, allowed: Collection[object], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"invalid {what} {value!r}: expected one of {sorted(map(str, allowed))}")


class JobQueue:
    """Durable FIFO-per-artifact queue of :class:`Job`; see the module docstring."""

    def __init__(
        self,
        db_path: Path | StateDB,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        rng: random.Random | None = None,
        backoff_cap: float = BACKOFF_CAP,
    ) -> None:
        if isinstance(db_path, StateDB):
            self.db, self._owns_db = db_path, False
        else:
            self.db, self._owns_db = StateDB(db_path), True
        self.max_attempts = max_attempts
        self.backoff_cap = backoff_cap
        self._rng = rng or random.Random()
        try:
            self.db.ensure_schema("jobs", JOBS_SCHEMA_VERSION, _JOBS_DDL)
        except StateError:
            if self._owns_db:
                self.db.close()
            raise

    # -- life cycle -------------------------------------------------------------------------

    @staticmethod
    def rebuild(db_path: Path) -> Path:
        """Move a corrupt database (and its -wal/-shm) aside; return the moved path.

        The caller then opens a fresh ``JobQueue(db_path)``. Nothing is deleted, so the old
        file stays available for a post-mortem.
        """
        db_path = Path(db_path)
        if not db_path.exists():
            raise StateError(f"no state database at {db_path} to rebuild")
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = db_path.with_name(f"{db_path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = db_path.with_name(f"{db_path.name}.corrupt-{stamp}-{n}")
            n += 1
        try:
            os.replace(db_path, target)
            for suffix in ("-wal", "-shm"):
                side = db_path.with_name(db_path.name + suffix)
                if side.exists():
                    os.replace(side, target.with_name(target.name + suffix))
        except OSError as exc:
            raise StateError(f"cannot move {db_path} aside: {exc}") from exc
        return target

    def close(self) -> None:
        if self._owns_db:
            self.db.close()

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes -----------------------------------------------------------------------------

    def add(
        self,
        artifact: str,
        source: str,
        *,
        snapshot: str | None = None,
        kind: str | None = None,
        metrics: dict[str, Any] | None = None,
        bump: str = "minor",
        origin: str = "watch",
        signature: tuple[int, int] | None = None,
    ) -> Job:
        """Queue a checkpoint; it is durable once this returns.

        ``signature`` is the source's (size, mtime_ns) when it was snapshotted: kept with the
        job so that a restart does not queue the same unchanged checkpoint a second time
        (:meth:`active_with_signature`) and the ledger learns it when the job ends."""
        if kind is not None:
            _check(kind, KINDS, "kind")
        _check(bump, BUMPS, "bump")
        _check(origin, ORIGINS, "origin")
        now = time.time()
        job_id = uuid.uuid4().hex
        step = "snapshotted" if snapshot is not None else None
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO jobs (id, artifact, source, snapshot, kind, state, step, attempts,"
                " next_attempt_at, created_at, updated_at, bump, metrics, origin)"
                " VALUES (?, ?, ?, ?, ?, 'queued', ?, 0, ?, ?, ?, ?, ?, ?)",
                (
                    job_id, artifact, str(source), snapshot, kind, step, now, now, now, bump,
                    None if metrics is None else json.dumps(metrics), origin,
                ),
            )  # fmt: skip
            if signature is not None:
                conn.execute(
                    "INSERT INTO job_signatures (job_id, size, mtime_ns) VALUES (?, ?, ?)",
                    (job_id, int(signature[0]), int(signature[1])),
                )
            return self._get(conn, job_id)

    def claim_next(self, now: float | None = None, paused: Collection[str] = ()) -> Job | None:
        """Mark the oldest claimable job running and return it (None: nothing is due).

        Claimable: queued, due (``next_attempt_at <= now``), its artifact not paused, no job
        of the same artifact running, and no older job of the same artifact still queued
        (waiting for its retry): versions follow the order of checkpoints.
        """
        now = time.time() if now is None else now
        where, params = self._head_filter(paused)
        with self.db.write() as conn:
            row = conn.execute(
                f"SELECT j.id FROM jobs j WHERE {where} AND j.next_attempt_at <= ?"
                " ORDER BY j.seq LIMIT 1",
                (*params, now),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET state = 'running', updated_at = ? WHERE id = ?",
                (max(now, time.time()), row[0]),
            )
            return self._get(conn, row[0])

    def record_step(self, id: str, step: str, **fields: Any) -> Job:
        """Persist that ``step`` completed, with its results (md5, size, version...), atomically."""
        _check(step, STEPS, "step")
        unknown = set(fields) - _STEP_FIELDS
        if unknown:
            raise ValueError(f"record_step cannot set {sorted(unknown)}")
        if "kind" in fields and fields["kind"] is not None:
            _check(fields["kind"], KINDS, "kind")
        if "bump" in fields:
            _check(fields["bump"], BUMPS, "bump")
        names = ["step", "updated_at", *fields]
        values: list[Any] = [step, time.time()]
        for name, value in fields.items():
            values.append(
                json.dumps(value) if name in JSON_FIELDS and value is not None else value
            )
        sets = ", ".join(f"{n} = ?" for n in names)
        with self.db.write() as conn:
            self._update(conn, id, sets, values)
            return self._get(conn, id)

    def finish(self, id: str, state: str, result: dict[str, Any] | None = None) -> Job:
        """End a job: ``done``, ``unchanged``, ``skipped`` (or ``failed``)."""
        _check(state, TERMINAL_STATES, "final state")
        with self.db.write() as conn:
            self._update(
                conn,
                id,
                "state = ?, result = ?, updated_at = ?",
                [state, None if result is None else json.dumps(result), time.time()],
            )
            return self._get(conn, id)

    def fail(
        self,
        id: str,
        error: str,
        retryable: bool,
        now: float | None = None,
        *,
        outage: bool = False,
    ) -> Job:
        """Record a failed attempt: back to the queue after a backoff, or ``failed`` for good.

        A job fails for good when the error is not retryable or when this was attempt
        ``max_attempts``; the error is kept either way so status can show why it waits.
        ``outage`` (the storage was unreachable): not the job's fault, so it is retried at
        the capped backoff for as long as the outage lasts, never given up.
        """
        now = time.time() if now is None else now
        with self.db.write() as conn:
            job = self._get(conn, id)
            if job.terminal:
                raise InputError(f"job {id} is already {job.state}", "conflict")
            attempts = job.attempts + 1
            if outage or (retryable and attempts < self.max_attempts):
                due = now + backoff_delay(attempts, self._rng, self.backoff_cap)
                self._update(
                    conn,
                    id,
                    "state = 'queued', attempts = ?, next_attempt_at = ?, error = ?,"
                    " updated_at = ?",
                    [attempts, due, error, now],
                )
            else:
                if retryable:
                    error = f"{error} (gave up after {attempts} attempts)"
                self._update(
                    conn,
                    id,
                    "state = 'failed', attempts = ?, error = ?, updated_at = ?",
                    [attempts, error, now],
                )
            return self._get(conn, id)

    def retry(self, id: str) -> Job:
        """Queue a ``failed`` job again, now, with a fresh attempt budget; it keeps its step."""
        now = time.time()
        with self.db.write() as conn:
            job = self._get(conn, id)
            if job.state != "failed":
                raise InputError(
                    f"job {id} is {job.state}, only a failed job can be retried", "conflict"
                )
            self._update(
                conn,
                id,
                "state = 'queued', attempts = 0, next_attempt_at = ?, updated_at = ?",
                [now, now],
            )
            return self._get(conn, id)

    def resnapshot(self, id: str, snapshot: str, signature: tuple[int, int] | None) -> Job:
        """A job whose snapshot was released (it failed, then was retried) got a new one of
        its source as it is now; it keeps its step, so a commit it made is still found."""
        with self.db.write() as conn:
            self._update(conn, id, "snapshot = ?, updated_at = ?", [snapshot, time.time()])
            conn.execute("DELETE FROM job_signatures WHERE job_id = ?", (id,))
            if signature is not None:
                conn.execute("INSERT INTO job_signatures VALUES (?, ?, ?)", (id, *signature))
            return self._get(conn, id)

    def recover(self) -> list[Job]:
        """At start-up: jobs left ``running`` by a crash go back to the queue, due now.

        They keep their step so the worker resumes after the last completed one (each step is
        idempotent). ``attempts`` is not increased: being killed is not the job's fault, and a
        kill loop must not push good jobs into ``failed``.
        """
        now = time.time()
        with self.db.write() as conn:
            ids = [
                r[0]
                for r in conn.execute("SELECT id FROM jobs WHERE state = 'running' ORDER BY seq")
            ]
            conn.execute(
                "UPDATE jobs SET state = 'queued', next_attempt_at = ?, updated_at = ?"
                " WHERE state = 'running'",
                (now, now),
            )
            return [self._get(conn, i) for i in ids]

    def prune(self, before: float) -> int:
        """Delete finished jobs last updated before ``before``; returns how many."""
        marks = ", ".join("?" for _ in TERMINAL_STATES)
        with self.db.write() as conn:
            cur = conn.execute(
                f"DELETE FROM jobs WHERE state IN ({marks}) AND updated_at < ?",
                (*sorted(TERMINAL_STATES), before),
            )
            if cur.rowcount:  # a scan of every signature, only when jobs went
                conn.execute(
                    "DELETE FROM job_signatures WHERE job_id NOT IN (SELECT id FROM jobs)"
                )
            return int(cur.rowcount)

    # -- reads ------------------------------------------------------------------------------

    def get(self, id: str) -> Job | None:
        with self.db.read() as conn:
            row = conn.execute(f"{_SELECT} WHERE id = ?", (id,)).fetchone()
        return None if row is None else Job._from_row(row)

    def signature(self, id: str) -> tuple[int, int] | None:
        """The (size, mtime_ns) the job's source had when it was queued, if it was given."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT size, mtime_ns FROM job_signatures WHERE job_id = ?", (id,)
            ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def active_with_signature(
        self, artifact: str, source: str, size: int, mtime_ns: int
    ) -> Job | None:
        """A queued or running job of ``artifact`` for ``source`` as it is now (same size and
        mtime): the checkpoint is on its way already, queueing it again would only upload
        the same bytes twice (the watcher offers every checkpoint again after a restart)."""
        with self.db.read() as conn:
            row = conn.execute(
                f"{_SELECT} WHERE state IN ('queued', 'running') AND artifact = ? AND source = ?"
                " AND EXISTS (SELECT 1 FROM job_signatures s WHERE s.job_id = jobs.id"
                " AND s.size = ? AND s.mtime_ns = ?)"
                " ORDER BY seq DESC LIMIT 1",
                (artifact, str(source), int(size), int(mtime_ns)),
            ).fetchone()
        return None if row is None else Job._from_row(row)

    def list(
        self,
        states: Collection[str] | None = None,
        artifact: str | None = None,
        limit: int = 100,
        *,
        source: str | None = None,
        oldest_first: bool = False,
    ) -> list[Job]:
        """Jobs filtered by state, artifact and source; newest first unless ``oldest_first``."""
        clauses: list[str] = []
        params: list[Any] = []
        if states is not None:
            states = list(states)
            for s in states:
                _check(s, JOB_STATES, "state")
            if not states:
                return []
            clauses.append(f"state IN ({', '.join('?' for _ in states)})")
            params.extend(states)
        if artifact is not None:
            clauses.append("artifact = ?")
            params.append(artifact)
        if source is not None:
            clauses.append("source = ?")
            params.append(str(source))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "ASC" if oldest_first else "DESC"
        with self.db.read() as conn:
            rows = conn.execute(
                f"{_SELECT}{where} ORDER BY seq {order} LIMIT ?", (*params, int(limit))
            ).fetchall()
        return [Job._from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Jobs per state, every state present (zero when none)."""
        result = dict.fromkeys(JOB_STATES, 0)
        with self.db.read() as conn:
            for state, n in conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
                result[state] = int(n)
        return result

    def depth(self) -> int:
        """Work not yet finished: queued + running."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')"
            ).fetchone()
        return int(row[0])

    def next_due_at(self, paused: Collection[str] = ()) -> float | None:
        """When :meth:`claim_next` will next have something, given the current state.

        Considers only jobs that are first in their artifact's line and not blocked by a
        running job, so the worker can sleep exactly until then (and be woken early by an add,
        a finish or a resume) instead of polling. None: nothing claimable is waiting.
        """
        where, params = self._head_filter(paused)
        with self.db.read() as conn:
            row = conn.execute(
                f"SELECT MIN(j.next_attempt_at) FROM jobs j WHERE {where}", params
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _head_filter(paused: Collection[str]) -> tuple[str, _Params]:
        """SQL for 'queued, first of its artifact, nothing of its artifact running'."""
        if isinstance(paused, str):  # a bare name would be taken as a set of characters
            raise TypeError("paused must be a collection of artifact names, not a str")
        where = (
            "j.state = 'queued' AND NOT EXISTS (SELECT 1 FROM jobs o WHERE o.artifact = j.artifact"
            " AND (o.state = 'running' OR (o.state = 'queued' AND o.seq < j.seq)))"
        )
        params: _Params = [*paused]
        if params:
            where += f" AND j.artifact NOT IN ({', '.join('?' for _ in params)})"
        return where, params

    @staticmethod
    def _get(conn: sqlite3.Connection, id: str) -> Job:
        row = conn.execute(f"{_SELECT} WHERE id = ?", (id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {id!r}", "unknown_job")
        return Job._from_row(row)

    @staticmethod
    def _update(conn: sqlite3.Connection, id: str, sets: str, values: _Params) -> None:
        cur = conn.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*values, id))
        if cur.rowcount == 0:
            raise NotFound(f"no job {id!r}", "unknown_job")
