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

log = logging.getLogger(__name__)

#: ``(relpath, md5, size, path of the copy)``: one file of a snapshot is hashed
OnHashed = Callable[[str, str, int, Path], None]

#: read size: large enough that md5 runs at memory speed, small enough to never matter in RAM
CHUNK_SIZE = 8 * 1024 * 1024

#: names DVC ignores inside a tracked directory by default (dvc/ignore.py)
_IGNORED_ANY = frozenset({".git"})
_IGNORED_DIRS = frozenset({".git", ".hg", ".dvc"})


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
    (a writer still at work), InputError when it cannot be opened.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputError(f"{p}: no such file", code="invalid_path") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc.strerror}", code="invalid_path") from None
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
    """Every file DVC would track under directory ``root``: ``(posix relpath, real path)``.

    Sorted by relpath. Applies the symlink rules in the module docstring.
    """
    real_root = os.path.realpath(root)
    out: list[tuple[str, Path]] = []

    def onerror(exc: OSError) -> None:
        raise InputError(
            f"{exc.filename}: cannot read directory: {exc.strerror}", code="invalid_path"
        )

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        rel_dir = os.path.relpath(dirpath, root)
        kept_dirs = []
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if name in _IGNORED_DIRS:
                continue
            if os.path.islink(full):
                _check_link(full, real_root, root)
                raise InputError(
                    f"{full}: symlink to a directory inside a checkpoint is not supported "
                    "(DVC would skip it); replace it with a real directory",
                    code="invalid_path",
                )
            kept_dirs.append(name)
        dirnames[:] = kept_dirs
        for name in filenames:
            if name in _IGNORED_ANY:
                continue
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                target = _check_link(full, real_root, root)
                if not os.path.isfile(target):
                    raise InputError(
                        f"{full}: symlink to something that is not a regular file",
                        code="invalid_path",
                    )
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            out.append((rel.replace(os.sep, "/"), Path(full)))
    out.sort(key=lambda t: t[0])
    return out


def _check_link(link: str, real_root: str, root: Path) -> str:
    """Resolve ``link``; refuse it when dangling or when it leaves the checkpoint root."""
    target = os.path.realpath(link)
    if not os.path.exists(target):
        raise InputError(f"{link}: dangling symlink in checkpoint", code="invalid_path")
    if os.path.commonpath([real_root, target]) != real_root:
        raise InputError(
            f"{link}: symlink resolves outside the checkpoint {root} (to {target})",
            code="invalid_path",
        )
    return target


def hash_checkpoint(path: Path, progress: Progress | None = None) -> ContentHash:
    """Hash a checkpoint file or directory the way ``dvc add`` would record it.

    ``progress`` receives byte counts as data is hashed (across all files of a directory).
    Raises InputError for a missing/unreadable path or a refused symlink, IntegrityError when
    a file changed while it was read.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"{p}: no such file or directory", code="invalid_path") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot access: {exc.strerror}", code="invalid_path") from None
    if stat.S_ISREG(st.st_mode):
        return ContentHash.of_file(FileEntry(p.name, *md5_file(p, progress)))
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{p}: not a regular file or directory", code="invalid_path")
    return ContentHash.of_dir(
        FileEntry(rel, *md5_file(full, progress)) for rel, full in list_files(p)
    )


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
        except (OSError, InputError):
            return None
        if seen:  # bytes for a file the snapshot does not hold
            return None
        if snapshot.is_file():
            return ContentHash.of_file(entries[0])
        return ContentHash.of_dir(entries)


_EMPTY_MD5 = hashlib.md5(b"").hexdigest()
