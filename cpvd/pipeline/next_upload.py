"""Upload the next queued checkpoint's bytes while the registry makes the current version.

Why: a job's steps run one after another (upload, then commit and tag), and jobs of one
artifact run one at a time, so in a burst the storage sat idle during every commit and the
registry during every upload (~20 ms each for 1 MiB: a burst of 200 reached ~22 versions/s).
Objects are content-addressed and uploads idempotent, so storing the next job's bytes early
is always safe: at worst (the job is then skipped or unchanged) an object nobody points to
yet, as ``dvc push`` of an abandoned commit would leave. The job itself still runs its
upload step; it awaits the early upload and only uploads again if that failed.

Only jobs whose content hash is already known (hashed while snapshotted) are taken ahead,
one at a time, on the io executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cpvd.errors import CpvError
from cpvd.pipeline.prepared import PreparedJobs
from cpvd.pipeline.threads import Executors
from cpvd.state.queue import JobQueue
from cpvd.storage.hashing import ContentHash

log = logging.getLogger(__name__)

#: stores a snapshot's objects (``Engine.upload``)
Upload = Callable[[Path, ContentHash], None]


@dataclass(eq=False)
class NextJobUpload:
    """At most one upload ahead of the worker; owns its tasks, reads the queue only."""

    queue: JobQueue
    prepared: PreparedJobs
    executors: Executors
    store: Upload

    def __post_init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[bool]] = {}  # job id -> early upload
        self._all: set[asyncio.Task[bool]] = set()  # also those popped, until done

    def start(self, current: str) -> None:
        """Start uploading the oldest queued job (not ``current``) whose hash is known."""
        if self._tasks:
            return  # one ahead is enough to keep storage and registry both busy
        for job in self.queue.list(states=("queued",), limit=8, oldest_first=True):
            content = self.prepared.content(job.id)
            if job.id == current or content is None or not job.snapshot:
                continue
            if self.prepared.uploaded_early(job.id):
                continue  # its files are (being) stored already (cpvd.pipeline.file_upload)
            snap = Path(job.snapshot)
            task = asyncio.create_task(self._upload(snap, content), name=f"upload-next-{job.id}")
            self._tasks[job.id] = task
            self._all.add(task)
            task.add_done_callback(self._all.discard)
            return

    async def _upload(self, snap: Path, content: ContentHash) -> bool:
        try:
            await self.executors.on_io(self.store, snap, content)
        except (CpvError, OSError) as exc:
            log.debug("early upload of %s failed (the job will upload itself): %s", snap, exc)
            return False
        return True

    def uploading(self, job_id: str) -> bool:
        """Whether ``job_id``'s bytes are being uploaded ahead (coalescing never skips it)."""
        task = self._tasks.get(job_id)
        return task is not None and not task.done()

    def pop(self, job_id: str) -> asyncio.Task[bool] | None:
        """The early upload of ``job_id``, if one was started; the job awaits it (it yields
        True when the bytes are stored) when it reaches its upload step."""
        return self._tasks.pop(job_id, None)

    async def close(self) -> None:
        """Cancel early uploads nobody will wait for (shutdown)."""
        tasks = list(self._all)
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
