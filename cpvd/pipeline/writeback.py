"""Write a big snapshot file's pages to disk as soon as it is copied, off the copying thread.

Why: a snapshot is a fresh copy, so every GiB copied is a GiB of dirty page cache. Left to
the kernel it is written back only after 30 s (``dirty_expire_centisecs``) or once dirty
pages pass ``dirty_background_ratio``, which tends to be just while the upload, the
trainer's next checkpoint or a local storage server write too; the kernel then throttles
those writers (``balance_dirty_pages``). Measured on the 2-core benchmark machine against
moto on 127.0.0.1 (1 GiB, 4 alternating runs): an upload of a file copied just before took
8.5-9.6 s; of the same kind of copy with an ``fdatasync`` started on another thread right
after it, 6.7-7.0 s; of a file written long before, 5.5-5.8 s (the ``fdatasync`` itself took
0.5 s, on its own thread). In the daemon, 1 GiB end to end at the default quiet period went
from 8.8 s to 8.0 s (medians of 4, alternating with a daemon without it); at a 0.2 s quiet
period, where the upload starts as the copy ends, no difference showed. The copy is asked
to be written back every 128 MiB (``FLUSH_STEP`` in cpvd.pipeline.snapshot), so by the end of a long
copy most of it is on disk already.

Small files are left to the kernel: their dirty pages cost nothing worth a disk flush each
(a burst of 200 small checkpoints would otherwise force 200 journal commits).

This starts writeback early; the durability promise is :func:`sync_tree`, called by the
snapshot store once a snapshot is whole and before it is handed over (the queue then points
at it): each copy's ``fdatasync`` finds the big files already on disk, so it costs little.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: files smaller than this are left to the kernel's own writeback
MIN_BYTES = 32 * 1024 * 1024


def _datasync(fd: int) -> None:
    sync = getattr(os, "fdatasync", None) or os.fsync  # macOS has no fdatasync
    sync(fd)


def sync_tree(files: list[Path], dirs: list[Path]) -> None:
    """Make a finished snapshot durable across power loss: the data of each file in
    ``files``, then the entries of each directory in ``dirs`` (the ones holding them).

    Why here and not per write: a job is committed to the queue right after the snapshot is
    taken; without this a power loss could leave the queue pointing at empty or missing
    files. One ``fdatasync`` per file (metadata such as mtime is not needed) and one
    ``fsync`` per directory, nothing more: a burst of small checkpoints must keep up.
    """
    for paths, sync in ((files, _datasync), (dirs, os.fsync)):
        for path in paths:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                sync(fd)
            finally:
                os.close(fd)


class Writeback:
    """One thread at most, started when there is work and gone when there is none."""

    def __init__(self, min_bytes: int = MIN_BYTES, sync: Callable[[int], None] = _datasync) -> None:
        self.min_bytes = min_bytes
        self._sync = sync
        self._cond = threading.Condition()
        self._fds: deque[tuple[int, tuple[int, int]]] = deque()  # (dup, (st_dev, st_ino))
        self._queued: set[tuple[int, int]] = set()  # files waiting, not yet being flushed
        self._running = False

    def start(self, fd: int, size: int) -> bool:
        """Flush the file open as ``fd`` (``size`` bytes) in the background; returns at once.

        The caller keeps ``fd`` (a duplicate is flushed and closed). Call it again as the
        file grows: a request for a file already waiting is covered by that one. Returns
        whether the file will be flushed (False for a file below ``min_bytes``).
        """
        if size < self.min_bytes:
            return False
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        with self._cond:
            if key in self._queued:
                return True
            self._queued.add(key)
            self._fds.append((os.dup(fd), key))
            if self._running:
                return True
            self._running = True
        threading.Thread(target=self._run, name="cpvd-writeback", daemon=True).start()
        return True

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every queued flush is done; False on timeout (tests, shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._running, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._fds:
                    self._running = False
                    self._cond.notify_all()
                    return
                fd, key = self._fds.popleft()
                self._queued.discard(key)
            try:
                self._sync(fd)
            except Exception as exc:  # the kernel writes the pages back later anyway
                log.debug("early writeback of a snapshot failed: %s", exc)
            finally:
                os.close(fd)
