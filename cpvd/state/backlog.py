"""The queue's answers for the backlog (cpvd.pipeline.durability, cpvd.pipeline.coalesce):
the oldest checkpoint on its way, and ending a waiting job as ``superseded``."""

from __future__ import annotations

import json
import time
from collections.abc import Collection

from cpvd.state.job import JOB_STATES, Job
from cpvd.state.queue import JobQueue


def oldest_created(queue: JobQueue, states: Collection[str]) -> float | None:
    """``created_at`` of the oldest job in ``states`` (the durability lag); None: none."""
    states = list(states)
    unknown = set(states) - set(JOB_STATES)
    if unknown:
        raise ValueError(f"invalid job states {sorted(unknown)}")
    marks = ", ".join("?" for _ in states)
    with queue.db.read() as conn:
        row = conn.execute(
            f"SELECT MIN(created_at) FROM jobs WHERE state IN ({marks})", states
        ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def supersede(queue: JobQueue, id: str, by: str, reason: str) -> Job | None:
    """End a job that is still only waiting (queued) as ``superseded`` by job ``by``; None
    when it is no longer queued (the worker claimed it meanwhile). Joins the caller's
    transaction when one is open (:meth:`cpvd.state.db.StateDB.write`)."""
    result = json.dumps({"reason": reason, "superseded_by": by})
    with queue.db.write() as conn:
        cur = conn.execute(
            "UPDATE jobs SET state = 'superseded', result = ?, updated_at = ?"
            " WHERE id = ? AND state = 'queued'",
            (result, time.time(), id),
        )
        if not cur.rowcount:
            return None
    return queue.get(id)
