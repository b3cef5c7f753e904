"""The ``revert`` verb: make an old version current again, bytes and pointer.

The bytes are downloaded (verified) next to where the checkpoint was found, then swapped in
by rename; whatever was at the target is moved aside to a backup under the state dir, never
destroyed, and a failure part-way puts every swapped file back. Only then is the pointer
committed back (no new tag) and pushed.

Owns the files it restores and their backups. Writes only inside the watched directories
(``writable_roots``) and the state dir; reads storage through ``retrieve``.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
import uuid
from pathlib import Path

from cpvd.errors import CpvError, InputError
from cpvd.registry.core import EngineCore
from cpvd.registry.metadata import VersionInfo
from cpvd.registry.model import Reverted
from cpvd.registry.retrieve import download, remove_path
from cpvd.registry.safety import child_of
from cpvd.registry.sync import push
from cpvd.registry.versioning import commit_revert
from cpvd.storage.hashing import hash_checkpoint

log = logging.getLogger(__name__)

#: (version, destination, downloaded temporary or None when the destination already matches)
Staged = tuple[VersionInfo, Path, Path | None]


def revert(
    core: EngineCore, artifact: str, version: str, with_data: bool = False, to: Path | None = None
) -> list[Reverted]:
    """Make ``version`` current again: bytes restored, pointer committed back. All or none."""
    targets = core.with_lineage(core.show(artifact, version), with_data)
    plans = [(info, _revert_target(core, info, to)) for info in targets]
    staged: list[Staged] = []
    try:
        for info, dest in plans:
            if dest.exists() and _content_md5(dest) == info.md5:
                staged.append((info, dest, None))
                continue
            staged.append((info, dest, download(core.storage, info, dest.parent)))
        results = _swap_in(core, staged)
    finally:
        for _, _, tmp in staged:
            if tmp is not None and tmp.exists():
                remove_path(tmp)
    commit_revert(core, targets)
    if core.registry.has_remote:
        push(core)
    return results


def _revert_target(core: EngineCore, info: VersionInfo, to: Path | None) -> Path:
    base = Path(to) if to is not None else Path(info.source).parent
    if not base.is_absolute():
        raise InputError(f"revert target {base} must be an absolute path", "invalid_path")
    real = Path(os.path.realpath(base))
    if not any(real == r or r in real.parents for r in core.writable_roots):
        raise InputError(
            f"refusing to write to {base}: it is outside every watched directory "
            "(use --to with a directory inside a [[watch]] path)",
            "path_outside_watch",
        )
    real.mkdir(parents=True, exist_ok=True)
    # the name comes from a tag message anyone with push access wrote: one component, or
    # nothing is written (the index skips such tags; this is the last line of defence)
    return child_of(real, info.name)


def _content_md5(path: Path) -> str | None:
    try:
        return hash_checkpoint(path).md5
    except CpvError:
        return None


def _swap_in(core: EngineCore, staged: list[Staged]) -> list[Reverted]:
    done: list[tuple[Path, Path | None]] = []  # (dest, backup) to undo on failure
    results = []
    try:
        for info, dest, tmp in staged:
            if tmp is None:
                results.append(Reverted(info.artifact, info.version, str(dest), restored=False))
                continue
            backup = None
            if dest.exists() or dest.is_symlink():
                keep_mode(dest, tmp)
                backup = _backup(core.state_dir, info, dest)
            os.replace(tmp, dest)
            done.append((dest, backup))
            results.append(
                Reverted(info.artifact, info.version, str(dest), str(backup) if backup else None)
            )
    except OSError as exc:
        for dest, backup in reversed(done):
            remove_path(dest)
            if backup is not None:
                os.replace(backup, dest)
        raise CpvError(f"revert failed, nothing changed: {exc}") from exc
    return results


def keep_mode(dest: Path, tmp: Path) -> None:
    """The restored file or directory keeps the permissions of the one it replaces (a
    private checkpoint stays private, a shared data directory stays shared)."""
    st = os.lstat(dest)
    if stat.S_ISDIR(st.st_mode) == tmp.is_dir() and not stat.S_ISLNK(st.st_mode):
        os.chmod(tmp, stat.S_IMODE(st.st_mode))


def _backup(state_dir: Path, info: VersionInfo, dest: Path) -> Path:
    """Move whatever is at ``dest`` aside; it may be the only copy of someone's work."""
    folder = state_dir / "backups" / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / dest.name
    try:
        os.replace(dest, target)
    except OSError:  # another filesystem: copy, then remove
        if dest.is_dir():
            shutil.copytree(dest, target, symlinks=True)
        else:
            shutil.copy2(dest, target)
        remove_path(dest)
    log.info("moved %s aside to %s before restoring %s", dest, target, info.tag)
    return target
