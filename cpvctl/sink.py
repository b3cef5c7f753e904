"""Where ``cpvctl pull`` puts a file's bytes: written on one thread, md5-hashed on another.

A pull reads from a socket, writes to disk and hashes; done one after the other on one
thread, each waits for the others (a 1 GiB pull took about three times a raw download on
2 cores). Here the reading thread only hands chunks over; one thread writes them and one
hashes them, each in order (writes and md5 release the GIL: with both on one thread a 1 GiB
pull took write + md5, about 2 s, where md5 alone takes 1.5 s). The writer asks the kernel
to start writing each 64 MiB out at once (``sync_file_range``, Linux), so the ``fsync`` at
the end, which the all-or-nothing promise needs, finds little left to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO

#: chunks waiting for the writer (memory bound: DEPTH x the reader's chunk size)
DEPTH = 8
#: start writeback after this many new bytes
WRITEBACK_EVERY = 64 << 20
_SYNC_FILE_RANGE_WRITE = 2


class WriteFailed(Exception):
    """Writing or syncing the destination failed (a full disk): never a reason to retry
    the download another way, unlike an ``OSError`` of the network."""

    def __init__(self, path: Path, error: OSError) -> None:
        super().__init__(f"cannot write {path}: {error.strerror or error}")
        self.path = path
        self.error = error.strerror or str(error)


class Sink:
    """``write(chunk)`` from the reading thread; ``finish()`` returns ``(md5, size)`` once
    every byte is written, hashed and fsynced; ``abandon()`` stops without syncing. A write
    error surfaces on the next ``write`` or at ``finish`` as :class:`WriteFailed`."""

    def __init__(self, f: BinaryIO, path: Path) -> None:
        self._f = f
        self._path = path
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._size = 0
        self._flushed = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(DEPTH)
        self._hash_queue: queue.Queue[bytes | None] = queue.Queue(DEPTH)
        self._error: WriteFailed | None = None
        self._writeback = _sync_file_range()
        self._threads = [
            threading.Thread(target=self._run, name="cpvctl-sink", daemon=True),
            threading.Thread(target=self._hash, name="cpvctl-md5", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def write(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)
        self._hash_queue.put(chunk)

    def finish(self) -> tuple[str, int]:
        self._stop()
        if self._error is not None:
            raise self._error
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as exc:
            raise WriteFailed(self._path, exc) from None
        return self._md5.hexdigest(), self._size

    def abandon(self) -> None:
        self._stop()

    def _stop(self) -> None:
        for thread, q in zip(self._threads, (self._queue, self._hash_queue), strict=True):
            if thread.is_alive():
                q.put(None)
                thread.join()

    def _hash(self) -> None:
        while (chunk := self._hash_queue.get()) is not None:
            self._md5.update(chunk)

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain, so the reader never blocks on a full queue
            try:
                self._f.write(chunk)
                self._size += len(chunk)
                if self._size - self._flushed >= WRITEBACK_EVERY:
                    self._start_writeback()
            except OSError as exc:  # handed to the reading thread
                self._error = WriteFailed(self._path, exc)

    def _start_writeback(self) -> None:
        if self._writeback is None:
            return
        self._f.flush()
        with contextlib.suppress(OSError):
            self._writeback(self._f.fileno(), self._flushed, self._size - self._flushed)
        self._flushed = self._size


def _sync_file_range() -> Any:
    """``sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE)``, or None off Linux."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]

    def call(fd: int, offset: int, nbytes: int) -> None:
        fn(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)

    return call
