"""The worker task: queued jobs become versions, one at a time, in queue order.

Each job's steps are idempotent (the engine finds a commit by job id and checks a tag before
making it), so a job resumed after a crash never makes a second commit or tag. Failures that
backoff can cure (storage or remote unreachable) go back to the queue with a delay; others
end the job as ``failed`` with the reason. The worker owns the job it runs; it reads the
queue and the registry, and never touches the watcher or the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from cpvd.api.events import EventBus
from cpvd.api.metrics import DaemonMetrics
from cpvd.config.model import Config
from cpvd.errors import CpvError, StorageError
from cpvd.hooks.outbox import Outbox
from cpvd.lifecycle.runner import Lifecycle
from cpvd.pipeline.copier import Copier, Vanished
from cpvd.pipeline.file_upload import Stored, UploadBatch
from cpvd.pipeline.health import Health, Pause, Wakeups
from cpvd.pipeline.next_upload import NextJobUpload
from cpvd.pipeline.prepared import PreparedJobs
from cpvd.pipeline.snapshot import SnapshotStore
from cpvd.pipeline.threads import Executors
from cpvd.registry.engine import Engine
from cpvd.registry.model import VersionRequest, VersionResult
from cpvd.retry import Backoff
from cpvd.state.ledger import Ledger
from cpvd.state.outcome import end_job
from cpvd.state.queue import Job, JobQueue
from cpvd.storage.base import Progress
from cpvd.storage.hashing import ContentHash, hash_checkpoint
from cpvd.watch.settle import signature_of, walk
from cpvd.watch.units import unit_relpath

log = logging.getLogger(__name__)

PROGRESS_EVERY = 0.25  # seconds between progress events of one job
#: the worker loop's own failures (the state database unwritable: disk full)
LOOP_BACKOFF = Backoff(base=1.0, cap=30.0)
#: a storage refusal that retrying cannot change (cpvd.storage.s3_errors) is tried this
#: many times, then the job ends ``failed`` with the reason
PERMANENT_ATTEMPTS = 2


@dataclass(eq=False)
class Worker:
    """Owns the job it runs (one at a time, in queue order) and the next job's early upload.
    Ends every job through the queue and ledger together; never touches the watcher, the
    intake's prepared work other than its own job's, or the API."""

    config: Callable[[], Config]
    queue: JobQueue
    ledger: Ledger
    snapshots: SnapshotStore
    copier: Copier
    engine: Engine
    executors: Executors
    prepared: PreparedJobs
    health: Health
    pause: Pause
    wakeups: Wakeups
    bus: EventBus
    metrics: DaemonMetrics
    #: best (and, with no remote, retention) right after each version; None: neither
    lifecycle: Lifecycle | None = None
    #: hook events are recorded here in the transaction that ends their job (cpvd.hooks)
    outbox: Outbox | None = None

    def __post_init__(self) -> None:
        self._next_upload = NextJobUpload(
            self.queue, self.prepared, self.executors, self.engine.upload
        )
        self.stopping = False
        self.running: Job | None = None

    def uploading_ahead(self, job_id: str) -> bool:
        """Whether a queued job's bytes are being stored ahead of it (cpvd.pipeline.coalesce)."""
        return self._next_upload.uploading(job_id)

    async def run(self) -> None:
        """Claim and process jobs until stopped; outlives any one failure.

        A failure outside a job's own error handling (the state database unwritable: disk
        full) would otherwise end this task silently and no job would ever run again. It is
        logged and published, and after a backoff the job it left ``running`` is re-queued.
        """
        try:
            await self._run()
        finally:
            await self._next_upload.close()

    async def _run(self) -> None:
        delay: float | None = None
        requeue = False
        while not self.stopping:
            try:
                if requeue:
                    self.queue.recover()  # only this worker runs jobs: it left them
                    requeue = False
                await self._next()
                delay = None
            except Exception as exc:
                requeue = True
                delay = LOOP_BACKOFF.after(delay)
                message = exc.message if isinstance(exc, CpvError) else repr(exc)
                log.error("worker: %s; retrying in %.0fs", message, delay)
                self.bus.publish("failed", error=message, will_retry=True)
                await asyncio.sleep(delay)

    async def _next(self) -> None:
        pause = self.pause
        paused = sorted(pause.artifacts)
        job = None if pause.everything else self.queue.claim_next(paused=paused)
        if job is None:
            due = None if pause.everything else self.queue.next_due_at(paused=paused)
            timeout = None if due is None else max(0.0, due - time.time())
            self.wakeups.work.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeups.work.wait(), timeout)
            return
        self.running = job
        try:
            await self.process(job)
        finally:
            self.running = None

    async def process(self, job: Job) -> None:
        prepared = self.prepared.take(job.id)  # hashed, maybe stored, while snapshotted
        batch = prepared.batch if prepared is not None else None
        content = prepared.content if prepared is not None else None
        try:
            if not (job.snapshot and Path(job.snapshot).exists()):
                if batch is not None:
                    await _cancel_early(batch)
                    batch = None
                taken = await self._snapshot_again(job)
                if taken is None:
                    return
                job, content, batch = taken
            await self._process(job, content, batch)
        finally:
            if batch is not None:  # a job that ends without waiting for them (skipped, failed)
                await _cancel_early(batch)

    async def _snapshot_again(
        self, job: Job
    ) -> tuple[Job, ContentHash | None, UploadBatch] | None:
        """A job whose snapshot is gone (released when it failed, and now retried) takes a
        new one of its checkpoint as it is now, as the intake would; None when it ended."""
        source = Path(job.source)
        files = walk(source)
        try:
            if not files:
                raise Vanished(f"{source} is gone")
            taken = await self.copier.take(job.artifact, source)
        except Vanished:
            reason = "snapshot and source both gone"
            self.queue.finish(job.id, "skipped", {"reason": reason})
            self._publish_skipped(job, reason)
            return None
        except CpvError as exc:  # no space to snapshot: retried like any failed attempt
            self._failed(job, exc)
            return None
        sig = signature_of(files)
        job = self.queue.resnapshot(job.id, str(taken.snap), (sig.size, sig.mtime_ns))
        log.info("job %s: its snapshot was gone; took a new one of %s", job.id[:8], source)
        return job, taken.content, taken.batch

    async def _process(
        self, job: Job, content: ContentHash | None, batch: UploadBatch | None
    ) -> None:
        started = time.monotonic()
        assert job.snapshot
        snap = Path(job.snapshot)
        try:
            if content is None:
                hashing = self._progress(job, "hashing")
                content = await self.executors.on_io(hash_checkpoint, snap, hashing)
            self.queue.record_step(
                job.id, "hashed", md5=content.md5, size=content.size, nfiles=content.nfiles
            )
            if job.origin == "watch" and self.ledger.seen_content(
                job.artifact, job.source, content.md5
            ):
                self._finish(job, "skipped", {"reason": "already handled"}, content)
                return
            await self._upload(job, snap, content, batch)
            result = await self._version(job, snap, content)
        except CpvError as exc:
            self._failed(job, exc)
            return
        except OSError as exc:
            self._failed(job, CpvError(f"{type(exc).__name__}: {exc}"), retryable=True)
            return
        self._versioned(job, result, time.monotonic() - started)

    async def _upload(
        self, job: Job, snap: Path, content: ContentHash, batch: UploadBatch | None
    ) -> None:
        """Store the snapshot's objects; those its early uploads stored are skipped."""
        ahead = self._next_upload.pop(job.id)  # stored while the previous job committed
        if ahead is None or not await ahead:
            progress = self._progress(job, "uploading")
            stored = await _stored_early(batch, progress)
            await self.executors.on_io(self.engine.upload, snap, content, progress, stored)
        self.health.storage_up()
        self.queue.record_step(job.id, "uploaded")

    async def _version(self, job: Job, snap: Path, content: ContentHash) -> VersionResult:
        watch = self.config().watch_for(job.artifact)
        req = VersionRequest(
            artifact=job.artifact,
            path=snap,
            source=job.source,
            kind=self.config().artifact_kinds().get(job.artifact, "model"),
            job_id=job.id,
            metrics=job.metrics,
            bump=job.bump,
            name=Path(job.source).name,
            data=watch.data if watch else (),
            relpath=unit_relpath(job.source, self.config().watches),
            origin=job.origin,
        )
        self._next_upload.start(job.id)  # the next job's upload overlaps this commit
        # only a job that got past "uploaded" before (a crash, a retry) may have a commit
        # already; searching history for it is O(history) per version
        resume = job.attempts > 0 or job.step not in (None, "snapshotted", "hashed")
        version = partial(self.engine.version, req, content, resume=resume)
        if self.lifecycle is not None:  # same registry call: the stage tag shares the push
            version = partial(self.lifecycle.after_version, version)
        return await self.executors.on_registry(version)

    def _versioned(self, job: Job, result: VersionResult, seconds: float) -> None:
        info, content = result.info, result.content
        state = "done" if result.status == "versioned" else "unchanged"
        created = {
            "artifact": job.artifact, "version": info.version, "tag": info.tag, "md5": info.md5,
            "size": info.size, "path": job.source, "job_id": job.id, "metrics": info.metrics,
            "lineage": info.lineage,
        }  # fmt: skip
        self._finish(
            job, state, {"status": result.status, **info.to_json()}, content, version=info.version,
            event=("version.created", created) if state == "done" else None,
        )  # fmt: skip
        self.metrics.job_done(state, seconds, content.size, job.artifact)
        self.bus.publish(
            "versioned" if state == "done" else "unchanged",
            job_id=job.id,
            artifact=job.artifact,
            version=info.version,
            tag=info.tag,
            md5=info.md5,
            size=info.size,
            path=job.source,
        )
        if state == "done":
            self.health.unpushed += 1 if self.config().registry.remote else 0
            self.wakeups.push.set()

    def _finish(
        self,
        job: Job,
        state: str,
        result: dict[str, object],
        content: ContentHash,
        version: str | None = None,
        event: tuple[str, dict[str, object]] | None = None,
    ) -> None:
        inside = partial(self._hook_event, *event) if event is not None else None
        end_job(self.queue, self.ledger, job, state, result, content.md5, version, inside)
        self.snapshots.release(snapshot_key(job))
        if state == "skipped":
            self._publish_skipped(job, str(result.get("reason")))

    def _hook_event(self, type: str, data: dict[str, object]) -> None:
        if self.outbox is not None:
            self.outbox.record(type, data)

    def _publish_skipped(self, job: Job, reason: str) -> None:
        self.bus.publish(
            "skipped", job_id=job.id, artifact=job.artifact, path=job.source, reason=reason
        )

    def _failed(self, job: Job, exc: CpvError, retryable: bool | None = None) -> None:
        retry = exc.retryable if retryable is None else retryable
        permanent = isinstance(exc, StorageError) and exc.permanent
        if permanent and job.attempts + 1 >= PERMANENT_ATTEMPTS:
            retry = False
            exc = StorageError(
                f"{exc.message} (gave up after {job.attempts + 1} attempts: a retry gets the "
                "same answer; fix it, then `cpvctl retry JOB_ID`)",
                permanent=True,
            )
        if isinstance(exc, StorageError):
            self.health.storage_down(exc.message)
        outage = isinstance(exc, StorageError) and exc.outage
        with self.queue.db.write():  # failed for good and its hook event: both or neither
            updated = self.queue.fail(job.id, exc.message, retryable=retry, outage=outage)
            if updated.state == "failed":
                self._hook_event("job.failed", {
                    "artifact": job.artifact, "path": job.source, "job_id": job.id,
                    "error": exc.message, "attempts": updated.attempts,
                })  # fmt: skip
        self.metrics.failure(type(exc).__name__)
        log.warning(
            "job %s (%s) failed: %s%s",
            job.id[:8],
            job.source,
            exc.message,
            f"; retrying in {updated.next_attempt_at - time.time():.0f}s"
            if updated.state == "queued"
            else "",
        )
        self.bus.publish(
            "failed",
            job_id=job.id,
            artifact=job.artifact,
            path=job.source,
            error=exc.message,
            will_retry=updated.state == "queued",
            attempts=updated.attempts,
            permanent=permanent,
        )
        if updated.state == "failed":
            self.snapshots.release(snapshot_key(job))

    def _progress(self, job: Job, phase: str) -> Progress:
        bus = self.bus
        done = 0
        last = 0.0
        total = job.size or 0

        def report(n: int) -> None:
            nonlocal done, last
            done += n
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY:
                last = now
                bus.publish(
                    "progress",
                    job_id=job.id,
                    artifact=job.artifact,
                    phase=phase,
                    bytes=done,
                    total=total,
                )

        return report


async def _stored_early(batch: UploadBatch | None, progress: Progress) -> Stored:
    """Wait for the uploads a job's snapshot started; the objects they stored. Raises the
    StorageError of an outage they met: it is this attempt's failure (status, backoff)."""
    if batch is None:
        return set()
    batch.listen(progress)
    futures = batch.futures()
    if futures:
        await asyncio.wait([asyncio.wrap_future(f) for f in futures])
    if batch.outage is not None:
        raise batch.outage
    return batch.stored(timeout=0)


async def _cancel_early(batch: UploadBatch) -> None:
    """Stop a batch's uploads and wait until they have stopped (and cleaned up), so that no
    upload outlives the job it was made for."""
    running = batch.cancel()
    if running:
        await asyncio.wait([asyncio.wrap_future(f) for f in running])


def snapshot_key(job: Job) -> str:
    """The snapshot key: the snapshot lives at ``<root>/<key>/<name>``."""
    assert job.snapshot
    return Path(job.snapshot).parent.name
