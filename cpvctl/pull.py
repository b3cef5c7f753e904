"""``cpvctl pull``: download a version through the daemon, all or nothing.

A checkpoint is often gigabytes and a half-written one is worse than none (a training script
would load it), so every file is streamed to a hidden temporary name inside ``out_dir`` with its
md5 computed on the way, checked against the manifest, fsynced and only then renamed; a
directory version is assembled in a hidden temporary directory and renamed into place as one
step. Any failure (corrupt byte, lost connection, Ctrl-C) removes the temporaries, so the path
the user asked for holds either the complete version or whatever was there before.

The manifest comes from the daemon, but its paths are still treated as untrusted: a relpath
with ``..``, an absolute path or a backslash is refused before anything is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cpvctl.direct import FALLBACK_ERRORS, open_url, signed_url
from cpvctl.errors import Conflict, CpvctlError, IntegrityError
from cpvctl.protocol import Ref
from cpvctl.sink import Sink, WriteFailed
from cpvctl.transport import PathArg, ProgressCallback, Transport

CHUNK = 1 << 20
_TMP_SUFFIX = ".cpvpull"


@dataclass(frozen=True)
class PullResult:
    path: Path
    artifact: str
    version: str
    kind: str
    #: True when an identical copy was already at ``path`` and nothing was downloaded.
    already_present: bool = False


@dataclass(frozen=True)
class _Entry:
    relpath: str
    parts: tuple[str, ...]
    md5: str
    size: int | None


class BadManifest(CpvctlError):
    """The daemon's manifest is unusable (unsafe path, missing fields)."""


