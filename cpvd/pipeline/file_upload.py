"""Store each file of a checkpoint as soon as its snapshot copy is hashed.

Why: objects are named by their md5, so no byte of a file can go up before its hash is
known, and the hash of a checkpoint used to be complete (every file copied and hashed) before
the job was even queued. For a directory of shards that ran snapshot, hash and upload one
after another; now shard k uploads while shard k+1 is copied and hashed, and a single file
starts uploading the moment its md5 is final instead of after the job is queued and claimed.

The staging copy a file is hashed from only lives until the snapshot is committed (renamed),
and its md5 is final only later, on the hashing thread; so the snapshot thread links each
copy as soon as it is whole (our own private copy, never a workspace file; the link sits in
the snapshot store under its staging prefix, so a crash leaves it to the store's start-up
clean-up) and the upload reads the link, removed when the upload ends.

Safe by construction, like :mod:`cpvd.pipeline.next_upload`: objects are content-addressed and
uploads idempotent, so an upload whose job is later skipped, or whose snapshot is retried,
leaves at worst an object nobody points to. The job still runs its upload step; it waits
for the early uploads first and stores only what they did not (a failure, an outage).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from cpvd.errors import CpvError, StorageError
from cpvd.pipeline.snapshot import STAGING_PREFIX
from cpvd.storage import Storage
from cpvd.storage.base import Progress

log = logging.getLogger(__name__)

#: stored object ids (md5s) a batch's uploads put into the storage, or found there
Stored = set[str]


class FileUploads:
    """A small pool that stores hashed files while their snapshot is still being taken."""

    def __init__(
        self, storage: Callable[[], Storage], link_dir: Path, pool: ThreadPoolExecutor
    ) -> None:
        self._storage = storage
        self._link_dir = Path(link_dir)
        self._pool = pool

    def batch(self) -> UploadBatch:
        """A batch for one snapshot: pass its ``on_hashed`` to the StreamHasher."""
        return UploadBatch(self)

    def _pin(self, path: Path) -> Path | None:
        """A hard link to the staging copy ``path`` (None when it cannot be made)."""
        link = self._link_dir / f"{STAGING_PREFIX}up-{uuid.uuid4().hex}"
        try:
            os.link(path, link)
        except OSError as exc:  # the job uploads it itself
            log.debug("no early upload of %s: cannot link it: %s", path, exc)
            return None
        return link

    def _submit(self, batch: UploadBatch, md5: str, link: Path, size: int) -> None:
        try:
            fut = self._pool.submit(self._put, batch, md5, link, size)
        except RuntimeError:  # the pool is shut down: the daemon is stopping
            link.unlink(missing_ok=True)
            return
        # cancelled before it ran (its job superseded or skipped): ``_put`` never unlinks it,
        # and the link kept a released snapshot's bytes on disk
        fut.add_done_callback(lambda f: link.unlink(missing_ok=True) if f.cancelled() else None)
        batch.add(fut)

    def _put(self, batch: UploadBatch, md5: str, link: Path, size: int) -> str | None:
        sent = 0

        def report(n: int) -> None:
            nonlocal sent
            batch.report(n)
            sent += n

        try:
            if batch.cancelled.is_set():
                return None
            self._storage().put_file(md5, link, size, report)
        except (CpvError, OSError) as exc:
            # the job stores this file again from byte 0: take back what was counted, so the
            # job's progress never runs past its total
            batch.take_back(sent)
            log.debug("early upload of %s failed (the job will store it): %s", md5, exc)
            if isinstance(exc, StorageError) and exc.outage:
                batch.outage = batch.outage or exc
            return None
        finally:
            link.unlink(missing_ok=True)
        return md5


class UploadCancelled(CpvError):
    """Raised inside an early upload's progress report to stop it (:meth:`UploadBatch.cancel`)."""


