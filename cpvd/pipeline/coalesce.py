"""Coalescing (``coalesce = true`` on a watch): when saves come faster than the link, a
checkpoint still waiting in the queue is skipped as ``superseded`` once a newer one of the
same artifact waits behind it, so the backlog, the durability lag and the snapshot space stay
bounded instead of growing with every save (clearml#310, axolotl#1049, ray#21469).

Never skipped (:func:`protection` says why):

- a job ``cpvctl push`` / ``Client.submit`` asked for: somebody wants that exact version;
- a job whose metrics beat the artifact's current ``best`` (the watch's ``best`` rule): it
  would hold the stage; the best is only known from metrics, so a job without them is not
  protected by this rule;
- a job that got past its upload in an earlier attempt (its bytes are stored, a commit may
  exist: finishing it costs less than skipping it);
- the job already uploading: the one the worker runs (never ``queued``, so never touched)
  and the one uploaded ahead of it while the current version commits.

Each skip is one transaction (the job ends ``superseded`` and the ledger learns the source,
so no rescan or restart queues it again), then a ``job.superseded`` event; its early uploads
are cancelled and its snapshot released.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpvd.api.events import EventBus
from cpvd.config.lifecycle import BestConfig
from cpvd.config.model import Config, WatchConfig
from cpvd.lifecycle.entries import best_holder
from cpvd.lifecycle.policy import beats, metric_value
from cpvd.pipeline.prepared import PreparedJobs
from cpvd.pipeline.snapshot import SnapshotStore
from cpvd.pipeline.threads import Executors
from cpvd.registry.engine import Engine
from cpvd.state.backlog import supersede
from cpvd.state.ledger import Ledger
from cpvd.state.queue import Job, JobQueue

log = logging.getLogger(__name__)

#: steps after which a job is cheaper to finish than to skip
_PAST_UPLOAD = frozenset({"uploaded", "committed", "tagged", "pushed"})
#: waiting jobs of one artifact looked at per sweep
SWEEP_LIMIT = 1000


def protection(job: Job, watch: WatchConfig, best: float | None) -> str | None:
    """Why ``job`` must not be superseded; None when nothing protects it. ``best``: the
    metric value of the artifact's current best version (None: no best yet)."""
    if job.origin == "push":
        return "explicitly pushed"
    if job.step in _PAST_UPLOAD:
        return "already uploaded"
    if watch.best is not None:
        value = metric_value(job.metrics or {}, watch.best.metric)
        if value is not None and beats(value, best, watch.best.mode):
            return f"would hold the stage best ({watch.best.metric} {value:g})"
    return None


def to_supersede(
    waiting: list[Job], watch: WatchConfig, best: float | None, busy: Callable[[str], bool]
) -> list[tuple[Job, Job]]:
    """(job, newest) for every waiting job (oldest first) that the newest waiting job of
    its artifact makes redundant."""
    if not watch.coalesce or len(waiting) < 2:
        return []
    newest = waiting[-1]
    return [
        (job, newest)
        for job in waiting[:-1]
        if protection(job, watch, best) is None and not busy(job.id)
    ]


@dataclass(eq=False)
class Coalescer:
    """Ends waiting jobs as superseded; reads the registry only for the current best."""

    config: Callable[[], Config]
    queue: JobQueue
    ledger: Ledger
    snapshots: SnapshotStore
    prepared: PreparedJobs
    engine: Engine
    executors: Executors
    bus: EventBus
    #: whether a queued job's bytes are being uploaded ahead of the worker
    busy: Callable[[str], bool] = lambda _job_id: False

    async def sweep(self, artifact: str) -> list[Job]:
        """Supersede what a newer waiting checkpoint of ``artifact`` makes redundant."""
        watch = self.config().watch_for(artifact)
        if watch is None or not watch.coalesce:
            return []
        best = None
        if watch.best is not None:
            best = await self.executors.on_registry(self._best_value, artifact, watch.best)
        # no await from here on: the worker (same loop) cannot claim a job in between
        waiting = self.queue.list(
            states=("queued",), artifact=artifact, limit=SWEEP_LIMIT, oldest_first=True
        )
        ended = []
        for job, newest in to_supersede(waiting, watch, best, self.busy):
            done = self._supersede(job, newest)
            if done is not None:
                ended.append(done)
        for job in ended:
            await self._cancel_early(job)
        return ended

    def _best_value(self, artifact: str, best: BestConfig) -> float | None:  # registry thread
        holder = best_holder(self.engine.index().artifact_versions(artifact))
        return None if holder is None else metric_value(holder.metrics or {}, best.metric)

    def _supersede(self, job: Job, newest: Job) -> Job | None:
        reason = f"superseded by the newer checkpoint {newest.source} (job {newest.id[:8]})"
        with self.queue.db.write():  # the job's end and the ledger row: both or neither
            ended = supersede(self.queue, job.id, newest.id, reason)
            if ended is None:
                return None
            size, mtime_ns = self.queue.signature(job.id) or (-1, -1)
            self.ledger.record(
                job.artifact, job.source, job.md5 or "", size, mtime_ns, None, "superseded"
            )
        log.info("job %s (%s): %s", job.id[:8], job.source, reason)
        self.bus.publish("job.superseded", **_event(ended, newest))
        return ended

    async def _cancel_early(self, job: Job) -> None:
        """Stop the job's early uploads, then free its snapshot."""
        prepared = self.prepared.take(job.id)
        if prepared is not None and prepared.batch is not None:
            running = prepared.batch.cancel()
            if running:
                await asyncio.wait([asyncio.wrap_future(f) for f in running])
        if job.snapshot:
            self.snapshots.release(Path(job.snapshot).parent.name)


def _event(job: Job, newest: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "artifact": job.artifact,
        "path": job.source,
        "superseded_by": newest.id,
        "newer_path": newest.source,
    }
