"""The two questions the durable state answers for every checkpoint: has it been handled
already, and how did its job end. Both read or write the queue and the ledger together."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cpvd.state.ledger import Ledger
from cpvd.state.queue import Job, JobQueue


def why_handled(
    queue: JobQueue, ledger: Ledger, artifact: str, source: str, size: int, mtime_ns: int
) -> str | None:
    """Why this exact source (path, size, mtime) needs no new job, or None."""
    if ledger.seen_stat(artifact, source, size, mtime_ns) is not None:
        return "already handled"
    queued = queue.active_with_signature(artifact, source, size, mtime_ns)
    if queued is not None:  # offered again by the start-up rescan: on its way already
        return f"already queued as job {queued.id}"
    return None


def end_job(
    queue: JobQueue,
    ledger: Ledger,
    job: Job,
    state: str,
    result: dict[str, Any],
    md5: str,
    version: str | None = None,
    inside: Callable[[], object] | None = None,
) -> None:
    """End ``job`` and record its checkpoint in the ledger, in one transaction; ``inside``
    runs in it too (the hooks outbox records the event that reports the job's end).

    A crash between "job done" and "checkpoint in the ledger" left a finished job the ledger
    did not know, so the next start's rescan queued the same checkpoint again and versioned
    it twice (seen once in the kill loop)."""
    with queue.db.write():
        if version is not None:
            queue.record_step(job.id, "tagged", version=version)
        queue.finish(job.id, state, result)
        sig = queue.signature(job.id)
        if sig is None:
            reason = "versioned"
        elif job.origin == "push":
            reason = "pushed"
        else:
            reason = "versioned" if state == "done" else "unchanged"
        size, mtime_ns = sig or (-1, -1)
        ledger.record(job.artifact, job.source, md5, size, mtime_ns, version, reason)
        if inside is not None:
            inside()
