"""Work already done for a queued job before the worker claims it.

The intake copies and hashes a checkpoint while it snapshots it, and its files may already
be uploading (:mod:`cpvd.pipeline.file_upload`). The job in the durable queue records only
what a restart needs (the snapshot's path); this in-memory table keeps the rest for the
worker: the content hash (so the snapshot is not read a second time) and the batch of early
uploads (which the worker waits for). It is a cache, never a source of truth: after a
restart it is empty, and the worker hashes and uploads the snapshot itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from cpvd.pipeline.file_upload import UploadBatch
from cpvd.storage.hashing import ContentHash


@dataclass
class Prepared:
    content: ContentHash
    batch: UploadBatch | None


class PreparedJobs:
    """Job id -> :class:`Prepared`; filled by the intake, emptied by the worker."""

    def __init__(self) -> None:
        self._jobs: dict[str, Prepared] = {}

    def put(self, job_id: str, content: ContentHash, batch: UploadBatch) -> None:
        self._jobs[job_id] = Prepared(content, batch if batch.futures() else None)

    def take(self, job_id: str) -> Prepared | None:
        return self._jobs.pop(job_id, None)

    def content(self, job_id: str) -> ContentHash | None:
        p = self._jobs.get(job_id)
        return p.content if p is not None else None

    def uploaded_early(self, job_id: str) -> bool:
        """Whether this job's files went to early uploads (running or done): its own upload
        step waits for them and stores only what they did not, so nothing is left to do
        ahead of it (a HEAD per object, measured as much work as the PUT in a burst)."""
        p = self._jobs.get(job_id)
        return p is not None and p.batch is not None

    def cancel_all(self) -> None:
        """Shutdown: stop every early upload (queued jobs upload everything next start)."""
        for p in self._jobs.values():
            if p.batch is not None:
                p.batch.cancel()
