"""The worker and pusher tasks: queued jobs become versions; versions reach the remote.

Each job's steps are idempotent (the engine finds a commit by job id and checks a tag before
making it), so a job resumed after a crash never makes a second commit or tag. Failures that
backoff can cure (storage or remote unreachable) go back to the queue with a delay; others
end the job as ``failed`` with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from cpvd.errors import CpvError, StorageError
from cpvd.pipeline.controller import Controller
from cpvd.pipeline.file_upload import Stored, UploadBatch
from cpvd.pipeline.next_upload import UploadAhead
from cpvd.registry.engine import VersionRequest
from cpvd.state.queue import Job
from cpvd.storage.base import Progress
from cpvd.storage.hashing import ContentHash, hash_checkpoint

log = logging.getLogger(__name__)

PROGRESS_EVERY = 0.25  # seconds between progress events of one job
PUSH_BATCH_DELAY = 0.05  # let versions finishing together share one push
#: while the queue still holds jobs, wait up to this long so a burst shares few pushes (a
#: push costs ~50-100 ms of the registry thread; one per version capped a burst at ~6/s)
PUSH_MAX_WAIT = 1.0


class Worker:
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.stopping = False
        self.running: Job | None = None
        self.ahead = UploadAhead(ctl)

    async def run(self) -> None:
        """Claim and process jobs until stopped; outlives any one failure.

        A failure outside a job's own error handling (the state database unwritable: disk
        full) would otherwise end this task silently and no job would ever run again. It is
        logged and published, and after a backoff the job it left ``running`` is re-queued.
        """
        try:
            await self._run()
        finally:
            await self.ahead.close()

    async def _run(self) -> None:
        delay = 1.0
        requeue = False
        while not self.stopping:
            try:
                if requeue:
                    self.ctl.queue.recover()  # only this worker runs jobs: it left them
                    requeue = False
                await self._next()
                delay = 1.0
            except Exception as exc:
                requeue = True
                message = exc.message if isinstance(exc, CpvError) else repr(exc)
                log.error("worker: %s; retrying in %.0fs", message, delay)
                self.ctl.bus.publish("failed", error=message, will_retry=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _next(self) -> None:
        ctl = self.ctl
        paused = [a for a in ctl.config.artifact_kinds()] if ctl.paused_all else sorted(ctl.paused)
        job = None if ctl.paused_all else ctl.queue.claim_next(paused=paused)
        if job is None:
            due = None if ctl.paused_all else ctl.queue.next_due_at(paused=paused)
            timeout = None if due is None else max(0.0, due - time.time())
            ctl.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctl.wake.wait(), timeout)
            return
        self.running = job
        try:
            await self.process(job)
        finally:
            self.running = None

    async def process(self, job: Job) -> None:
        batch = self.ctl.batches.pop(job.id, None)  # files stored while the snapshot was taken
        try:
            await self._process(job, batch)
        finally:
            if batch is not None:  # a job that ends without waiting for them (skipped, failed)
                await _cancel_early(batch)

    async def _process(self, job: Job, batch: UploadBatch | None) -> None:
        ctl = self.ctl
        started = time.monotonic()
        early = self.ahead.pop(job.id)  # bytes being stored while the previous job committed
        snap = Path(job.snapshot) if job.snapshot else None
        if snap is None or not snap.exists():
            ctl.queue.finish(job.id, "skipped", {"reason": "snapshot missing"})
            ctl.bus.publish(
                "skipped",
                job_id=job.id,
                artifact=job.artifact,
                path=job.source,
                reason="snapshot missing",
            )
            return
        try:
            content = ctl.hashes.pop(job.id, None)  # hashed while snapshotted
            if content is None:
                content = await ctl.on_io(hash_checkpoint, snap, self._progress(job, "hashing"))
            ctl.queue.record_step(
                job.id, "hashed", md5=content.md5, size=content.size, nfiles=content.nfiles
            )
            if job.origin == "watch" and ctl.ledger.seen_content(
                job.artifact, job.source, content.md5
            ):
                self._finish(job, "skipped", {"reason": "already handled"}, content)
                return
            if early is None or not await early:
                progress = self._progress(job, "uploading")
                stored = await _stored_early(batch, progress)
                await ctl.on_io(ctl.engine.upload, snap, content, progress, stored)
            ctl.health.storage_ok, ctl.health.storage_error = True, None
            ctl.queue.record_step(job.id, "uploaded")
            req = VersionRequest(
                artifact=job.artifact,
                path=snap,
                source=job.source,
                kind=ctl.kind_of(job.artifact),
                job_id=job.id,
                metrics=job.metrics,
                bump=job.bump,
                name=Path(job.source).name,
                data=self._lineage_of(job.artifact),
            )
            self.ahead.start_next(job.id)  # the next job's upload overlaps this commit
            result = await ctl.on_registry(
                ctl.engine.version,
                req,
                push=False,
                content=content,
                # only a job that got past "uploaded" before (a crash, a retry) may have a
                # commit already; searching history for it is O(history) per version
                resume=job.attempts > 0 or job.step not in (None, "snapshotted", "hashed"),
                uploaded=True,
            )
        except CpvError as exc:
            self._failed(job, exc)
            return
        except OSError as exc:
            self._failed(job, CpvError(f"{type(exc).__name__}: {exc}"), retryable=True)
            return
        info = result.info
        state = "done" if result.status == "versioned" else "unchanged"
        self._finish(
            job, state, {"status": result.status, **info.to_json()}, content, version=info.version
        )
        ctl.metrics_job_done(
            state, time.monotonic() - started, content.size if state == "done" else 0, job.artifact
        )
        ctl.bus.publish(
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
            ctl.health.unpushed += 1 if ctl.config.registry.remote else 0
            ctl.push_wanted.set()

    def _lineage_of(self, artifact: str) -> tuple[str, ...]:
        watch = self.ctl.config.watch_for(artifact)
        return watch.data if watch else ()

    def _finish(
        self,
        job: Job,
        state: str,
        result: dict[str, object],
        content: ContentHash,
        version: str | None = None,
    ) -> None:
        ctl = self.ctl
        # one transaction: a crash between "job done" and "checkpoint in the ledger" left a
        # finished job the ledger did not know, so the next start's rescan queued the same
        # checkpoint again and versioned it twice (seen once in the kill loop)
        with ctl.queue.db.write():
            if version is not None:
                ctl.queue.record_step(job.id, "tagged", version=version)
            ctl.queue.finish(job.id, state, result)
            sig = ctl.queue.signature(job.id)
            if sig is None:
                reason = "versioned"
            elif job.origin == "push":
                reason = "pushed"
            else:
                reason = "versioned" if state == "done" else "unchanged"
            size, mtime_ns = sig or (-1, -1)
            ctl.ledger.record(
                job.artifact, job.source, content.md5, size, mtime_ns, version, reason
            )
        ctl.snapshots.release(_key(job))
        if state == "skipped":
            ctl.bus.publish(
                "skipped",
                job_id=job.id,
                artifact=job.artifact,
                path=job.source,
                reason=str(result.get("reason")),
            )

    def _failed(self, job: Job, exc: CpvError, retryable: bool | None = None) -> None:
        ctl = self.ctl
        retry = exc.retryable if retryable is None else retryable
        if isinstance(exc, StorageError):
            ctl.health.storage_ok, ctl.health.storage_error = False, exc.message
        outage = isinstance(exc, StorageError) and exc.outage
        updated = ctl.queue.fail(job.id, exc.message, retryable=retry, outage=outage)
        ctl.metrics_failure(type(exc).__name__)
        log.warning(
            "job %s (%s) failed: %s%s",
            job.id[:8],
            job.source,
            exc.message,
            f"; retrying in {updated.next_attempt_at - time.time():.0f}s"
            if updated.state == "queued"
            else "",
        )
        ctl.bus.publish(
            "failed",
            job_id=job.id,
            artifact=job.artifact,
            path=job.source,
            error=exc.message,
            will_retry=updated.state == "queued",
            attempts=updated.attempts,
        )
        if updated.state == "failed":
            ctl.snapshots.release(_key(job))

    def _progress(self, job: Job, phase: str):  # type: ignore[no-untyped-def]
        ctl = self.ctl
        done = 0
        last = 0.0
        total = job.size or 0

        def report(n: int) -> None:
            nonlocal done, last
            done += n
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY:
                last = now
                ctl.bus.publish(
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


def _key(job: Job) -> str:
    """The snapshot key: the snapshot lives at ``<root>/<key>/<name>``."""
    assert job.snapshot
    return Path(job.snapshot).parent.name


class Pusher:
    """Pushes waiting versions promptly, batching those that finish together."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.stopping = False

    async def run(self) -> None:
        ctl = self.ctl
        if not ctl.config.registry.remote:
            return
        delay = 1.0
        ctl.push_wanted.set()  # push whatever a previous run left behind
        while not self.stopping:
            await ctl.push_wanted.wait()
            ctl.push_wanted.clear()
            await asyncio.sleep(PUSH_BATCH_DELAY)
            waited = PUSH_BATCH_DELAY
            while waited < PUSH_MAX_WAIT and not self.stopping and ctl.queue.depth() > 0:
                await asyncio.sleep(PUSH_BATCH_DELAY)
                waited += PUSH_BATCH_DELAY
            try:
                report = await ctl.on_registry(ctl.engine.push)
            except CpvError as exc:
                ctl.health.remote_ok, ctl.health.remote_error = False, exc.message
                ctl.health.unpushed = await ctl.on_registry(_safe_unpushed, ctl)
                log.warning(
                    "push to %s failed: %s; retrying in %.0fs",
                    ctl.config.registry.remote,
                    exc.message,
                    delay,
                )
                try:
                    await asyncio.sleep(delay)
                finally:
                    delay = min(delay * 2, 60.0, ctl.config.daemon.retry_max_seconds)
                    ctl.push_wanted.set()
                continue
            delay = 1.0
            ctl.health.remote_ok, ctl.health.remote_error, ctl.health.unpushed = True, None, 0
            for old, new in report.renumbered:
                log.info("renumbered %s -> %s (another machine took the number)", old, new)
                ctl.bus.publish("renumbered", old=old, new=new)
            if report.pushed:
                ctl.bus.publish("pushed", commits=report.pushed)


def _safe_unpushed(ctl: Controller) -> int:
    try:
        return ctl.engine.unpushed()
    except CpvError:
        return ctl.health.unpushed
