"""A DVC remote in a local directory (the embedded default: no cloud account needed).

Writes are atomic: bytes go to a temp name in the object's own directory, are fsynced, then
renamed over the final name, and the directory is fsynced, so a crash leaves either the whole
object or a temp file that ``abort_incomplete_uploads`` sweeps. Temp names start with
``.cpv-tmp-``, which DVC never reads (it only looks at ``<2 hex>/<30 hex>[.dir]``).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from cpvd.errors import ConfigError, IntegrityError, NotFound, StorageError
from cpvd.storage.base import (
    DEFAULT_ABANDON_AGE,
    Progress,
    bytes_digest,
    matches_stream,
    object_key,
)

TMP_PREFIX = ".cpv-tmp-"
_COPY_CHUNK = 8 * 1024 * 1024


class LocalStorage:
    """Objects under ``root/files/md5/``; see the module docstring for the write protocol."""

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
                self._atomic_write(dest, lambda fout: _copy(fin, fout, size, progress))
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
