"""Start-up recovery of the durable state (cpvd.startup)."""

from __future__ import annotations

import time
from pathlib import Path

from cpvd.startup import FINISHED_JOBS_KEPT_SECONDS, open_state


def test_open_state_deletes_only_jobs_that_ended_long_ago(tmp_path: Path) -> None:
    db, queue, _ = open_state(tmp_path, 300.0, rebuild=False)
    old, recent, waiting = (queue.add("a", f"/w/{i}.pt") for i in range(3))
    for job in (old, recent):
        queue.claim_next()
        queue.finish(job.id, "done")
    long_ago = time.time() - FINISHED_JOBS_KEPT_SECONDS - 60
    with db.write() as conn:
        conn.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (long_ago, old.id))
    db.close()

    db, queue, _ = open_state(tmp_path, 300.0, rebuild=False)
    try:
        assert queue.get(old.id) is None
        assert queue.get(recent.id) is not None
        assert queue.get(waiting.id) is not None and queue.depth() == 1
    finally:
        db.close()
