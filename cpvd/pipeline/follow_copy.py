"""One file followed while its writer writes it: copied and hashed as it grows.

Why: objects are named by their md5, so no byte of a checkpoint goes up before its hash is
final; hashing after the writer's last byte puts the whole md5 (about 1.3 s per GiB) on the
path to the version. Followed as it grows, the copy and the hash are done when the writer
is, or nearly (cpvd.pipeline.follow).

What is hashed is read back from the copy (``copy_file_range`` where the kernel can, else a
read and a write), so the md5 always describes the snapshot. A writer that seeks back and
rewrites earlier bytes leaves the copy stale there: :meth:`FollowedFile.settle` compares the
copy with the source chunk by chunk (much cheaper than a re-hash) and resumes the hash
(cpvd.storage.chunk_hash) from the first chunk that differs.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from cpvd.storage.chunk_hash import CHUNK, ChunkedMd5

#: bytes copied between two requests to write the copy back (cpvd.pipeline.writeback)
FLUSH_STEP = 128 * 1024 * 1024


class SourceChanged(Exception):
    """The source moved (size or mtime) while it was settled: not a whole, still file."""


class FollowedFile:
    """The copy and running md5 of one source file, open as ``sfd`` (owned: closed by
    :meth:`close`). The copy is created at ``dst`` (it must not exist)."""

    def __init__(
        self,
        sfd: int,
        dst: Path,
        chunk: int = CHUNK,
        flush: Callable[[int, int], object] | None = None,
    ) -> None:
        self.sfd = sfd
        self.dst = dst
        self.dfd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.md5 = ChunkedMd5(chunk)
        #: held while bytes are copied: one thread at a time moves this file's copy on
        self.lock = threading.Lock()
        self._flush = flush
        self._flushed = 0
        self._kernel = hasattr(os, "copy_file_range")

    @property
    def copied(self) -> int:
        return self.md5.length

    def catch_up(self, stop: threading.Event | None = None, limit: int | None = None) -> int:
        """Copy and hash what the source holds beyond :attr:`copied`, chunk by chunk, up to
        its size now (a shorter source was truncated: the copy follows it back), or up to
        offset ``limit``. Stops early when ``stop`` is set. Returns the source size.

        The next chunk is copied on a helper thread while this one hashes the last: the
        kernel copy and md5 both release the GIL, so on two cores a tail left by a writer
        faster than md5 takes about the md5 alone (1.5 s per GiB here) instead of copy plus
        md5 (2.1 s). A chunk copied ahead of a short read is harmless: only bytes hashed
        count as copied, and the next catch-up (or :meth:`settle`'s truncate) overwrites it.
        """
        size = os.fstat(self.sfd).st_size
        if size < self.copied:
            self._rewind(size)
        end = size if limit is None else min(size, limit)
        chunk = self.md5.chunk
        with ThreadPoolExecutor(1, thread_name_prefix="cpvd-follow-copy") as pool:
            off, ahead = self.copied, None
            while True:
                pending, ahead = ahead, None
                if off < end and not (stop is not None and stop.is_set()):
                    n = min(chunk - off % chunk, end - off)
                    ahead = (pool.submit(self._copy_out, off, n), n)
                    off += n
                if pending is not None:
                    got = self._take(pending[0])
                    if got < pending[1]:  # short: what was copied past it is dropped
                        if ahead is not None:
                            ahead[0].result()
                        if got == 0:
                            break  # shorter than fstat said: the next catch-up sees it
                        off, ahead = self.copied, None
                        continue
                if ahead is None:
                    break
        return size

    def first_difference(self, end: int | None = None) -> int | None:
        """The offset of the first chunk before ``end`` (default: all that was copied)
        where the copy differs from the source, or None. Reads into two reused buffers: no
        allocation per chunk, a memcmp per chunk."""
        chunk, off = self.md5.chunk, 0
        end = self.copied if end is None else end
        a, b = bytearray(chunk), bytearray(chunk)
        while off < end:
            n = min(chunk, end - off)
            got = _read_into(self.sfd, a, n, off)
            if got != n or _read_into(self.dfd, b, n, off) != n or not _same(a, b, n):
                return off
            off += n
        return None

    def _redo_from(self, offset: int) -> None:
        """Hash again from the chunk boundary at or before ``offset`` up to what was copied,
        rewriting in the copy only the chunks that differ (one pass: read, compare, hash)."""
        end = self.copied
        off = self.md5.rewind(offset)
        a, b = bytearray(self.md5.chunk), bytearray(self.md5.chunk)
        while off < end:
            n = min(self.md5.chunk, end - off)
            got = _read_into(self.sfd, a, n, off)
            view = memoryview(a)[:got]
            if _read_into(self.dfd, b, got, off) != got or not _same(a, b, got):
                os.pwrite(self.dfd, view, off)
            self.md5.update(view)
            off += got
            if got < n:
                break  # the source is shorter now: catch_up follows it back

    def settle(self) -> tuple[str, os.stat_result]:
        """The writer is done: catch up, compare, re-copy from the first difference; returns
        the md5 of the copy and the source's ``fstat`` it is the md5 of. Raises
        :class:`SourceChanged` when the source moved meanwhile."""
        before = os.fstat(self.sfd)
        diff = self._compare_while_catching_up()
        if diff is not None:
            self._redo_from(diff)
            self.catch_up()
        after = os.fstat(self.sfd)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or (
            self.copied != after.st_size
        ):
            raise SourceChanged("the file was written to while its copy was checked")
        os.ftruncate(self.dfd, self.copied)
        return self.md5.hexdigest(), after

    def _compare_while_catching_up(self) -> int | None:
        """Compare what was copied so far on another thread while this one copies and
        hashes the rest: the two read different bytes, and md5 and reads release the GIL,
        so on two cores the compare costs little beyond the tail's hash. The tail needs no
        compare: it is read after the ``fstat`` that :meth:`settle` checks again at the end."""
        copied = self.copied
        result: list[int | None] = []
        failed: list[BaseException] = []

        def compare() -> None:
            try:
                result.append(self.first_difference(copied))
            except BaseException as exc:  # re-raised on the caller's thread
                failed.append(exc)

        worker = threading.Thread(target=compare, name="cpvd-follow-compare", daemon=True)
        worker.start()
        try:
            self.catch_up()
        finally:
            worker.join()
        if failed:
            raise failed[0]
        return result[0]

    def close(self) -> None:
        """Close both files, once (a second call must not close a reused descriptor)."""
        fds, self.sfd, self.dfd = (self.sfd, self.dfd), -1, -1
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _rewind(self, offset: int) -> None:
        start = self.md5.rewind(offset)
        os.ftruncate(self.dfd, start)
        self._flushed = min(self._flushed, start)

    def _copy_out(self, off: int, n: int) -> bytes:
        """Copy ``n`` bytes at ``off`` into the copy; the bytes as read back from it."""
        got = 0
        if self._kernel:
            try:
                got = os.copy_file_range(self.sfd, self.dfd, n, off, off)
            except OSError:
                self._kernel = False
        if not self._kernel:
            data = os.pread(self.sfd, n, off)
            got = os.pwrite(self.dfd, data, off) if data else 0
        return os.pread(self.dfd, got, off) if got > 0 else b""

    def _take(self, copied: Future[bytes]) -> int:
        """Hash a chunk :meth:`_copy_out` copied; how many bytes it held."""
        data = copied.result()
        if data:
            self.md5.update(data)
        if self._flush is not None and self.copied - self._flushed >= FLUSH_STEP:
            self._flushed = self.copied
            self._flush(self.dfd, self.copied)
        return len(data)


def _read_into(fd: int, buf: bytearray, n: int, offset: int) -> int:
    """Read up to ``n`` bytes at ``offset`` into ``buf`` (from its start); bytes read."""
    view = memoryview(buf)[:n]
    got = 0
    while got < n:
        step = os.preadv(fd, [view[got:]], offset + got)
        if step <= 0:
            break
        got += step
    return got


def _same(a: bytearray, b: bytearray, n: int) -> bool:
    """Are the first ``n`` bytes equal? Whole buffers compare with one memcmp (measured:
    a memoryview compare goes byte by byte, ~6x slower; a slice copies both first)."""
    return a == b if n == len(a) else a[:n] == b[:n]