def check_component(name: object) -> str:
    """One safe path component: no separators, not ``.``/``..``, no NUL."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
    ):
        raise BadManifest(f"refusing unsafe name {name!r} in the pull manifest", "bad_manifest")
    return name


def check_relpath(relpath: object) -> tuple[str, ...]:
    """Split a manifest relpath, refusing absolute paths, ``..`` and backslashes."""
    bad = BadManifest(f"refusing unsafe path {relpath!r} in the pull manifest", "bad_manifest")
    if not isinstance(relpath, str) or relpath.startswith("/") or "\\" in relpath:
        raise bad
    parts = tuple(relpath.split("/"))
    if any(part in ("", ".", "..") or "\0" in part for part in parts):
        raise bad
    return parts


def _entries(manifest: dict[str, Any]) -> list[_Entry]:
    files = manifest.get("files")
    if not isinstance(files, list):
        raise BadManifest("pull manifest has no file list", code="bad_manifest")
    entries, seen = [], set()
    for item in files:
        if not isinstance(item, dict) or not isinstance(item.get("md5"), str):
            raise BadManifest(f"pull manifest entry without md5: {item!r}", code="bad_manifest")
        parts = check_relpath(item.get("relpath"))
        if parts in seen:
            raise BadManifest(f"pull manifest lists {item['relpath']!r} twice", code="bad_manifest")
        seen.add(parts)
        size = item.get("size")
        size = size if isinstance(size, int) else None
        entries.append(_Entry(item["relpath"], parts, item["md5"].lower(), size))
    return entries


def pull(
    client: Transport,
    ref: Ref,
    out_dir: PathArg,
    progress: ProgressCallback | None = None,
    force: bool = False,
    include_pruned: bool = False,
) -> PullResult:
    """Fetch the version ``ref`` names (``NAME@latest``, ``NAME#prod``, a bare ``NAME`` for
    the current one) into ``out_dir``; return where it is.

    The daemon resolves the reference once, in the manifest, which names the version; every
    object is then fetched by that version, so a version made meanwhile cannot mix in.
    A file version lands at ``out_dir/<original name>``, a directory version at
    ``out_dir/<original name>/...``. An identical copy already there is left alone; a different
    one is replaced only with ``force`` (raises ``Conflict`` otherwise). A pruned version
    is refused (``Conflict``) unless ``include_pruned``.
    """
    name = ref.name
    extra = {"include_pruned": "1"} if include_pruned else {}
    query = {"artifact": name, "version": ref.selector, **extra}
    manifest = client.request("GET", "/pull/manifest", query)
    if not isinstance(manifest, dict):
        raise BadManifest("pull manifest is not an object", code="bad_manifest")
    resolved = str(manifest.get("version") or ref.version or "")
    if not resolved.startswith("v"):
        raise BadManifest(f"pull manifest names no version for {ref}", code="bad_manifest")
    kind = manifest.get("kind")
    if kind not in ("file", "dir"):
        raise BadManifest(f"pull manifest has unknown kind {kind!r}", code="bad_manifest")
    top = check_component(manifest.get("name"))
    entries = _entries(manifest)
    if kind == "file" and len(entries) != 1:
        raise BadManifest("a file version must list exactly one file", code="bad_manifest")

    out = Path(out_dir).absolute()
    target = out / top
    result = PullResult(target, name, resolved, kind)
    if os.path.lexists(target):
        if _matches(target, kind, entries):
            return PullResult(target, name, resolved, kind, already_present=True)
        if not force:
            raise Conflict(
                f"{target} exists and differs from {name}@{resolved}; use --force to replace it",
                code="target_exists",
            )
    created = _makedirs(out)
    total = sum(e.size or 0 for e in entries) if all(e.size is not None for e in entries) else None
    fetch = _Fetcher(client, name, resolved, progress, total, extra)
    tmp: Path | None = None
    try:
        if kind == "file":
            tmp = _unique(out, top, is_dir=False)
            fetch.into(entries[0], tmp, fd_ready=True)
        else:
            tmp = _unique(out, top, is_dir=True)
            for entry in entries:
                dest = tmp.joinpath(*entry.parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                fetch.into(entry, dest, fd_ready=False)
        _put_in_place(tmp, target, out, top)
        tmp = None
    except BaseException:
        if tmp is not None:
            _remove(tmp)
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:
                break
        raise
    if progress is not None:
        progress(fetch.done, total)
    return result


class _Fetcher:
    """Streams objects to disk, hashing on the way, reporting cumulative progress."""

    def __init__(
        self,
        client: Transport,
        name: str,
        version: str,
        progress: ProgressCallback | None,
        total: int | None,
        extra: dict[str, str],
    ) -> None:
        self.client = client
        self.extra = extra
        self.name = name
        self.version = version
        self.progress = progress
        self.total = total
        self.done = 0
        #: read from the storage with a URL the daemon signs (cpvctl.direct); off after the
        #: daemon has none to give or one could not be read
        self.direct = True

    def _query(self, entry: _Entry) -> dict[str, Any]:
        return {
            "artifact": self.name, "version": self.version, "relpath": entry.relpath,
            **self.extra,
        }  # fmt: skip

    def _relay(self, entry: _Entry, f: BinaryIO, dest: Path) -> tuple[str, int]:
        """The bytes through the daemon's socket."""
        conn, resp = self.client.open("GET", "/pull/object", self._query(entry))
        try:
            return self._copy(resp, Sink(f, dest))
        finally:
            conn.close()

    def _direct(self, entry: _Entry, f: BinaryIO, dest: Path) -> tuple[str, int] | None:
        """The bytes straight from the storage; None (and ``f`` empty again) when the
        daemon has no URL to give or the URL cannot be read from here."""
        try:
            url = signed_url(self.client.request("GET", "/pull/url", self._query(entry)))
        except CpvctlError:  # an older daemon, or storage without URLs (a local directory)
            url = None
        if url is None:
            self.direct = False
            return None
        start = self.done
        try:
            with contextlib.closing(open_url(url, self.client.timeout)) as resp:
                return self._copy(resp, Sink(f, dest))
        except FALLBACK_ERRORS:
            self.direct = False
            self.done = start
            f.seek(0)
            f.truncate()
            return None

    def _copy(self, resp: Any, sink: Sink) -> tuple[str, int]:
        """Every byte of ``resp`` into ``sink``; ``(md5, size)`` once written and synced."""
        try:
            while chunk := resp.read(CHUNK):
                sink.write(chunk)
                self.done += len(chunk)
                if self.progress is not None:
                    self.progress(self.done, self.total)
            return sink.finish()
        finally:
            sink.abandon()

    def into(self, entry: _Entry, dest: Path, fd_ready: bool) -> None:
        flags = os.O_WRONLY | os.O_TRUNC | (0 if fd_ready else os.O_CREAT | os.O_EXCL)
        try:
            fd = os.open(dest, flags, 0o666)
            with os.fdopen(fd, "wb") as f:
                got = self._direct(entry, f, dest) if self.direct else None
                digest, size = got if got is not None else self._relay(entry, f, dest)
        except WriteFailed as e:
            raise CpvctlError(f"cannot write {dest}: {e.error}", code="io") from None
        except TimeoutError:
            raise CpvctlError(
                f"download of {entry.relpath} stalled: no data for {self.client.timeout:g} s",
                code="timeout",
            ) from None
        except OSError as e:
            if e.filename:
                raise CpvctlError(f"cannot write {e.filename}: {e.strerror}", code="io") from None
            raise _interrupted(entry, e) from None
        except http.client.HTTPException as e:
            raise _interrupted(entry, e) from None
        where = f"{self.name}@{self.version}:{entry.relpath}"
        if entry.size is not None and size != entry.size:
            raise IntegrityError(
                f"{where}: got {size} bytes, the manifest says {entry.size}; nothing was written",
                code="corrupt",
            )
        if digest != entry.md5:
            raise IntegrityError(
                f"{where}: md5 {digest} does not match the manifest's {entry.md5}; "
                "nothing was written",
                code="corrupt",
            )