class UploadBatch:
    """The early uploads of one snapshot; :meth:`stored` waits for them."""

    def __init__(self, owner: FileUploads) -> None:
        self._owner = owner
        self._futures: list[Future[str | None]] = []
        self._lock = threading.Lock()
        self._bytes = 0
        self._progress: Progress | None = None
        #: set when this batch's objects must not be uploaded early (artifact paused, ...)
        self.enabled = True
        #: the storage was unreachable during an early upload: the job's attempt fails with
        #: it (and backs off) instead of starting the same upload again at once
        self.outage: StorageError | None = None
        #: nobody needs these uploads any more (the job was skipped, the daemon stops)
        self.cancelled = threading.Event()
        #: hashed files waiting for :meth:`release` (None: uploads start once hashed)
        self._held: list[tuple[str, Path, int]] | None = None

    def on_file(self, rel: str, path: Path) -> Path | None:
        """Called on the snapshot thread when ``path`` (a staging copy) is whole: link it
        before the snapshot moves on (the staging area is renamed when it is committed) and
        return the link, for :meth:`on_hashed`; None when nothing is uploaded early."""
        return self._owner._pin(path) if self.enabled else None

    def on_hashed(self, rel: str, md5: str, size: int, link: Path) -> None:
        """StreamHasher callback: ``link`` (from :meth:`on_file`) hashes to ``md5``."""
        with self._lock:
            if self._held is not None:
                self._held.append((md5, link, size))
                return
        self._owner._submit(self, md5, link, size)

    def hold(self) -> None:
        """Keep hashed files back until :meth:`release` (a snapshot taken on speculation:
        no byte leaves before the checkpoint is known to be complete)."""
        with self._lock:
            if self._held is None:
                self._held = []

    def release(self) -> None:
        """Start the uploads held back, and any later ones as soon as they are hashed."""
        with self._lock:
            held, self._held = self._held or [], None
        for md5, link, size in held:
            if self.cancelled.is_set():
                link.unlink(missing_ok=True)
            else:
                self._owner._submit(self, md5, link, size)

    def add(self, fut: Future[str | None]) -> None:
        with self._lock:
            self._futures.append(fut)

    def report(self, n: int) -> None:
        """Byte progress from the upload threads, forwarded once a job listens. Raises
        :class:`UploadCancelled` once the batch is cancelled: the storage's upload stops
        there and cleans up after itself (a multipart upload is aborted, a temp file
        removed)."""
        if self.cancelled.is_set():
            raise UploadCancelled("early upload cancelled: nobody needs it any more")
        self._count(n)

    def take_back(self, n: int) -> None:
        """Uncount ``n`` bytes of an upload that failed (even once cancelled)."""
        if n:
            self._count(-n)

    def _count(self, n: int) -> None:
        with self._lock:
            self._bytes += n
            progress = self._progress
        if progress is not None:
            progress(n)

    def listen(self, progress: Progress) -> None:
        """Send byte progress to ``progress`` from now on, starting with what is done."""
        with self._lock:
            self._progress = progress
            done = self._bytes
        if done:
            progress(done)

    def cancel(self) -> list[Future[str | None]]:
        """Stop the uploads nobody will wait for: those not started never start, those
        running stop at their next progress report. Returns the futures to wait for."""
        self.cancelled.set()
        with self._lock:
            held, self._held = self._held or [], None
            for f in self._futures:
                f.cancel()
            running = [f for f in self._futures if not f.done()]
        for _, link, _ in held:
            link.unlink(missing_ok=True)
        return running

    def futures(self) -> list[Future[str | None]]:
        with self._lock:
            return list(self._futures)

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(1 for f in self._futures if not f.done())

    def stored(self, timeout: float | None = None) -> Stored:
        """Wait for every upload of the batch; the md5s they stored (failures left out)."""
        with self._lock:
            futures = list(self._futures)
        wait(futures, timeout=timeout)
        out: Stored = set()
        for f in futures:
            if f.done() and not f.cancelled():
                with contextlib.suppress(Exception):
                    md5 = f.result()
                    if md5 is not None:
                        out.add(md5)
        return out
