"""Content hashing that gives exactly DVC 3's md5 values and ``.dir`` manifests.

Why our own code instead of ``dvc_data``: the daemon hashes a private snapshot once, in a
worker thread, with progress and a "changed while hashed" check, and must not take the
registry's DVC lock for it. Compatibility with DVC 3 (``hash: md5``) was checked against the
real ``dvc add`` (see tests/unit/test_hashing.py):

* a file's md5 is the plain md5 of its bytes (DVC 3 no longer applies dos2unix to text);
* a directory's manifest is ``json.dumps(sorted([{"md5", "relpath"}...]), sort_keys=True)``
  (no size/isexec meta), sorted by the posix relpath string, and its id is the md5 of those
  bytes followed by ``.dir``; its size is the sum of file sizes and ``nfiles`` the file count;
* empty directories contribute nothing; like DVC's default ``.dvcignore`` patterns, entries
  named ``.git`` and directories named ``.hg``/``.dvc`` are left out (DVC would ignore them in a
  workspace, so including them would make ``dvc status`` report a change after a pull).

Symlinks inside a directory checkpoint: a link to a file inside the checkpoint root is followed
(its bytes are stored under the link's relpath, as ``dvc add`` does). A link that resolves
outside the root, a dangling link, and a link to a directory are refused with
``InputError(code="invalid_path")``: DVC silently skips linked directories, and silently
dropping part of a checkpoint is worse than refusing it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import queue
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpvd.errors import InputError, IntegrityError
from cpvd.storage.base import Progress
from cpvd.storage.nofollow import (
    DIR_FLAGS,
    FILE_FLAGS,
    Swapped,
    list_tree,
    open_file,
    open_top,
)

log = logging.getLogger(__name__)

#: ``(relpath, md5, size, path of the copy)``: one file of a snapshot is hashed
OnHashed = Callable[[str, str, int, Path], None]

#: read size: large enough that md5 runs at memory speed, small enough to never matter in RAM
CHUNK_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True)
class FileEntry:
    """One file of a checkpoint; ``relpath`` is posix, relative to the checkpoint root."""

    relpath: str
    md5: str
    size: int


@dataclass(frozen=True)
class ContentHash:
    """What DVC records for an output, plus what we need to upload it.

    ``md5`` is ``"<hex>.dir"`` for directories, exactly as in a ``.dvc`` file. A file
    checkpoint has one entry whose relpath is the file's name; ``manifest`` holds the
    ``.dir`` object's bytes for directories and is None for files.
    """

    md5: str
    size: int
    nfiles: int
    is_dir: bool
    entries: tuple[FileEntry, ...]
    manifest: bytes | None

    @classmethod
    def of_file(cls, entry: FileEntry) -> ContentHash:
        """A file checkpoint: its one entry is the whole content."""
        return cls(entry.md5, entry.size, 1, False, (entry,), None)

    @classmethod
    def of_dir(cls, entries: Iterable[FileEntry]) -> ContentHash:
        """A directory checkpoint: the ``.dir`` manifest of its files names it."""
        files = tuple(entries)
        dir_md5, manifest = dir_manifest(files)
        return cls(dir_md5, sum(e.size for e in files), len(files), True, files, manifest)


def md5_file(path: Path | str, progress: Progress | None = None) -> tuple[str, int]:
    """Stream ``path`` through md5; returns ``(hexdigest, bytes read)``.

    ``progress`` is called with the number of bytes of each chunk as it is hashed.
    Raises IntegrityError when the file's size or mtime changed while it was being read
    (a writer still at work), InputError when it cannot be opened or is a symlink.
    """
    p = Path(path)
    try:
        fd = os.open(p, FILE_FLAGS)
    except FileNotFoundError:
        raise InputError(f"{p}: no such file", code="invalid_path") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc.strerror}", code="invalid_path") from None
    return _md5_fd(fd, p, progress)


def _md5_fd(fd: int, p: Path, progress: Progress | None) -> tuple[str, int]:
    """md5 of the file open as ``fd`` (closed here); ``p`` names it in errors."""
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise InputError(f"{p}: not a regular file", code="invalid_path")
        _advise_sequential(fd)
        h = hashlib.md5()
        buf = bytearray(CHUNK_SIZE)
        view = memoryview(buf)
        total = 0
        expected = before.st_size
        with open(fd, "rb", buffering=0, closefd=False) as f:
            # Read only the size seen at open: a writer that keeps appending cannot keep us
            # here forever; the fstat below then reports the change.
            while total < expected:
                n = f.readinto(view[: min(len(view), expected - total)])
                if not n:
                    break
                h.update(view[:n])
                total += n
                if progress is not None:
                    progress(n)
        after = os.fstat(fd)
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc.strerror}", code="invalid_path") from None
    finally:
        os.close(fd)
    if (
        after.st_size != before.st_size
        or after.st_mtime_ns != before.st_mtime_ns
        or total != after.st_size
    ):
        raise IntegrityError(f"{p}: changed while hashed (size or mtime moved; still written?)")
    return h.hexdigest(), total


def _advise_sequential(fd: int) -> None:
    """Tell the kernel we read front to back (bigger readahead); harmless where unsupported."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        with contextlib.suppress(OSError):
            advise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)