def _interrupted(entry: _Entry, error: BaseException) -> CpvctlError:
    return CpvctlError(
        f"download of {entry.relpath} interrupted: {error or type(error).__name__}",
        code="connection_lost",
    )


def _unique(out: Path, top: str, is_dir: bool) -> Path:
    """A fresh hidden name next to the target (same filesystem, so the rename is atomic).

    Created with the process umask (unlike mkstemp's 0600), since it becomes the user's file.
    """
    for _ in range(100):
        path = out / f".{top}.{os.urandom(4).hex()}{_TMP_SUFFIX}"
        try:
            if is_dir:
                path.mkdir(0o777)
            else:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return path
    raise CpvctlError(f"cannot create a temporary name in {out}", code="io")


def _put_in_place(new: Path, target: Path, out: Path, top: str) -> None:
    """Rename ``new`` to ``target``; an existing target (``force``) is moved aside first and
    put back if the rename fails, then deleted."""
    if not os.path.lexists(target):
        os.rename(new, target)
        return
    if new.is_file() and target.is_file() and not target.is_symlink():
        os.replace(new, target)
        return
    old = out / f".{top}.{os.urandom(4).hex()}.cpvold"
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _makedirs(path: Path) -> list[Path]:
    """mkdir -p, returning the directories it created (to remove them again on failure)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
    return list(reversed(missing))


def _file_md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _matches(target: Path, kind: str, entries: list[_Entry]) -> bool:
    """Is ``target`` already exactly this version (same files, sizes, md5s, nothing more)?"""
    if target.is_symlink():
        return False
    if kind == "file":
        e = entries[0]
        return (
            target.is_file()
            and (e.size is None or target.stat().st_size == e.size)
            and _file_md5(target) == e.md5
        )
    if not target.is_dir():
        return False
    present: dict[tuple[str, ...], Path] = {}
    for root, dirs, files in os.walk(target):
        for d in dirs:
            if (Path(root) / d).is_symlink():
                return False
        for f in files:
            p = Path(root) / f
            if p.is_symlink() or not p.is_file():
                return False
            present[p.relative_to(target).parts] = p
    if set(present) != {e.parts for e in entries}:
        return False
    for e in entries:
        p = present[e.parts]
        if e.size is not None and p.stat().st_size != e.size:
            return False
        if _file_md5(p) != e.md5:
            return False
    return True
