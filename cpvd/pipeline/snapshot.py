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
from cpvd.pipeline.copyfile import Changed as _Changed
from cpvd.pipeline.copyfile import OnChunk, feed, stream
from cpvd.pipeline.writeback import Writeback, sync_tree
from cpvd.retry import Backoff
from cpvd.storage.nofollow import DIR_FLAGS as _DIR_FLAGS
from cpvd.storage.nofollow import FILE_FLAGS as _FILE_FLAGS
from cpvd.storage.nofollow import Swapped, TreeFile, list_tree, open_file, open_top

log = logging.getLogger(__name__)

#: ioctl FICLONE: make ``dst_fd`` share ``src_fd``'s extents (btrfs, XFS, bcachefs, …)
FICLONE = 0x40049409
#: attempts when the source changes during the copy, before giving up
COPY_ATTEMPTS = 4
#: the pause before each new attempt: 0.1 s, 0.2 s, 0.4 s
RETRY = Backoff(base=0.1, cap=1.0)
STAGING_PREFIX = ".staging-"

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
        #: set by :meth:`close`: copies waiting for space give up instead of waiting on
        self._closed = False
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
                time.sleep(RETRY.delay(attempt))
                if on_restart is not None:
                    on_restart()
            try:
                listing = self._listing(src)
            except (_Changed, Swapped) as exc:
                last_change = str(exc)
                continue
            need = sum(f.st.st_size for f in listing[1])
            self._reserve(key, need, deadline)
            staging = self.root / f"{STAGING_PREFIX}{key}-{uuid.uuid4().hex[:8]}"
            try:
                staging.mkdir(mode=0o700)
                self._copy(src, staging, listing, on_chunk, on_file)
                last_change = self._still(src, listing)
                if not last_change:
                    if on_layout is not None:
                        on_layout(_as_layout(listing))
                    return self._commit(key, staging, need)
            except (_Changed, Swapped) as exc:
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

    def adopt(self, key: str, staged: Path, name: str) -> Path:
        """Make ``staged`` (a whole copy of one file, alone in a staging directory of this
        store: cpvd.pipeline.follow) the snapshot ``root/key/<name>`` and return its path."""
        _check_key(key)
        if not name or "/" in name or name in (".", ".."):
            raise InputError(f"bad snapshot file name {name!r}", code="invalid_path")
        staging = staged.parent
        if staging.parent != self.root or not staging.name.startswith(STAGING_PREFIX):
            raise InputError(f"{staged} is not staged in {self.root}", code="invalid_path")
        final = staging / name
        if final != staged:
            os.rename(staged, final)
        sync_tree([final], [staging])
        return self._commit(key, staging, os.lstat(final).st_size)

    def close(self) -> None:
        """Shutdown: a copy waiting for space (:meth:`take`) raises at once instead of
        keeping its thread, and the daemon's exit, waiting for space that may never come."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def hold_partial(self, name: str, nbytes: int) -> None:
        """Count ``nbytes`` of a copy being built outside :meth:`take` (a followed file)
        against the limit under ``name``; 0 stops counting it."""
        with self._cond:
            if nbytes > 0:
                self._reserved[name] = nbytes
            else:
                self._reserved.pop(name, None)
            self._cond.notify_all()

    def unchanged(self, src: Path, layout: Layout) -> bool:
        """Is ``src`` still, file by file (path, size, mtime, inode), what ``layout`` says?"""
        try:
            return self._layout(Path(src)) == layout
        except (CpvError, _Changed, Swapped, OSError):
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
                if self._closed:
                    raise SnapshotSpaceTimeout(
                        f"snapshot store {self.root} is full and the daemon is stopping"
                    )
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
        sync_tree([], [self.root])  # the rename itself: the queue will point at root/key
        with self._cond:
            self._sizes[key] = size
        return self.path(key) or final

    def _layout(self, src: Path) -> Layout:
        """What the source is now, file by file; NotFound when it is gone."""
        return _as_layout(self._listing(src))

    def _listing(self, src: Path) -> _Listing:
        """``src``'s own lstat and its files, listed without following any symlink
        (cpvd.storage.nofollow); NotFound when it is gone, InputError for a symlink."""
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            raise NotFound(f"{src}: checkpoint vanished before it was snapshotted") from None
        except OSError as exc:
            raise InputError(f"{src}: cannot access: {exc.strerror}", code="invalid_path") from None
        if stat.S_ISREG(st.st_mode):
            return st, [TreeFile(src.name, (src.name,), st)]
        if not stat.S_ISDIR(st.st_mode):
            what = "a symlink (version the file it points to)" if stat.S_ISLNK(st.st_mode) else (
                "not a regular file or directory"
            )
            raise InputError(f"{src}: {what}", code="invalid_path")
        try:
            fd = open_top(src, _DIR_FLAGS, st)
            try:
                return st, list_tree(src, fd)
            finally:
                os.close(fd)
        except (FileNotFoundError, Swapped, InputError) as exc:
            if not os.path.lexists(src):
                raise NotFound(f"{src}: checkpoint vanished while snapshotted") from None
            if isinstance(exc, InputError):
                raise
            raise _Changed(str(exc)) from None

    def _still(self, src: Path, before: _Listing) -> str:
        """'' when ``src`` is still exactly what ``before`` listed, else what changed."""
        try:
            after = self._listing(src)
        except (InputError, NotFound) as exc:  # now a symlink, or gone: retry (and see)
            return exc.message
        if _keys(after) == _keys(before):
            return ""
        return _describe_change(_as_layout(before), _as_layout(after)) if after[1] else (
            "layout changed"
        )

    def _copy(
        self,
        src: Path,
        staging: Path,
        listing: _Listing,
        on_chunk: OnChunk | None,
        on_file: OnFile | None,
    ) -> None:
        """Copy what ``listing`` lists, opening each file without following a link and only
        if it is the very file listed (a swap is a change: retried, never copied)."""
        root_st, files = listing
        dst = staging / src.name
        if stat.S_ISREG(root_st.st_mode):
            self._copy_file(_source(lambda: open_top(src, _FILE_FLAGS, root_st)), dst, files[0],
                            on_chunk)
            if on_file is not None:
                on_file(files[0].rel, dst)
            sync_tree([dst], [staging])
            return
        root_fd = _source(lambda: open_top(src, _DIR_FLAGS, root_st))
        dirs = {staging, dst}
        copies = []
        try:
            dst.mkdir(mode=0o700)
            for f in files:
                target = dst.joinpath(*f.rel.split("/"))
                for parent in reversed(target.relative_to(dst).parents):
                    if parent.parts and dst / parent not in dirs:
                        (dst / parent).mkdir(mode=0o700, exist_ok=True)
                        dirs.add(dst / parent)
                sfd = _source(functools.partial(open_file, root_fd, f))
                self._copy_file(sfd, target, f, on_chunk)
                copies.append(target)
                if on_file is not None:
                    on_file(f.rel, target)
        finally:
            os.close(root_fd)
        sync_tree(copies, sorted(dirs))

    def _copy_file(
        self, sfd: int, dst: Path, f: TreeFile, on_chunk: OnChunk | None
    ) -> None:
        """Copy the file open as ``sfd`` (closed here), listed as ``f``, to ``dst``."""
        rel, size, mtime_ns = f.rel, f.st.st_size, f.st.st_mtime_ns
        try:
            st = os.fstat(sfd)
            if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                raise _Changed(f"{rel} changed before it was copied")
            dfd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                if self._reflink(sfd, dfd):
                    if on_chunk is not None:
                        feed(dfd, rel, on_chunk)  # read the clone: exactly the snapshot
                else:
                    flush = functools.partial(self.writeback.start, dfd, size)
                    stream(sfd, dfd, size, rel, on_chunk, flush)
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




#: the source's own lstat and its files (cpvd.storage.nofollow)
_Listing = tuple[os.stat_result, list[TreeFile]]


def _as_layout(listing: _Listing) -> Layout:
    return [(f.rel, f.st.st_size, f.st.st_mtime_ns, f.st.st_ino) for f in listing[1]]


def _keys(listing: _Listing) -> tuple[object, ...]:
    st = listing[0]
    return (st.st_dev, st.st_ino, stat.S_IFMT(st.st_mode), *(f.key() for f in listing[1]))


def _source(opener: Callable[[], int]) -> int:
    """Open a source file or directory; it vanishing is a change like any other."""
    try:
        return opener()
    except FileNotFoundError as exc:
        raise _Changed(f"{exc.filename or 'a file'} vanished") from None


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