def dir_manifest(entries: Iterable[FileEntry]) -> tuple[str, bytes]:
    """DVC 3's ``.dir`` object for ``entries``: returns ``("<md5>.dir", manifest bytes)``."""
    items = sorted(
        ({"md5": e.md5, "relpath": e.relpath} for e in entries),
        key=lambda d: d["relpath"],
    )
    data = json.dumps(items, sort_keys=True).encode("utf-8")
    return hashlib.md5(data).hexdigest() + ".dir", data


def list_files(root: Path) -> list[tuple[str, Path]]:
    """Every file DVC would track under directory ``root``: ``(posix relpath, path)``.

    Sorted by relpath. Applies the symlink rules in the module docstring. IntegrityError when
    the tree changed while it was listed.
    """
    p = Path(root)
    try:
        fd = open_top(p, DIR_FLAGS, os.lstat(p))
        try:
            files = list_tree(p, fd)
        finally:
            os.close(fd)
    except Swapped as exc:
        raise IntegrityError(f"{p}: changed while listed ({exc})") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read directory: {exc.strerror}", "invalid_path") from None
    return [(f.rel, p.joinpath(*f.rel.split("/"))) for f in files]


def hash_checkpoint(path: Path, progress: Progress | None = None) -> ContentHash:
    """Hash a checkpoint file or directory the way ``dvc add`` would record it.

    ``progress`` receives byte counts as data is hashed (across all files of a directory).
    Raises InputError for a missing/unreadable path or a refused symlink, IntegrityError when
    a file changed while it was read or was swapped for another one (cpvd.storage.nofollow:
    no link is ever followed, so a swap can never hash outside bytes).
    """
    p = Path(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        raise InputError(f"{p}: no such file or directory", code="invalid_path") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot access: {exc.strerror}", code="invalid_path") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise InputError(f"{p}: not a regular file or directory", code="invalid_path")
    try:
        if stat.S_ISREG(st.st_mode):
            fd = _opened(p, lambda: open_top(p, FILE_FLAGS, st))
            return ContentHash.of_file(FileEntry(p.name, *_md5_fd(fd, p, progress)))
        root_fd = _opened(p, lambda: open_top(p, DIR_FLAGS, st))
        try:
            entries = []
            for f in list_tree(p, root_fd):
                full = p.joinpath(*f.rel.split("/"))
                fd = _opened(full, functools.partial(open_file, root_fd, f))
                entries.append(FileEntry(f.rel, *_md5_fd(fd, full, progress)))
        finally:
            os.close(root_fd)
    except Swapped as exc:
        raise IntegrityError(f"{p}: changed while hashed ({exc})") from None
    return ContentHash.of_dir(entries)


def _opened(p: Path, opener: Callable[[], int]) -> int:
    """``opener()``, with OSErrors as InputErrors naming ``p`` (Swapped passes through)."""
    try:
        return opener()
    except FileNotFoundError:
        raise Swapped(f"{p} vanished") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc.strerror}", code="invalid_path") from None


