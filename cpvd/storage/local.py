"""A DVC remote in a local directory (the embedded default: no cloud account needed).

Writes are atomic: bytes go to a temp name in the object's own directory, are fsynced, then
renamed over the final name, and the directory is fsynced, so a crash leaves either the whole
object or a temp file that ``abort_incomplete_uploads`` sweeps. Temp names start with
``.cpv-tmp-``, which DVC never reads (it only looks at ``<2 hex>/<30 hex>[.dir]``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from cpvd.errors import ConfigError, IntegrityError, NotFound, StorageError
from cpvd.storage.base import (
    DEFAULT_ABANDON_AGE,
    MARKER_NAME,
    Progress,
    StoredObject,
    bytes_digest,
    matches_stream,
    md5_of_key,
    object_key,
)
from cpvd.storage.nofollow import DIR_FLAGS, FILE_FLAGS
from cpvd.storage.rate import TokenBucket, metered

TMP_PREFIX = ".cpv-tmp-"
_COPY_CHUNK = 8 * 1024 * 1024


class LocalStorage:
    """Objects under ``root/files/md5/``; see the module docstring for the write protocol."""

    #: the daemon's upload cap (cpvd.storage.rate), set by ``open_storage``; None: no cap
    rate: TokenBucket | None = None

    def __init__(self, root: Path | str) -> None:
        p = Path(os.path.expanduser(str(root)))
        if not p.is_absolute():
            raise ConfigError(f"[storage] url: local storage must be an absolute path: {root}")
        self.root = p

    # -- describe / check -------------------------------------------------------------

    def describe(self) -> str:
        return str(self.root)

    def check(self) -> None:
        """Create the root when missing and prove it is writable with a throwaway file."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"local storage {self.root}: cannot create directory: {exc.strerror}"
            ) from None
        if not self.root.is_dir():
            raise StorageError(f"local storage {self.root}: not a directory")
        probe = self.root / f"{TMP_PREFIX}check-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StorageError(f"local storage {self.root}: not writable: {exc.strerror}") from None

    # -- reads ------------------------------------------------------------------------

    def path_of(self, md5: str) -> Path:
        """Where the object lives on disk (tests and ``cpvctl verify`` use it)."""
        return self.root / object_key(md5)

    def size_of(self, md5: str) -> int | None:
        try:
            return self.path_of(md5).stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"local storage {self.root}: stat failed: {exc}") from None

    def has(self, md5: str) -> bool:
        return self.size_of(md5) is not None

    def open_object(self, md5: str) -> BinaryIO:
        path = self.path_of(md5)
        try:
            return path.open("rb")
        except FileNotFoundError:
            raise NotFound(f"object {md5} not in storage {self.root}") from None
        except OSError as exc:
            raise StorageError(f"local storage {self.root}: cannot read {md5}: {exc}") from None

    def verify(self, md5: str) -> bool:
        try:
            return matches_stream(md5, self.open_object(md5))
        except NotFound:
            return False

    # -- writes -----------------------------------------------------------------------

    def put_file(self, md5: str, src: Path, size: int, progress: Progress | None = None) -> None:
        if self.size_of(md5) == size:
            return
        dest = self.path_of(md5)
        try:
            with open(src, "rb") as fin:
                if os.fstat(fin.fileno()).st_size != size:
                    raise IntegrityError(f"{src}: size is no longer {size}; changed since hashed")
                capped = metered(progress, self.rate)
                self._atomic_write(dest, lambda fout: _copy(fin, fout, size, capped))
        except FileNotFoundError as exc:
            if exc.filename is not None and Path(exc.filename) == Path(src):
                raise IntegrityError(f"{src}: vanished before upload") from None
            raise StorageError(f"local storage {self.root}: write failed: {exc}") from None
        except OSError as exc:
            raise StorageError(f"local storage {self.root}: write failed: {exc}") from None

    def put_bytes(self, md5: str, data: bytes) -> None:
        bytes_digest(md5, data)
        if self.size_of(md5) == len(data):
            return
        try:
            self._atomic_write(self.path_of(md5), lambda fout: fout.write(data))
        except OSError as exc:
            raise StorageError(f"local storage {self.root}: write failed: {exc}") from None

    def _atomic_write(self, dest: Path, fill: Callable[[BinaryIO], object]) -> None:
        """Temp file in ``dest``'s directory -> fill -> fsync -> rename -> fsync dir."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f"{TMP_PREFIX}{dest.name}-{uuid.uuid4().hex[:12]}"
        try:
            with open(tmp, "xb") as fout:
                fill(fout)
                fout.flush()
                os.fsync(fout.fileno())
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(dest.parent)

    def abort_incomplete_uploads(self, older_than: float = DEFAULT_ABANDON_AGE) -> int:
        """Delete temp files not modified for ``older_than`` seconds (a live writer keeps
        touching its temp file, so age since last write is a safe test)."""
        base = self.root / "files" / "md5"
        if not base.is_dir():
            return 0
        cutoff = time.time() - older_than
        removed = 0
        for tmp in base.glob(f"*/{TMP_PREFIX}*"):
            try:
                if tmp.stat().st_mtime <= cutoff:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StorageError(
                    f"local storage {self.root}: cannot remove {tmp}: {exc}"
                ) from None
        return removed

    # -- garbage collection (cpvd.lifecycle) ---------------------------------------------

    def list_objects(self) -> Iterator[StoredObject]:
        """Every object in the layout, with its size and mtime; links and temp files are
        skipped (they are not objects DVC reads, and gc never deletes them)."""
        base = self._open_layout()
        if base is None:
            return
        try:
            for sub in sorted(_entries(base, stat.S_IFDIR)):
                fd = _open_dir_at(base, sub)
                if fd is None:
                    continue
                try:
                    yield from _objects_in(fd, sub)
                finally:
                    os.close(fd)
        finally:
            os.close(base)

    def delete_objects(self, md5s: Iterable[str]) -> None:
        """Unlink each object by name inside its own directory, opened without following a
        link, so a link planted in the layout never makes gc delete something elsewhere."""
        base = self._open_layout()
        if base is None:
            return
        try:
            for md5 in md5s:
                key = object_key(md5).split("/")  # files, md5, <2 hex>, <rest>
                fd = _open_dir_at(base, key[2])
                if fd is None:
                    continue
                try:
                    os.unlink(key[3], dir_fd=fd)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise StorageError(
                    f"local storage {self.root}: cannot delete {md5}: {exc}"
                ) from None
                finally:
                    os.close(fd)
        finally:
            os.close(base)

    def read_marker(self) -> bytes | None:
        try:
            fd = os.open(self.root / MARKER_NAME, FILE_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(
                    f"local storage {self.root}: cannot read {MARKER_NAME}: {exc}"
                ) from None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise StorageError(f"local storage {self.root}: {MARKER_NAME} is not a file")
            return f.read(1 << 16)

    def write_marker(self, data: bytes) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._atomic_write(self.root / MARKER_NAME, lambda fout: fout.write(data))
        except OSError as exc:
            raise StorageError(
                    f"local storage {self.root}: cannot write {MARKER_NAME}: {exc}"
                ) from None

    def _open_layout(self) -> int | None:
        """``root/files/md5`` opened without following a link below the root; None if absent."""
        try:
            fd = os.open(self.root, DIR_FLAGS & ~os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"local storage {self.root}: cannot open: {exc}") from None
        for name in ("files", "md5"):
            sub = _open_dir_at(fd, name)
            os.close(fd)
            if sub is None:
                return None
            fd = sub
        return fd

    def dvc_remote_settings(self) -> dict[str, str]:
        return {"url": str(self.root)}

    def close(self) -> None:
        """Nothing to release."""


def _copy(fin: BinaryIO, fout: BinaryIO, size: int, progress: Progress | None) -> None:
    """Copy exactly ``size`` bytes in big chunks; the kernel does the work where it can
    (``copy_file_range``: reflinks on btrfs/XFS, in-kernel copy elsewhere)."""
    in_fd, out_fd = fin.fileno(), fout.fileno()
    copied = 0
    use_cfr = hasattr(os, "copy_file_range")
    while copied < size:
        want = min(_COPY_CHUNK, size - copied)
        n = 0
        if use_cfr:
            try:
                n = os.copy_file_range(in_fd, out_fd, want)
            except OSError:
                use_cfr = False  # cross-device or unsupported: plain copy below
        if not use_cfr:
            data = os.read(in_fd, want)
            n = len(data)
            view = memoryview(data)
            while view:
                view = view[os.write(out_fd, view) :]
        if n == 0:
            raise IntegrityError(
                f"source ended after {copied} of {size} bytes; changed since hashed"
            )
        copied += n
        if progress is not None:
            progress(n)
    if os.read(in_fd, 1):
        raise IntegrityError(f"source is longer than {size} bytes; changed since hashed")


def _entries(dir_fd: int, kind: int) -> list[str]:
    """Names in the directory open as ``dir_fd`` whose own type (links not followed) is ``kind``."""
    out = []
    with os.scandir(dir_fd) as it:
        for e in it:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_IFMT(e.stat(follow_symlinks=False).st_mode) == kind:
                    out.append(e.name)
    return out


def _open_dir_at(dir_fd: int, name: str) -> int | None:
    """Directory ``name`` below ``dir_fd`` (not a link); None when absent or not a directory."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise StorageError(f"local storage: cannot open {name}: {exc}") from None


def _objects_in(fd: int, sub: str) -> Iterator[StoredObject]:
    with os.scandir(fd) as it:
        for e in it:
            md5 = md5_of_key(sub, e.name)
            if md5 is None:
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield StoredObject(md5, st.st_size, st.st_mtime)


def _fsync_dir(path: Path) -> None:
    """Make the rename durable; some filesystems refuse fsync on directories."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
