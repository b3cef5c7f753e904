"""Restoring a pruned version (``pull``, ``revert``): refused unless asked for by name.

Why: a pruned version's objects are what ``cpvctl gc`` deletes, so a pull or revert of one
may work today and fail after the next gc, or half-restore a directory. A user who names a
pruned version by number most likely copied it from an old log; they get a refusal that
says when and why it was pruned and how to try anyway (``include_pruned``). With it, the
storage is checked first, and a version whose objects are gone fails naming them, before
anything is written.

Runs on the registry thread (it reads the index and, with ``include_pruned``, asks the
storage whether each object is still there).
"""

from __future__ import annotations

from cpvd.errors import CpvError, IntegrityError, NotFound
from cpvd.registry.core import EngineCore
from cpvd.registry.git import run_git
from cpvd.registry.metadata import VersionInfo
from cpvd.registry.retrieve import dir_entries
from cpvd.registry.safety import UnsafeInput

#: how many missing objects an error names (a directory version can have thousands)
NAMED = 5


class PrunedVersion(CpvError):
    """A pruned version named for a restore without ``include_pruned``."""

    code = "pruned_version"


def check_restorable(core: EngineCore, info: VersionInfo, include_pruned: bool) -> None:
    """Nothing for a kept version; else refuse (PrunedVersion), or, with
    ``include_pruned``, refuse only when some of its objects are gone (NotFound)."""
    if not info.pruned:
        return
    ref = f"{info.artifact}@{info.version}"
    if not include_pruned:
        raise PrunedVersion(
            f"{ref} was pruned{_when(core, info)}; its objects may already be "
            "garbage-collected; pass --include-pruned to try anyway"
        )
    missing = missing_objects(core, info)
    if missing:
        named = ", ".join(missing[:NAMED]) + (" ..." if len(missing) > NAMED else "")
        raise NotFound(
            f"{ref} was pruned and {len(missing)} of its objects are no longer in "
            f"{core.storage.describe()} (removed by gc): {named}; it cannot be restored",
            "objects_missing",
        )


def missing_objects(core: EngineCore, info: VersionInfo) -> list[str]:
    """The objects of ``info`` the storage no longer has: ``md5`` or ``md5 (relpath)``."""
    storage = core.storage
    if not storage.has(info.md5):
        return [info.md5]
    if not info.is_dir:
        return []
    try:
        entries = dir_entries(storage, info.md5)
    except (NotFound, IntegrityError, UnsafeInput):
        return [f"{info.md5} (unreadable)"]
    return [f"{e.md5} ({e.relpath})" for e in entries if not storage.has(e.md5)]


def _when(core: EngineCore, info: VersionInfo) -> str:
    """`` on 2026-12-03 (tag NAME@vX.Y.Z!#N)`` from the oldest deregistration tag that
    targets the version's commit; empty when git cannot say."""
    tags = sorted(
        (d.counter, f"{d.artifact}@{d.version}!#{d.counter}")
        for d in core.index().deregistrations
        if (d.artifact, d.version, d.commit) == (info.artifact, info.version, info.commit)
    )
    if not tags:
        return ""
    tag = tags[0][1]
    proc = run_git(
        ["for-each-ref", "--format=%(taggerdate:short)", f"refs/tags/{tag}"],
        core.registry.path,
        check=False,
    )
    date = proc.stdout.decode(errors="replace").strip() if proc.returncode == 0 else ""
    return f" on {date} (tag {tag})" if date else f" (tag {tag})"
