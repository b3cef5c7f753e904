"""Snapshot and hash a checkpoint during its quiet period, on speculation.

Why: a checkpoint is taken only after ``settle_seconds`` (2 s by default) without activity,
and then its snapshot copy and md5 (about 1.7 s per GiB on 2 cores) came before any byte
could be uploaded, because objects are named by their md5. Most checkpoints arrive whole
(``torch.save`` to a temporary name and a rename, HF's ``tmp-checkpoint-N`` renamed): for
those the copy and the hash can run while the quiet period is still being waited out, and
the version starts uploading the moment the checkpoint is declared complete.

Safe by construction:

* the watcher offers a checkpoint when it first appears and again when its writer closes
  it, and takes the offer back on any later activity (the copy is abandoned at its next
  chunk, the snapshot deleted);
* when the checkpoint is declared complete, the source is stat'ed again file by file
  (path, size, mtime, inode) and must equal what was copied, or the speculative snapshot
  is dropped and a new one taken as before;
* no byte leaves the machine on speculation: the early uploads of a speculative snapshot
  are held until it is claimed (:meth:`cpvd.pipeline.file_upload.UploadBatch.hold`);
* an offer nobody claims expires, and a crash leaves its snapshot to the start-up clean-up
  (no queued job owns it);
* it is optional, so it never waits for room or fills the disk: it is not made when the
  copy would take the snapshot store past its limit or use over half the free space.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpvd.config.model import WatchConfig
from cpvd.errors import CpvError
from cpvd.pipeline.copier import Abandoned, Copier, Taken
from cpvd.pipeline.file_upload import UploadBatch
from cpvd.pipeline.follow import Follower
from cpvd.pipeline.snapshot import Layout
from cpvd.pipeline.threads import Executors
from cpvd.storage.hashing import ContentHash

log = logging.getLogger(__name__)

#: an offer not claimed within this many quiet periods (at least MIN_EXPIRY s) is dropped
EXPIRY_PERIODS = 10
MIN_EXPIRY = 60.0

#: (artifact, source, size, mtime_ns) -> why no job is needed, or None (cpvd.state.outcome)
Handled = Callable[[str, str, int, int], "str | None"]


@dataclass
class _Offer:
    key: str
    batch: UploadBatch
    abandon: threading.Event
    future: asyncio.Future[tuple[Path, ContentHash | None, Layout]]
    #: taken from the copy followed while written (cpvd.pipeline.follow), if there was one
    sealed: bool = False


@dataclass(eq=False)
class SpeculativeSnapshots:
    """Speculative snapshots by (artifact, source path), on the loop thread. Owns its offers
    and their snapshots until claimed; never touches the queue."""

    copier: Copier
    executors: Executors
    handled: Handled
    #: files copied and hashed while written; a sealed offer takes its copy from there
    follower: Follower | None = None

    def __post_init__(self) -> None:
        self._snapshots = self.copier.snapshots
        self._offers: dict[tuple[str, str], _Offer] = {}

    def offer(
        self, watch: WatchConfig, path: Path, size: int, mtime_ns: int, sealed: bool = False
    ) -> None:
        """``path`` looks whole (it appeared, or its writer closed it): start its snapshot.
        ``sealed``: its writer's last act was seen, so a copy followed while it was written
        (cpvd.pipeline.follow) is handed over instead of a new one."""
        artifact, source = watch.artifact, str(path)
        self.discard(artifact, source)
        if self.handled(artifact, source, size, mtime_ns) is not None:
            self._forget_followed(path)
            return
        follow = self.follower if sealed else None
        if follow is None and not self._snapshots.has_room(size):
            log.debug("no early snapshot of %s: the snapshot store is short of room", source)
            return
        key = uuid.uuid4().hex
        batch = self.copier.batch(artifact)
        batch.hold()
        abandon = threading.Event()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self.executors.snapshot, self._take, follow, path, size, key, batch, abandon
        )
        offer = _Offer(key, batch, abandon, future, follow is not None)
        self._offers[(artifact, source)] = offer
        future.add_done_callback(_consume)
        expiry = max(MIN_EXPIRY, EXPIRY_PERIODS * watch.settle_seconds)
        loop.call_later(expiry, self._expire, (artifact, source), offer)
        log.debug("snapshotting %s during its quiet period", source)

    def _take(
        self,
        follow: Follower | None,
        path: Path,
        size: int,
        key: str,
        batch: UploadBatch,
        abandon: threading.Event,
    ) -> tuple[Path, ContentHash | None, Layout]:
        """On the snapshot thread: the followed copy when there is one, else a new copy.
        A sealed offer skipped the room check (a followed copy needs no more room); without
        that copy, a new one is as optional as any early snapshot: it must never wait for
        space, which would hold a reservation the job's own copy then waits behind."""
        if follow is not None and not abandon.is_set():
            got = follow.finish(path, key, batch)
            if got is not None:
                return got
            if not self._snapshots.has_room(size):
                raise Abandoned(f"no early snapshot of {path}: the snapshot store is short of room")
        return self.copier.copy_and_hash(path, key, batch, abandon)

    def discard(self, artifact: str, source: str) -> None:
        """The checkpoint changed (or will not be versioned): drop its speculative snapshot."""
        offer = self._offers.pop((artifact, source), None)
        if offer is not None:
            log.debug("dropped the early snapshot of %s", source)
            self._drop(offer)

    async def claim(self, artifact: str, path: Path) -> Taken | None:
        """The snapshot taken early for ``path`` if it is still exactly what ``path`` is
        now (the checkpoint was just declared complete); None: take one as usual."""
        offer = self._offers.pop((artifact, str(path)), None)
        if offer is None or not offer.sealed:
            self._forget_followed(path)  # complete now: a copy still followed is of no use
        if offer is None:
            return None
        try:
            snap, content, layout = await asyncio.shield(offer.future)
            # a stat walk, on the snapshot thread: the io threads may be busy uploading
            same = await self.executors.on_snapshot(self._snapshots.unchanged, path, layout)
        except asyncio.CancelledError:
            self._drop(offer)
            raise
        except (CpvError, OSError) as exc:
            log.debug("early snapshot of %s failed (%s); taking it again", path, exc)
            self._drop(offer)
            return None
        if not same:
            log.info("%s changed after its early snapshot; taking it again", path)
            self._drop(offer)
            return None
        if self.copier.uploads_allowed(artifact):
            offer.batch.release()
        else:  # paused since, or the storage is failing: the job uploads by itself
            offer.batch.cancel()
        return Taken(offer.key, snap, content, offer.batch)

    def _forget_followed(self, path: Path) -> None:
        if self.follower is not None:
            with contextlib.suppress(RuntimeError):  # the pool is shut down: stopping
                self.executors.io.submit(self.follower.forget, path)

    def close(self) -> None:
        """Shutdown: drop every offer (their copies stop at the next chunk) and stop
        following files (the watcher, stopped before, feeds it no more)."""
        for k in list(self._offers):
            self.discard(*k)
        if self.follower is not None:
            self.follower.stop()

    def _expire(self, k: tuple[str, str], offer: _Offer) -> None:
        if self._offers.get(k) is offer:
            log.debug("early snapshot of %s never claimed; dropped", k[1])
            self.discard(*k)

    def _drop(self, offer: _Offer) -> None:
        offer.abandon.set()
        offer.batch.cancel()
        snapshots, pool = self._snapshots, self.executors.io

        def done(f: asyncio.Future[tuple[Path, ContentHash | None, Layout]]) -> None:
            if not f.cancelled() and f.exception() is None:
                with contextlib.suppress(RuntimeError):  # the pool is shut down: start-up
                    pool.submit(snapshots.release, offer.key)  # clean-up deletes it then

        offer.future.add_done_callback(done)


def _consume(f: asyncio.Future[Any]) -> None:
    """Mark a speculative snapshot's failure as seen (it is not an error to log)."""
    if not f.cancelled():
        f.exception()
