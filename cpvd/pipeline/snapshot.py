"""Private copies of checkpoints, taken before queueing, so the trainer cannot touch them.

Why: trainers delete old checkpoints (``save_total_limit``) and rewrite ``last.ckpt`` in
place, possibly before the upload has even started. The version must be the bytes that were
complete when detected, so the worker hashes and uploads a snapshot, never the workspace
file. A reflink (``FICLONE``) makes the snapshot nearly free on btrfs/XFS; elsewhere it is a
streaming copy. Never a hardlink: an in-place rewrite of the source would rewrite the
snapshot too (measured with DVC's hardlink cache type).

Layout: ``root/<key>/<source name>`` (a file, or a directory with the same relative
layout). A snapshot is built under ``root/.staging-*`` and renamed into place, so
``root/<key>`` only ever holds a whole copy. Space is bounded by ``limit_bytes``: when full,
``take`` waits until ``release`` frees space (up to ``timeout``) rather than fail; a single
checkpoint larger than the limit is still taken when the store is otherwise empty, or it
could never be versioned.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import logging
import os
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from cpvd.errors import CpvError, InputError, IntegrityError, NotFound
from cpvd.pipeline.writeback import Writeback
from cpvd.storage.hashing import list_files

log = logging.getLogger(__name__)

#: ioctl FICLONE: make ``dst_fd`` share ``src_fd``'s extents (btrfs, XFS, bcachefs, …)
FICLONE = 0x40049409
COPY_CHUNK = 8 * 1024 * 1024
#: bytes copied between two requests to write the copy back (cpvd.pipeline.writeback)
FLUSH_STEP = 128 * 1024 * 1024
#: attempts when the source changes during the copy, before giving up
COPY_ATTEMPTS = 4
STAGING_PREFIX = ".staging-"

#: ``(relpath inside the checkpoint, bytes)``; relpath is the file name for a file checkpoint
OnChunk = Callable[[str, bytes], None]
#: "forget every chunk seen so far": the source changed and the copy starts over
OnRestart = Callable[[], None]
#: ``(relpath, path of its copy in the staging area)``: that file is copied whole
OnFile = Callable[[str, Path], None]


class SnapshotSpaceTimeout(CpvError):
    """The snapshot store stayed full for longer than the caller would wait."""

    code = "internal"
    retryable = True


#: (relpath, size, mtime_ns, ino) per file: what "the source did not change" compares
Layout = list[tuple[str, int, int, int]]
#: free space an optional copy leaves on the store's filesystem, at least (has_room)
ROOM_MARGIN = 64 * 1024 * 1024


class SnapshotStore:
    """Snapshots keyed by a caller-chosen key (the daemon uses its job id)."""

    def __init__(
        self, root: Path, limit_bytes: int = 0, writeback: Writeback | None = None
    ) -> None:
        self.root = Path(root)
        self.limit_bytes = max(0, int(limit_bytes))
        #: flushes each big copy to disk in the background (cpvd.pipeline.writeback)
        self.writeback = writeback if writeback is not None else Writeback()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._cond = threading.Condition()
        self._sizes: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        #: (src st_dev, dst st_dev) pairs where FICLONE failed: skip trying again
        self._no_reflink: set[tuple[int, int]] = set()
        self._recover()

    # -- public API -------------------------------------------------------------------------

    def take(
        self,
        src: Path,
        key: str,
        timeout: float | None = None,
        on_chunk: OnChunk | None = None,
        on_restart: OnRestart | None = None,
        on_file: OnFile | None = None,
        on_layout: Callable[[Layout], None] | None = None,
    ) -> Path:
        """Copy checkpoint ``src`` to ``root/key/<src.name>`` and return that path.

        Raises NotFound when ``src`` is gone, IntegrityError when it kept changing during
        every attempt, SnapshotSpaceTimeout when the store stayed full past ``timeout``,
        InputError for a bad key or a source that is not a file or directory. An existing
        snapshot under ``key`` is replaced.

        ``on_chunk`` sees every byte of the snapshot, file by file in relpath order, so the
        caller can hash while copying; ``on_restart`` is called before a retry starts over.
        ``on_file`` is called after each file's last chunk, with the path of its copy in the
        staging area (valid only until ``take`` returns: link it to keep it). ``on_layout``
        gets what the source was, file by file, when the copy was made (see :meth:`unchanged`).
        """
        _check_key(key)
        src = Path(src)
        deadline = None if timeout is None else time.monotonic() + timeout
        last_change = ""
        for attempt in range(COPY_ATTEMPTS):
            if attempt:
                log.info("%s changed while snapshotting (%s); retrying", src, last_change)
                time.sleep(0.05 * (2**attempt))
                if on_restart is not None:
                    on_restart()
            try:
                layout = self._layout(src)
            except _Changed as exc:
                last_change = str(exc)
                continue
            need = sum(size for _, size, _, _ in layout)
            self._reserve(key, need, deadline)
            staging = self.root / f"{STAGING_PREFIX}{key}-{uuid.uuid4().hex[:8]}"
            try:
                staging.mkdir(mode=0o700)
                self._copy(src, staging / src.name, layout, on_chunk, on_file)
                after = self._layout(src)
                if after == layout:
                    if on_layout is not None:
                        on_layout(layout)
                    return self._commit(key, staging, need)
                last_change = _describe_change(layout, after)
            except _Changed as exc:
                last_change = str(exc)
            finally:
                with self._cond:
                    self._reserved.pop(key, None)
                    self._cond.notify_all()
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        raise IntegrityError(
            f"{src} kept changing while it was copied ({COPY_ATTEMPTS} attempts; "
            f"last: {last_change})"
        )

    def unchanged(self, src: Path, layout: Layout) -> bool:
        """Is ``src`` still, file by file (path, size, mtime, inode), what ``layout`` says?"""
        try:
            return self._layout(Path(src)) == layout
        except (CpvError, _Changed, OSError):
            return False

    def release(self, key: str) -> None:
        """Delete a snapshot (its version is stored, or its job was dropped); frees space."""
        _check_key(key)
        path = self.root / key
        if path.exists():
            # rename first so a crash mid-delete never leaves a half snapshot under the key
            trash = self.root / f"{STAGING_PREFIX}rm-{key}-{uuid.uuid4().hex[:8]}"
            os.rename(path, trash)
            shutil.rmtree(trash, ignore_errors=True)
        self._forget(key)

    def set_aside(self, key: str, folder: Path) -> Path:
        """Move a snapshot out of the store into ``folder`` (same filesystem) and return its
        new path: for snapshots no job owns any more but which may be the only copy of a
        checkpoint (the queue database was rebuilt; the trainer may have rotated the file)."""
        _check_key(key)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        dest = folder / key
        os.rename(self.root / key, dest)
        self._forget(key)
        return dest

    def _forget(self, key: str) -> None:
        """``key`` no longer holds a snapshot here: its bytes stop counting against the limit."""
        with self._cond:
            self._sizes.pop(key, None)
            self._cond.notify_all()

    def path(self, key: str) -> Path | None:
        """The snapshot taken under ``key`` (``root/key/<name>``), or None."""
        _check_key(key)
        try:
            children = os.listdir(self.root / key)
        except OSError:
            return None
        return self.root / key / children[0] if len(children) == 1 else None

    def used_bytes(self) -> int:
        """Bytes held by snapshots plus bytes reserved by copies in progress."""
        with self._cond:
            return sum(self._sizes.values()) + sum(self._reserved.values())

    def has_room(self, size: int) -> bool:
        """Could ``size`` more bytes be copied now with plenty to spare: within the limit,
        and leaving at least half the filesystem's free space (and 64 MiB) free? For copies
        that are optional (cpvd.pipeline.speculative_snapshot): they must never fill the disk or
        wait."""
        if self.limit_bytes and self.used_bytes() + size > self.limit_bytes:
            return False
        try:
            st = os.statvfs(self.root)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize >= 2 * size + ROOM_MARGIN

    def keys(self) -> list[str]:
        """Keys of every whole snapshot in the store (for releasing finished jobs at start)."""
        with self._cond:
            return sorted(self._sizes)

    # -- internals --------------------------------------------------------------------------

    def _recover(self) -> None:
        """Drop half-built snapshots left by a crash; account for the whole ones."""
        for entry in os.scandir(self.root):
            if entry.name.startswith(STAGING_PREFIX):
                shutil.rmtree(entry.path, ignore_errors=True)
            elif entry.is_dir(follow_symlinks=False):
                self._sizes[entry.name] = _tree_size(Path(entry.path))

    def _reserve(self, key: str, need: int, deadline: float | None) -> None:
        with self._cond:
            while self.limit_bytes:
                in_use = sum(self._sizes.values()) + sum(self._reserved.values())
                if in_use + need <= self.limit_bytes or in_use == 0:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise SnapshotSpaceTimeout(
                        f"snapshot store {self.root} is full ({in_use} of "
                        f"{self.limit_bytes} bytes used, {need} needed)"
                    )
                log.info(
                    "snapshot store full (%d/%d bytes); waiting for space", in_use, self.limit_bytes
                )
                self._cond.wait(remaining)
            self._reserved[key] = need

    def _commit(self, key: str, staging: Path, size: int) -> Path:
        final = self.root / key
        if final.exists():
            self.release(key)
        os.rename(staging, final)
        with self._cond:
            self._sizes[key] = size
        return self.path(key) or final

    def _layout(self, src: Path) -> Layout:
        """What the source is now, file by file; NotFound when it is gone."""
        try:
            st = os.stat(src)
        except FileNotFoundError:
            raise NotFound(f"{src}: checkpoint vanished before it was snapshotted") from None
        except OSError as exc:
            raise InputError(f"{src}: cannot access: {exc.strerror}", code="invalid_path") from None
        if stat.S_ISREG(st.st_mode):
            return [(src.name, st.st_size, st.st_mtime_ns, st.st_ino)]
        if not stat.S_ISDIR(st.st_mode):
            raise InputError(f"{src}: not a regular file or directory", code="invalid_path")
        out: Layout = []
        try:
            for rel, full in list_files(src):
                fst = os.stat(full)
                out.append((rel, fst.st_size, fst.st_mtime_ns, fst.st_ino))
        except FileNotFoundError as exc:
            if not src.exists():
                raise NotFound(f"{src}: checkpoint vanished while snapshotted") from None
            raise _Changed(f"{exc.filename} vanished") from None
        except InputError:
            if not src.exists():
                raise NotFound(f"{src}: checkpoint vanished while snapshotted") from None
            raise
        return out

    def _copy(
        self,
        src: Path,
        dst: Path,
        layout: Layout,
        on_chunk: OnChunk | None,
        on_file: OnFile | None,
    ) -> None:
        if len(layout) == 1 and src.is_file():
            self._copy_file(src, dst, layout[0], on_chunk)
            if on_file is not None:
                on_file(layout[0][0], dst)
            return
        dst.mkdir(mode=0o700)
        for item in layout:
            target = dst.joinpath(*item[0].split("/"))
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._copy_file(src.joinpath(*item[0].split("/")), target, item, on_chunk)
            if on_file is not None:
                on_file(item[0], target)

    def _copy_file(
        self,
        src: Path,
        dst: Path,
        expect: tuple[str, int, int, int],
        on_chunk: OnChunk | None,
    ) -> None:
        rel, size, mtime_ns, _ = expect
        try:
            sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise _Changed(f"{rel} vanished") from None
        try:
            st = os.fstat(sfd)
            if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                raise _Changed(f"{rel} changed before it was copied")
            dfd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                if self._reflink(sfd, dfd):
                    if on_chunk is not None:
                        _feed(dfd, rel, on_chunk)  # read the clone: exactly the snapshot
                else:
                    flush = functools.partial(self.writeback.start, dfd, size)
                    _stream(sfd, dfd, size, rel, on_chunk, flush)
            finally:
                os.close(dfd)
            st2 = os.fstat(sfd)
            if (st2.st_size, st2.st_mtime_ns) != (size, mtime_ns):
                raise _Changed(f"{rel} was written to during the copy")
        finally:
            os.close(sfd)

    def _reflink(self, sfd: int, dfd: int) -> bool:
        devs = (os.fstat(sfd).st_dev, os.fstat(dfd).st_dev)
        if devs in self._no_reflink:
            return False
        try:
            fcntl.ioctl(dfd, FICLONE, sfd)
        except OSError as exc:
            if exc.errno not in (
                errno.EOPNOTSUPP,
                errno.EXDEV,
                errno.EINVAL,
                errno.ENOTTY,
                errno.ENOSYS,
                errno.EPERM,
                errno.EBADF,
            ):
                raise
            self._no_reflink.add(devs)
            return False
        return True


class _Changed(Exception):
    """The source changed under us: retry the whole snapshot."""


def _stream(
    sfd: int,
    dfd: int,
    size: int,
    rel: str,
    on_chunk: OnChunk | None,
    flush: Callable[[], object],
) -> None:
    """Copy exactly ``size`` bytes (what the layout said): a file still being appended must
    not make the copy chase its end; the after-check then sees the change and retries.

    The bytes are copied in the kernel (``copy_file_range``) and, when ``on_chunk`` wants
    them, read back from the copy chunk by chunk, so what is hashed is exactly what the
    snapshot holds. Why not read and write through Python: measured in a 1 GiB end-to-end
    run (perf), the write() of each chunk into new page-cache pages kept the snapshot thread
    busy ~3 s, twice the md5 it feeds; shutil.copyfile's in-kernel copy of the same GiB took
    0.33 s. Where the kernel cannot copy (another filesystem type, an old kernel, not Linux)
    it falls back to reading and writing.

    ``flush`` is called every ``FLUSH_STEP`` bytes and at the end, so the copy's pages go
    to disk while the rest is still being copied and hashed (cpvd.pipeline.writeback).
    """
    if _kernel_copy(sfd, dfd, size, rel, on_chunk, flush):
        return
    os.lseek(sfd, 0, os.SEEK_SET)
    os.lseek(dfd, 0, os.SEEK_SET)
    os.ftruncate(dfd, 0)
    with (
        open(sfd, "rb", buffering=0, closefd=False) as fin,
        open(dfd, "wb", buffering=0, closefd=False) as fout,
    ):
        buf = bytearray(COPY_CHUNK)
        view = memoryview(buf)
        left = size
        while left > 0:
            n = fin.readinto(view[: min(left, COPY_CHUNK)])
            if not n:
                break
            left -= n
            fout.write(view[:n])
            if on_chunk is not None:
                on_chunk(rel, bytes(view[:n]))
            if (size - left) % FLUSH_STEP < n:
                flush()
    flush()


def _kernel_copy(
    sfd: int,
    dfd: int,
    size: int,
    rel: str,
    on_chunk: OnChunk | None,
    flush: Callable[[], object],
) -> bool:
    """Copy with ``copy_file_range``, feeding ``on_chunk`` from the copy; False when the
    kernel refuses before anything is copied (the caller then copies through Python)."""
    copy_range = getattr(os, "copy_file_range", None)
    if copy_range is None:
        return False
    done = 0
    # one chunk per call when someone reads along; bigger steps when nobody does
    step = COPY_CHUNK if on_chunk is not None else COPY_CHUNK * 8
    while done < size:
        try:
            n = copy_range(sfd, dfd, min(size - done, step))
        except OSError:
            if done == 0:
                return False
            raise
        if n == 0:
            break  # shorter than the layout said: the after-check sees the change
        if on_chunk is not None:
            data = os.pread(dfd, n, done)
            if len(data) != n:
                raise _Changed(f"{rel}: the copy read back short")
            on_chunk(rel, data)
        done += n
        if done % FLUSH_STEP < n:
            flush()
    flush()
    return True


def _feed(fd: int, rel: str, on_chunk: OnChunk) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    with open(os.dup(fd), "rb", buffering=0) as f:
        while chunk := f.read(COPY_CHUNK):
            on_chunk(rel, chunk)


def _describe_change(before: Layout, after: Layout) -> str:
    b = {r: rest for r, *rest in before}
    a = {r: rest for r, *rest in after}
    for rel in sorted(set(a) | set(b)):
        if rel not in a:
            return f"{rel} vanished"
        if rel not in b:
            return f"{rel} appeared"
        if a[rel] != b[rel]:
            return f"{rel} was rewritten"
    return "layout changed"


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _check_key(key: str) -> None:
    if (
        not key
        or key in (".", "..")
        or "/" in key
        or "\0" in key
        or key.startswith(".")
        or len(key) > 200
    ):
        raise InputError(f"bad snapshot key {key!r}", code="invalid_path")
