"""Checks on names and paths read from the registry, and writes that stay below a target.

Anyone who can push to the registry remote writes its tag messages, pointers, ``dvc.yaml``
and (through the storage) its ``.dir`` manifests, so every name or path taken from them is
checked here before it is joined to a directory on this machine. The checks are pure and
raise :class:`UnsafeInput` (a :class:`~cpvd.errors.CpvError`), so an API call on a bad
version fails with a 4xx, never a 5xx.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
from pathlib import Path

from cpvctl.protocol import ProtocolError, validate_name
from cpvd.errors import CpvError

_MD5 = re.compile(r"[0-9a-f]{32}")
_VERSION = re.compile(r"v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")
#: control characters: C0, DEL and C1 (a newline in a name forges log lines and trailers)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_COMPONENT = 255
MAX_RELPATH = 4096


class UnsafeInput(CpvError):
    """A name, path or hash read from the registry is not one cpvd would have written."""

    code = "conflict"


def safe_component(name: object, what: str = "name") -> str:
    """``name`` if it is one path component cpvd may create below a directory."""
    if not isinstance(name, str) or name in ("", ".", ".."):
        raise UnsafeInput(f"{what} {name!r} is not a file or directory name")
    if "/" in name or "\\" in name or _CONTROL.search(name) or len(name) > MAX_COMPONENT:
        raise UnsafeInput(f"{what} {name!r} is not a single, printable path component")
    return name


def safe_relpath(rel: object, what: str = "path") -> str:
    """``rel`` if it is a normalised relative posix path with no ``..`` and no empty parts."""
    if not isinstance(rel, str) or not rel or len(rel) > MAX_RELPATH:
        raise UnsafeInput(f"{what} {rel!r} is not a relative path")
    if rel.startswith("/") or posixpath.normpath(rel) != rel:
        raise UnsafeInput(f"{what} {rel!r} is absolute or not normalised")
    for part in rel.split("/"):
        try:
            safe_component(part, what)
        except UnsafeInput as exc:
            raise UnsafeInput(f"{what} {rel!r} is unsafe: {exc.message}") from None
    return rel


def safe_md5(value: object, *, is_dir: bool | None = None, what: str = "md5") -> str:
    """A DVC md5: 32 lowercase hex digits, plus ``.dir`` for a directory (``is_dir=None``
    accepts either)."""
    if isinstance(value, str):
        stem, dot_dir = (value[:-4], True) if value.endswith(".dir") else (value, False)
        if _MD5.fullmatch(stem) and is_dir in (None, dot_dir):
            return value
    raise UnsafeInput(f"{what} {value!r} is not a DVC md5")


def safe_count(value: object, what: str = "size") -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise UnsafeInput(f"{what} {value!r} is not a non-negative integer")


def safe_text(value: object, what: str) -> str:
    """Printable text (no control characters) of a sane length, for display fields."""
    if not isinstance(value, str) or _CONTROL.search(value) or len(value) > MAX_RELPATH:
        raise UnsafeInput(f"{what} {str(value)[:100]!r} is not printable text")
    return value


def safe_version(value: object) -> str:
    """``vMAJOR.MINOR.PATCH`` exactly, as in a version tag."""
    if isinstance(value, str) and _VERSION.fullmatch(value):
        return value
    raise UnsafeInput(f"version {str(value)[:100]!r} is not vMAJOR.MINOR.PATCH")


def safe_artifact(name: object) -> str:
    """An artifact name by GTO's rules (the same check the API applies to requests)."""
    try:
        return validate_name(name)
    except ProtocolError as exc:
        raise UnsafeInput(exc.message) from exc


def child_of(base: Path, name: str) -> Path:
    """``base / name`` once ``name`` is one safe component and the result sits in ``base``."""
    safe_component(name)
    real = Path(os.path.realpath(base))
    dest = real / name
    if dest.parent != real:
        raise UnsafeInput(f"{name!r} would be written outside {base}")
    return dest


def create_below(root: Path, rel: str) -> int:
    """Create the file ``root/rel`` (and its parent directories) and return a writable fd.

    Every directory is opened with ``O_NOFOLLOW`` relative to its parent's descriptor, and
    the file with ``O_CREAT|O_EXCL|O_NOFOLLOW``, so neither a symlink planted in ``root``
    nor a path in a manifest can make the write land outside it.
    """
    parts = safe_relpath(rel).split("/")
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    fd = os.open(root, flags)
    try:
        for part in parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o777, dir_fd=fd)
            nxt = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nxt
        create = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(parts[-1], create, 0o666, dir_fd=fd)
    finally:
        os.close(fd)
