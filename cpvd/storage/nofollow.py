"""List and open the files of a checkpoint without ever following a symlink swapped in later.

Why: a checkpoint is listed (``lstat``) and then read; anyone who can write in the watched
directory can replace a listed file, or a directory on its way, by a symlink in between. A
read that follows links then puts outside bytes (files only the daemon's user can read) into
a version. So directories are walked with ``O_DIRECTORY|O_NOFOLLOW`` relative to their
parent's descriptor (never reopened by path), files are opened with ``O_NOFOLLOW`` relative
to theirs, and an opened file must be the very file that was listed (device, inode, type):
otherwise :class:`Swapped`, which the snapshot retries like any other change and the hash
reports as a change, never as the bytes of another file.

Symlinks inside a checkpoint follow cpvd.storage.hashing's rules: a link to a regular file
inside the checkpoint is listed under the link's name but read from its target, walked from
the checkpoint's root the same way (:attr:`TreeFile.parts`).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cpvd.errors import InputError

#: a file to read: no link followed, no blocking on a FIFO swapped in, not inherited
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: what opening a symlink (or a non-directory as a directory) with O_NOFOLLOW reports
_SWAP_ERRNOS = frozenset({errno.ELOOP, errno.ENOTDIR, errno.EMLINK, errno.ENOENT})

#: names DVC ignores inside a tracked directory by default (dvc/ignore.py)
IGNORED_ANY = frozenset({".git"})
IGNORED_DIRS = frozenset({".git", ".hg", ".dvc"})


class Swapped(Exception):
    """A listed file (or a directory on its way) is gone or is no longer the one listed."""


@dataclass(frozen=True)
class TreeFile:
    """One file of a checkpoint as listed: ``rel`` is the posix name its bytes get, ``parts``
    the path of the file actually read (below the checkpoint's root; a link's target), and
    ``st`` that file's ``lstat`` when listed."""

    rel: str
    parts: tuple[str, ...]
    st: os.stat_result

    def key(self) -> tuple[object, ...]:
        """What "the same file, unchanged" compares."""
        st = self.st
        return (self.rel, self.parts, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev,
                stat.S_IFMT(st.st_mode))


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    """Is ``a`` the very file ``b`` was (device, inode, type)?"""
    return (a.st_dev, a.st_ino, stat.S_IFMT(a.st_mode)) == (
        b.st_dev,
        b.st_ino,
        stat.S_IFMT(b.st_mode),
    )


def open_top(path: Path, flags: int, expect: os.stat_result) -> int:
    """Open ``path`` itself, listed as ``expect``, without following a link in its last
    component (the directories above it are the user's: a watch path may sit below a
    symlink). FileNotFoundError when it is gone; Swapped when it is not the listed one."""
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in _SWAP_ERRNOS - {errno.ENOENT}:
            raise Swapped(f"{path.name} was replaced by a symlink") from None
        raise
    return checked(fd, expect, path.name)


def open_file(root_fd: int, f: TreeFile) -> int:
    """Open ``f`` below the directory open as ``root_fd``, component by component, never
    following a link; Swapped unless it is the file that was listed."""
    fd = root_fd
    try:
        for name in f.parts[:-1]:
            parent, fd = fd, _open_at(name, DIR_FLAGS, fd, f.rel)
            if parent != root_fd:
                os.close(parent)
        ffd = _open_at(f.parts[-1], FILE_FLAGS, fd, f.rel)
    finally:
        if fd != root_fd:
            os.close(fd)
    return checked(ffd, f.st, f.rel)


def checked(fd: int, expect: os.stat_result, rel: str) -> int:
    """``fd`` when it is the file ``expect`` describes; else close it and raise Swapped."""
    if not same_file(os.fstat(fd), expect):
        os.close(fd)
        raise Swapped(f"{rel} was replaced by another file")
    return fd


def _open_at(name: str, flags: int, dir_fd: int, rel: str) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _SWAP_ERRNOS:
            raise Swapped(f"{rel} was replaced by a symlink or vanished") from None
        raise


def list_tree(root: Path, root_fd: int) -> list[TreeFile]:
    """Every file DVC would track below directory ``root`` (open as ``root_fd``), sorted by
    relpath. InputError for a link that cannot be kept (cpvd.storage.hashing) or a special
    file; Swapped when a directory vanished or changed kind while it was listed."""
    out: list[TreeFile] = []
    _list_into(root, root_fd, (), os.path.realpath(root), out)
    out.sort(key=lambda t: t.rel)
    return out


def _list_into(
    root: Path, dir_fd: int, here: tuple[str, ...], real_root: str, out: list[TreeFile]
) -> None:
    try:
        entries = sorted((e.name, e.stat(follow_symlinks=False)) for e in os.scandir(dir_fd))
    except FileNotFoundError:
        raise Swapped(f"{'/'.join(here)} vanished while listed") from None
    except OSError as exc:
        full = os.path.join(root, *here)
        raise InputError(
            f"{full}: cannot read directory: {exc.strerror}", code="invalid_path"
        ) from None
    for name, st in entries:
        parts = (*here, name)
        full = os.path.join(root, *parts)
        if stat.S_ISDIR(st.st_mode):
            if name not in IGNORED_DIRS:
                sub = checked(_open_at(name, DIR_FLAGS, dir_fd, full), st, full)
                try:
                    _list_into(root, sub, parts, real_root, out)
                finally:
                    os.close(sub)
        elif name in IGNORED_ANY:
            continue
        elif stat.S_ISLNK(st.st_mode):
            out.append(_link_target(full, "/".join(parts), real_root, root))
        elif stat.S_ISREG(st.st_mode):
            out.append(TreeFile("/".join(parts), parts, st))
        else:
            raise InputError(f"{full}: not a regular file, directory or symlink", "invalid_path")


def _link_target(full: str, rel: str, real_root: str, root: Path) -> TreeFile:
    """A link inside the checkpoint: listed under its own name, read from its target."""
    target = os.path.realpath(full)
    try:
        tst = os.lstat(target)
    except OSError:
        raise InputError(f"{full}: dangling symlink in checkpoint", code="invalid_path") from None
    if os.path.commonpath([real_root, target]) != real_root:
        raise InputError(
            f"{full}: symlink resolves outside the checkpoint {root} (to {target})",
            code="invalid_path",
        )
    if stat.S_ISDIR(tst.st_mode):
        raise InputError(
            f"{full}: symlink to a directory inside a checkpoint is not supported "
            "(DVC would skip it); replace it with a real directory",
            code="invalid_path",
        )
    if not stat.S_ISREG(tst.st_mode):
        raise InputError(f"{full}: symlink to something that is not a regular file", "invalid_path")
    return TreeFile(rel, tuple(Path(os.path.relpath(target, real_root)).parts), tst)
