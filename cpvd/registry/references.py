"""Which version a reference names: the one place that knows what ``NAME@v1.3``,
``NAME@latest``, ``NAME#STAGE`` and a bare ``NAME`` mean (DESIGN.md "References"), with
the meanings ``gto show`` gives them, plus "pushed" for ``@latest``.

``@latest`` is what a restarted training job resumes from, so it names only a version that
another machine can pull too: tagged (tags are made after the bytes are uploaded and
verified), and, when the registry has a remote, with its commit on the remote branch as a
fetch just found it (so versions other machines pushed count too). A version still waiting
for its push is skipped, never promised.

Reads the registry through the core's index and git; changes nothing.
"""

from __future__ import annotations

import logging

from cpvctl.protocol import Ref
from cpvd.errors import GitError, NotFound
from cpvd.registry.core import EngineCore
from cpvd.registry.git import run_git
from cpvd.registry.metadata import VersionInfo

log = logging.getLogger(__name__)


def resolve(core: EngineCore, ref: Ref) -> VersionInfo:
    """The version ``ref`` names now; NotFound (with a code saying what is unknown) else."""
    if ref.stage is not None:
        return _staged(core, ref.name, ref.stage)
    if ref.latest:
        return _latest(core, ref.name)
    if ref.version is None:
        _known(core, ref.name)  # says "unknown artifact" or "no versions yet"
    return core.show(ref.name, ref.version)  # no version: the current one


def _known(core: EngineCore, name: str) -> list[VersionInfo]:
    versions = core.index().artifact_versions(name)
    if not versions:
        if name in core.config.artifact_kinds():
            raise NotFound(f"artifact {name!r} has no versions yet", "unknown_artifact")
        raise NotFound(f"unknown artifact {name!r}", "unknown_artifact")
    return versions


def _staged(core: EngineCore, name: str, stage: str) -> VersionInfo:
    versions = _known(core, name)
    commit = core.index().stage_holders.get((name, stage))
    holder = next((v for v in versions if commit is not None and v.commit == commit), None)
    if holder is None:
        held = sorted({s for n, s in core.index().stage_holders if n == name})
        raise NotFound(
            f"{name} has no version in stage {stage!r} (stages: {', '.join(held) or 'none'}; "
            f"assign one with: cpvctl promote {name}@VERSION {stage})",
            "unknown_stage",
        )
    return core.show(name, holder.version)


def _latest(core: EngineCore, name: str) -> VersionInfo:
    if core.registry.has_remote:
        _fetch(core)
    # a pruned version is never resumed from: gc may have deleted its objects
    versions = [v for v in _known(core, name) if not v.pruned]
    if not core.registry.has_remote and versions:
        return core.show(name, versions[0].version)
    base = core.registry.remote_branch()
    if base is not None:
        waiting = set(core.registry.unpushed_commits())
        for v in versions:  # newest first
            if v.commit and v.commit not in waiting and _on_branch(core, v.commit, base):
                return core.show(name, v.version)
    raise NotFound(
        f"{name} has no pushed version yet: its {len(versions)} version(s) wait to be pushed "
        "to the registry remote (cpvctl status shows the registry's push state); name one "
        f"with {name}@VERSION to use it anyway",
        "no_pushed_version",
    )


def _fetch(core: EngineCore) -> None:
    """Learn what other machines pushed: a job resumed on this machine must get the newest
    pushed version even when this daemon made none of them (nothing else fetches then).
    An unreachable remote leaves the answer to what this clone knows, with a warning."""
    try:
        if core.registry.fetch():
            core.invalidate()
    except GitError as exc:
        log.warning("@latest answered from what this clone knows: %s", exc.message)


def _on_branch(core: EngineCore, commit: str, base: str) -> bool:
    proc = run_git(["merge-base", "--is-ancestor", commit, base], core.registry.path, check=False)
    return proc.returncode == 0
