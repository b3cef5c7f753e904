"""Pushing to the registry remote, and what follows a rejected push.

Several machines push to one remote. A push is atomic (branch and tags, all or none); when
another machine got there first, the local unpushed commits are replayed on top of the
remote branch, renumbering versions whose number was taken, and the push is retried after a
jittered backoff. Unpushed tags were never seen by anyone else, so deleting and re-making
them never moves a tag that exists anywhere but here.

Owns push, fetch and replay. Does not touch storage: replay re-commits pointers to bytes
that are already stored.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

from cpvd.errors import GitError
from cpvd.redact import mask_url
from cpvd.registry.core import EngineCore
from cpvd.registry.git import git_out, run_git
from cpvd.registry.index import read_index
from cpvd.registry.metadata import VersionInfo, version_tag
from cpvd.registry.model import PushReport, VersionRequest
from cpvd.registry.remote_setup import related
from cpvd.registry.repo import PushRejected
from cpvd.registry.versioning import commit_revert, commit_version
from cpvd.retry import Backoff
from cpvd.storage.hashing import ContentHash

log = logging.getLogger(__name__)

MAX_PUSH_ROUNDS = 20
#: the pause between push rounds: jittered, so racing machines fall out of step
PUSH_BACKOFF = Backoff(base=0.1, cap=2.0, jitter=True)


def unpushed(core: EngineCore) -> int:
    if not core.registry.has_remote:
        return 0
    return len(core.registry.unpushed_commits())


def push(core: EngineCore) -> PushReport:
    """Push everything waiting, in one atomic push; replay on top if another machine won."""
    reg = core.registry
    report = PushReport(pushed=0)
    if not reg.has_remote or reg.head() is None:
        return report
    for attempt in range(1, MAX_PUSH_ROUNDS + 1):
        pending = len(reg.unpushed_commits())
        try:
            reg.push()
        except PushRejected as exc:
            log.info("push rejected, replaying on the remote's history: %s", exc.message)
            report.renumbered += replay(core)
            time.sleep(PUSH_BACKOFF.delay(attempt))
            continue
        if reg.fetch():  # other machines' tags came along: re-read them
            core.invalidate()
        report.pushed += pending
        return report
    raise GitError(
        mask_url(f"push to {reg.cfg.remote} still rejected after {MAX_PUSH_ROUNDS} rounds")
    )


def fetch_all_tags(core: EngineCore) -> None:
    """Fetch every remote tag this clone lacks (after a stage tag lost a race)."""
    remote = core.registry.remote_tags()
    local = read_index(core.registry.path).tags
    core.registry.fetch_tags(t for t in remote if t not in local)
    core.invalidate()


def _lost_first_push(path: Path, base: str) -> bool:
    """Two machines started on an empty remote, each laid out its own registry (a first
    commit with its own ``Cpv-Registry`` id), and the other pushed first. A clone that ever
    pushed shares the remote's history, so an unrelated one means this clone never
    pushed; when that history is a registry CPV laid out (a ``dvc.yaml`` in its first
    commit), replaying onto it is the usual push race. A remote that already held another
    registry is refused at start (cpvd.registry.remote_setup); someone else's repository
    (no ``dvc.yaml``) is refused here."""
    roots = git_out(["rev-list", "--max-parents=0", base], path).split()
    return bool(roots) and all(
        run_git(["cat-file", "-e", f"{r}:dvc.yaml"], path, check=False).returncode == 0
        for r in roots
    )


def replay(core: EngineCore) -> list[tuple[str, str]]:
    """Rebuild local unpushed commits on top of the remote branch, renumbering versions.

    Returns (old tag, new tag) for each version whose number changed.
    """
    reg = core.registry
    reg.fetch()
    base = reg.remote_branch()
    commits = reg.unpushed_commits()
    if base is None:
        return []
    if not related(reg.path, base) and not _lost_first_push(reg.path, base):
        # replaying onto it would mix two registries
        raise GitError(
            f"the remote {mask_url(reg.cfg.remote or '')} holds a history unrelated to the "
            f"registry {reg.path}; not pushing. Set [registry] remote to an empty repository"
        )
    index = read_index(reg.path)
    by_commit: dict[str, list[VersionInfo]] = {}
    for vs in index.versions.values():
        for v in vs:
            if v.commit:
                by_commit.setdefault(v.commit, []).append(v)
    unpushed_set = set(commits)
    local_tags_to_drop = [t for t, target in index.tags.items() if target in unpushed_set]
    plan = [(reg.trailers(c), by_commit.get(c, [])) for c in commits]
    remote = reg.remote_tags()
    reg.delete_tags(t for t in local_tags_to_drop if remote.get(t) != index.tags.get(t))
    kept = set(index.tags) - set(local_tags_to_drop)
    reg.fetch_tags(t for t in remote if t not in kept)
    reg.reset_hard(base)
    core.invalidate()
    renames: list[tuple[str, str]] = []
    for trailers, infos in plan:
        action = trailers.get("Cpv-Action", [""])[0]
        if action == "version" and infos:
            renames.append(_replay_version(core, trailers, infos[0]))
        elif action == "revert":
            _replay_revert(core, trailers)
        elif not action:
            reg.ensure_layout(core.config.artifact_kinds(), message="cpv: registry layout")
        elif action == "storage":  # a migrate-storage switch made here: keep it
            reg.ensure_layout({}, message="cpv: storage moved", switch_storage=True)
    return [(a, b) for a, b in renames if a != b]


def _replay_version(
    core: EngineCore, trailers: dict[str, list[str]], info: VersionInfo
) -> tuple[str, str]:
    """Re-commit and re-tag one version on the new base; same content already current
    there (another machine versioned the same bytes) drops it instead."""
    old = info.tag
    current = core.current_version(info.artifact)
    pointer = core.pointer_at_head(info.artifact)
    if pointer is not None and pointer.md5 == info.md5 and current is not None:
        log.info("%s: same content already current remotely as %s; dropping", old, current)
        return old, version_tag(info.artifact, current)
    req = VersionRequest(
        artifact=info.artifact,
        path=Path(info.source),
        source=info.source,
        kind=info.kind,
        job_id=info.job_id or trailers.get("Cpv-Job", [uuid.uuid4().hex])[0],
        metrics=info.metrics,
        name=info.name,
        origin=info.origin,
    )
    content = ContentHash(
        md5=info.md5,
        size=info.size,
        nfiles=info.nfiles,
        is_dir=info.is_dir,
        entries=(),
        manifest=None,
    )
    commit, tag = commit_version(core, req, content)
    new = VersionInfo(
        **{
            **info.__dict__,
            "version": tag.rpartition("@")[2],
            "commit": None,
            "stages": [],
            "current": False,
        }
    )
    new.parent = core.version_at(
        info.artifact, core.registry.git("rev-parse", f"{commit}^").strip()
    )
    core.registry.create_tag(tag, commit, new.message())
    core.invalidate()
    return old, tag


def _replay_revert(core: EngineCore, trailers: dict[str, list[str]]) -> None:
    targets = []
    for value in trailers.get("Cpv-Current", []):
        name, _, version = value.rpartition("@")
        info = core.index().get(name, version)
        if info is not None:
            targets.append(info)
    if targets:
        commit_revert(core, targets)
