"""Reading versions back from storage: manifests, verified downloads, and ``verify``.

A directory version's file list is DVC's ``.dir`` object in the storage; it is checked
against its own md5 before anything in it is trusted, and every downloaded file is checked
against the md5 it is stored under. The API's ``pull`` streams objects named by
:func:`manifest`; ``revert`` restores bytes with :func:`download`.

Reads the registry only through the core's queries and writes only below the directory a
download is asked to use; it makes no commit and no tag.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cpvd.errors import IntegrityError, NotFound
from cpvd.registry.core import EngineCore
from cpvd.registry.metadata import VersionInfo
from cpvd.registry.model import Manifest
from cpvd.registry.safety import (
    UnsafeInput,
    create_below,
    safe_component,
    safe_count,
    safe_md5,
    safe_relpath,
)
from cpvd.storage.base import Storage
from cpvd.storage.hashing import FileEntry


def manifest(core: EngineCore, artifact: str, version: str | None = None) -> Manifest:
    """What a version holds, file by file, with every file's size."""
    info = core.show(artifact, version)
    if info.is_dir:
        # DVC's .dir object records no sizes; the client sizes its download and checks
        # the byte count by them, so ask the storage (a stat, or one HEAD per file)
        files = [
            e if e.size else FileEntry(e.relpath, e.md5, _stored_size(core.storage, e.md5))
            for e in dir_entries(core.storage, info.md5)
        ]
    else:
        files = [FileEntry(safe_component(info.name), safe_md5(info.md5), info.size)]
    return Manifest(
        artifact,
        info.version,
        "dir" if info.is_dir else "file",
        info.name,
        info.md5,
        info.size,
        files,
    )


def dir_entries(storage: Storage, md5: str) -> list[FileEntry]:
    """The files of a stored ``.dir`` manifest; IntegrityError when it is corrupt,
    UnsafeInput when an entry's path could leave the directory it is written into."""
    safe_md5(md5, is_dir=True)
    with storage.open_object(md5) as fh:
        data = fh.read()
    if hashlib.md5(data).hexdigest() + ".dir" != md5:
        raise IntegrityError(f"directory manifest {md5} is corrupt in the storage")
    try:
        listed = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise IntegrityError(f"directory manifest {md5} is not a DVC .dir list: {exc}") from exc
    if not isinstance(listed, list) or not all(isinstance(e, dict) for e in listed):
        raise IntegrityError(f"directory manifest {md5} is not a DVC .dir list")
    return checked_entries(listed, md5)


def checked_entries(listed: list[dict[str, Any]], md5: str) -> list[FileEntry]:
    """The entries of a ``.dir`` list once each is safe to write below a directory: a
    normalised relative path, a file md5, a count for a size; no path twice, and no file
    that is also another entry's parent directory."""
    where = f"directory manifest {md5}"
    entries = [
        FileEntry(
            safe_relpath(e.get("relpath"), f"{where}: path"),
            safe_md5(e.get("md5"), is_dir=False, what=f"{where}: md5"),
            safe_count(e.get("size", 0), f"{where}: size"),
        )
        for e in listed
    ]
    files = {e.relpath for e in entries}
    if len(files) != len(entries):
        raise UnsafeInput(f"{where} lists a path twice")
    for e in entries:
        parts = e.relpath.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in files:
                raise UnsafeInput(f"{where}: {e.relpath!r} is below a file of the same version")
    return entries


def download(storage: Storage, info: VersionInfo, where: Path) -> Path:
    """Download a version to a temporary name in ``where`` (next to its destination, so
    the caller can rename it in); md5 checked on every file. Nothing is left on failure."""
    # not mkdtemp: its 0700 would become the restored directory's mode; a plain mkdir
    # follows the umask, as the trainer's own mkdir did
    tmp = where / f".cpv-restore-{uuid.uuid4().hex}"
    os.mkdir(tmp, 0o777)
    try:
        if not info.is_dir:
            target = tmp / "f"
            _fetch_object(storage, safe_md5(info.md5, is_dir=False), tmp, "f")
            final = where / f".cpv-restore-{uuid.uuid4().hex}"
            os.replace(target, final)
            tmp.rmdir()
            return final
        for entry in dir_entries(storage, info.md5):
            _fetch_object(storage, entry.md5, tmp, entry.relpath)
        return tmp
    except BaseException:
        remove_path(tmp)
        raise


def verify_targets(
    core: EngineCore, sample: int | None = None, artifact: str | None = None
) -> list[VersionInfo]:
    """The versions :func:`verify_objects` checks. Reads (and may cache) the registry
    index, so the daemon calls it on the registry thread: read elsewhere, an index read
    just before a new tag could be cached just after it invalidated the cache."""
    infos = [
        v for name, vs in core.index().versions.items() if artifact in (None, name) for v in vs
    ]
    if sample is not None and sample < len(infos):
        infos = random.sample(infos, sample)
    return infos


def verify_objects(storage: Storage, infos: list[VersionInfo]) -> dict[str, Any]:
    """Re-hash the stored objects of ``infos`` (storage reads only: any thread), like
    ``git annex fsck``."""
    missing: list[dict[str, str]] = []
    corrupt: list[dict[str, str]] = []
    checked = 0
    for info in infos:
        for md5, rel in _objects_of(storage, info, missing, corrupt):
            checked += 1
            if not storage.has(md5):
                missing.append({"tag": info.tag, "object": md5, "relpath": rel})
            elif not storage.verify(md5):
                corrupt.append({"tag": info.tag, "object": md5, "relpath": rel})
    return {"checked": checked, "versions": len(infos), "missing": missing, "corrupt": corrupt}


def remove_path(path: Path) -> None:
    """Delete a file, a symlink or a whole directory tree, whichever is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _stored_size(storage: Storage, md5: str) -> int:
    size = storage.size_of(md5)
    if size is None:
        raise NotFound(f"object {md5} is missing from the storage")
    return size


def _fetch_object(storage: Storage, md5: str, root: Path, rel: str) -> None:
    """Download object ``md5`` to the new file ``root/rel``, never following a symlink."""
    h = hashlib.md5()
    with storage.open_object(md5) as src, os.fdopen(create_below(root, rel), "wb") as dst:
        while chunk := src.read(8 << 20):
            h.update(chunk)
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    if h.hexdigest() != md5:
        raise IntegrityError(f"object {md5} is corrupt in the storage (got {h.hexdigest()})")


def _objects_of(
    storage: Storage,
    info: VersionInfo,
    missing: list[dict[str, str]],
    corrupt: list[dict[str, str]],
) -> Iterator[tuple[str, str]]:
    if not info.is_dir:
        yield info.md5, info.name
        return
    try:
        entries = dir_entries(storage, info.md5)
    except NotFound:
        missing.append({"tag": info.tag, "object": info.md5, "relpath": ""})
        return
    except IntegrityError:
        corrupt.append({"tag": info.tag, "object": info.md5, "relpath": ""})
        return
    for e in entries:
        yield e.md5, e.relpath
