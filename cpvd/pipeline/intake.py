"""Intake: a complete checkpoint becomes a queued job, once.

The watcher reports a checkpoint complete (or ``cpvctl push`` names one); the intake checks
that the exact source was not handled already, takes its snapshot (or claims the one taken
during its quiet period), reads its sidecar metrics and adds the job to the durable queue.
It owns the tasks it starts for this and nothing else: it never runs a job (the worker
does) and never touches the registry.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpvctl.protocol import validate_name
from cpvd.api.events import EventBus
from cpvd.config.model import Config, WatchConfig
from cpvd.errors import CpvError, InputError, NotFound
from cpvd.pipeline.copier import Copier, Taken, Vanished
from cpvd.pipeline.health import Wakeups
from cpvd.pipeline.prepared import PreparedJobs
from cpvd.pipeline.speculative_snapshot import SpeculativeSnapshots
from cpvd.state.ledger import Ledger
from cpvd.state.outcome import why_handled
from cpvd.state.queue import Job, JobQueue
from cpvd.watch.settle import signature_of, walk
from cpvd.watch.sidecar import read_metrics

log = logging.getLogger(__name__)

#: "offer this checkpoint again later, listed as waiting with this reason" (the watcher)
Defer = Callable[[WatchConfig, Path, str], None]


@dataclass(eq=False)
class Intake:
    """Owns the tasks that queue checkpoints; reads the ledger and queue (to not queue twice),
    writes only new jobs and the prepared work for them. Never runs a job."""

    config: Callable[[], Config]
    queue: JobQueue
    ledger: Ledger
    copier: Copier
    speculative: SpeculativeSnapshots
    prepared: PreparedJobs
    bus: EventBus
    wakeups: Wakeups
    defer: Defer
    #: after each new job: supersede what it makes redundant (cpvd.pipeline.coalesce)
    coalesce: Callable[[str], Awaitable[object]] | None = None

    def __post_init__(self) -> None:
        self._tasks: set[asyncio.Task[Job | None]] = set()

    def handled(self, artifact: str, source: str, size: int, mtime_ns: int) -> str | None:
        return why_handled(self.queue, self.ledger, artifact, source, size, mtime_ns)

    def accept(self, watch: WatchConfig, path: Path, size: int, mtime_ns: int) -> None:
        """Called on the loop thread for each complete checkpoint the watcher reports."""
        task = asyncio.create_task(self.on_checkpoint(watch, path, size, mtime_ns))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Job | None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.warning("could not queue a checkpoint: %s", exc)
            self.bus.publish("failed", error=str(exc))

    async def on_checkpoint(
        self, watch: WatchConfig, path: Path, size: int, mtime_ns: int
    ) -> Job | None:
        """A complete checkpoint seen by the watcher: snapshot it and queue it, once."""
        source = str(path)
        why = self.handled(watch.artifact, source, size, mtime_ns)
        if why is not None:
            log.debug("%s: %s", why, source)
            self.speculative.discard(watch.artifact, source)
            return None
        log.info("checkpoint complete: %s (%d bytes)", source, size)
        self.bus.publish("detected", artifact=watch.artifact, path=source)
        try:
            taken = await self.speculative.claim(watch.artifact, path)
            return await self._enqueue(
                watch.artifact, path, origin="watch", signature=(size, mtime_ns), taken=taken
            )
        except CpvError as exc:
            # never queued: the watcher offers it again after a backoff (status: waiting)
            log.warning("could not queue %s: %s; retrying", source, exc.message)
            self.bus.publish(
                "failed", artifact=watch.artifact, path=source, error=exc.message, will_retry=True
            )
            self.defer(watch, path, exc.message)
            return None

    async def submit(
        self, path: str, artifact: str, metrics: dict[str, Any] | None, bump: str
    ) -> Job | None:
        """A manual ``cpvctl push``: only paths inside a watch root are read."""
        validate_name(artifact)
        p = request_path(path, "path")
        watch = self._watch_of(p)
        if watch is None:
            raise InputError(
                f"{path} is outside every watched directory; cpvd only reads checkpoints inside "
                "its [[watch]] paths (add one, or copy the checkpoint into one)",
                "path_outside_watch",
            )
        if os.path.realpath(p) == os.path.realpath(watch.path):
            # the whole watch would be one version, temporary and hidden files included
            raise InputError(
                f"{path} is the watched directory itself; push a checkpoint inside it "
                f"(a file or directory below {watch.path})",
                "invalid_path",
            )
        if not p.exists():
            raise NotFound(f"no such file or directory: {path}", "not_found")
        if bump not in ("minor", "major"):
            raise InputError(f"bump must be 'minor' or 'major', got {bump!r}")
        files = walk(p)
        sig = signature_of(files) if files else None
        return await self._enqueue(
            artifact,
            p,
            origin="push",
            metrics=metrics,
            bump=bump,
            signature=(sig.size, sig.mtime_ns) if sig else None,
        )

    def _watch_of(self, path: Path) -> WatchConfig | None:
        real = Path(os.path.realpath(path))
        for w in self.config().watches:
            root = Path(os.path.realpath(w.path))
            if real == root or root in real.parents:
                return w
        return None

    async def _enqueue(
        self,
        artifact: str,
        path: Path,
        *,
        origin: str,
        metrics: dict[str, Any] | None = None,
        bump: str = "minor",
        signature: tuple[int, int] | None = None,
        taken: Taken | None = None,
    ) -> Job | None:
        # snapshotted during the quiet period (cpvd.pipeline.speculative_snapshot)
        early = taken is not None
        if taken is None:
            try:
                taken = await self.copier.take(artifact, path)
            except Vanished as exc:
                log.warning("%s; skipped", exc.message)
                self.bus.publish("skipped", artifact=artifact, path=str(path), reason="vanished")
                return None
        found = read_metrics(taken.snap, path)
        merged = {**found, **(metrics or {})}
        try:
            job = self.queue.add(
                artifact,
                str(path),
                snapshot=str(taken.snap),
                kind="dir" if taken.snap.is_dir() else "file",
                metrics=merged or None,
                bump=bump,
                origin=origin,
                signature=signature,
            )
        except CpvError:
            self.copier.snapshots.release(taken.key)  # no job owns it: keep no disk full
            raise
        if taken.content is not None:
            self.prepared.put(job.id, taken.content, taken.batch)
        self.bus.publish(
            "queued", job_id=job.id, artifact=artifact, path=str(path), early_snapshot=early
        )
        self.wakeups.work.set()
        if self.coalesce is not None:
            try:  # the job is queued whatever happens here
                await self.coalesce(artifact)
            except CpvError as exc:
                log.warning("coalescing %s failed (retried at its next job): %s", artifact,
                            exc.message)  # fmt: skip
        return job


def request_path(value: str, field: str) -> Path:
    """A path from a request: absolute, without ``..`` and without NUL (which no filesystem
    call accepts: it would surface as a ValueError deep inside, i.e. a 500)."""
    p = Path(value)
    if "\0" in value or not p.is_absolute() or ".." in p.parts:
        raise InputError(
            f"{field!r} must be an absolute, normalised path, got {value!r}", "invalid_path"
        )
    return p