class StreamHasher:
    """Hashes a checkpoint from the bytes a snapshot copy streams past it.

    Why: hashing the snapshot after copying it read every byte twice; fed by
    ``SnapshotStore.take(on_chunk=..., on_restart=...)`` the md5s are done when the copy is,
    and a hashing thread lets md5 run beside the copy's reads and writes (two cores: the copy
    then costs about what md5 alone costs). ``result`` checks what it saw against the
    snapshot's file list and sizes and returns None on any doubt, so a caller falls back to
    :func:`hash_checkpoint`; when it returns a value it equals ``hash_checkpoint(snapshot)``.
    Memory: at most ``QUEUE_CHUNKS`` chunks wait for the hashing thread.

    ``on_hashed(relpath, md5, size, path)``, when given, is called on the hashing thread as
    soon as a file's md5 is final (``on_file`` was called for it): the caller can start
    storing that file while later files are still being copied.
    """

    QUEUE_CHUNKS = 4

    def __init__(self, on_hashed: OnHashed | None = None) -> None:
        self._on_hashed = on_hashed
        self._queue: queue.Queue[tuple[str, bytes | Path] | None] = queue.Queue(self.QUEUE_CHUNKS)
        self._files: dict[str, tuple[Any, int]] = {}  # relpath -> (md5 object, bytes)
        self._order: list[str] = []
        self._thread = threading.Thread(target=self._run, name="cpv-hash", daemon=True)
        self._thread.start()
        self._closed = False

    def on_chunk(self, rel: str, data: bytes) -> None:
        self._queue.put((rel, data))

    def on_restart(self) -> None:
        self._queue.put(("", b""))  # marker: forget everything seen so far
        self._queue.join()

    def on_file(self, rel: str, path: Path | None) -> None:
        """``rel`` is copied whole to ``path`` (``SnapshotStore.take(on_file=...)``); its
        md5 goes to ``on_hashed`` with ``path`` once the hashing thread has seen every chunk.
        ``path`` must outlive the snapshot's staging area (a link); None skips the file."""
        if self._on_hashed is not None and path is not None:
            self._queue.put((rel, path))

    def _hashed(self, rel: str, path: Path) -> None:
        entry = self._files.get(rel)
        md5, size = (entry[0].hexdigest(), entry[1]) if entry else (_EMPTY_MD5, 0)
        assert self._on_hashed is not None
        try:
            self._on_hashed(rel, md5, size, path)
        except Exception:  # a failed early start must never break the hash
            log.exception("on_hashed failed for %s", rel)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                rel, data = item
                if not rel:
                    self._files.clear()
                    self._order.clear()
                    continue
                if isinstance(data, Path):
                    self._hashed(rel, data)
                    continue
                entry = self._files.get(rel)
                if entry is None:
                    self._order.append(rel)
                    entry = (hashlib.md5(), 0)
                entry[0].update(data)
                self._files[rel] = (entry[0], entry[1] + len(data))
            finally:
                self._queue.task_done()

    def close(self) -> None:
        """Stop the hashing thread (idempotent); ``result`` calls it."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()

    def result(self, snapshot: Path) -> ContentHash | None:
        """The content hash of ``snapshot`` from the streamed bytes, or None when in doubt."""
        self.close()
        seen = {rel: (h.hexdigest(), size) for rel, (h, size) in self._files.items()}
        if self._order != sorted(self._order):
            return None
        try:
            is_file = snapshot.is_file()
            listing = [(snapshot.name, snapshot)] if is_file else list_files(snapshot)
            entries = []
            for rel, full in listing:
                size = os.stat(full).st_size
                md5, got = seen.pop(rel, (_EMPTY_MD5, 0))  # an empty file streams no chunk
                if got != size:
                    return None
                entries.append(FileEntry(rel, md5, size))
        except (OSError, InputError, IntegrityError):
            return None
        if seen:  # bytes for a file the snapshot does not hold
            return None
        if snapshot.is_file():
            return ContentHash.of_file(entries[0])
        return ContentHash.of_dir(entries)


_EMPTY_MD5 = hashlib.md5(b"").hexdigest()
