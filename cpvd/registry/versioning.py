"""The ``version`` verb, and every commit that moves an artifact's pointer.

A version is one commit (the pointer, with ``Cpv-Job``/``Cpv-Version``/``Cpv-Current``
trailers) plus one annotated tag whose message is the version's JSON metadata. A revert is
one commit moving pointers back (``Cpv-Current`` naming the reverted-to versions), no tag.
Both are here because ``sync`` replays them after a rejected push.

Owns the version number choice, the commit and the tag. Does not hash, upload or push:
the caller has stored the bytes before (the worker: hash -> upload -> version), and pushing
is ``sync``'s job, batched by the daemon's pusher.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from cpvctl.protocol import FIRST_VERSION, Version, validate_name
from cpvd.errors import GitError, InputError
from cpvd.registry.core import EngineCore
from cpvd.registry.dvcfiles import Pointer
from cpvd.registry.metadata import VersionInfo, version_tag
from cpvd.registry.model import VersionRequest, VersionResult
from cpvd.registry.safety import UnsafeInput, safe_component, safe_relpath, safe_text
from cpvd.storage.hashing import ContentHash


def version(
    core: EngineCore, req: VersionRequest, content: ContentHash, *, resume: bool
) -> VersionResult:
    """Make ``req`` a version of stored bytes ``content`` (or report it unchanged).

    Idempotent per ``req.job_id``: ``resume=True`` first looks for the job's commit (a
    crash after committing), ``resume=False`` says the job never reached the registry, which
    skips that O(history) search.
    """
    validate_name(req.artifact)
    if req.bump not in ("minor", "major"):
        raise InputError(f"unknown bump {req.bump!r}: use minor or major")
    _check_names(req)
    commit = core.registry.find_job_commit(req.job_id) if resume else None
    if commit is not None:
        try:
            return VersionResult("versioned", tag_version(core, req, content, commit), content)
        except TagTaken:
            if not _undo_commit(core, commit):
                raise
    cur = core.current_version(req.artifact)
    pointer = core.pointer_at_head(req.artifact)
    if pointer is not None and pointer.md5 == content.md5 and cur is not None:
        return VersionResult("unchanged", core.show(req.artifact, cur), content)
    for _ in range(MAX_REPICKS):
        commit, tag = commit_version(core, req, content)
        # just made: its tag and parent are known, no need to read them back from git
        try:
            info = tag_version(core, req, content, commit, made=(tag, cur))
        except TagTaken:  # made meanwhile (by hand, or fetched): drop the commit, re-pick
            _undo_commit(core, commit)
            continue
        return VersionResult("versioned", info, content)
    raise GitError(f"{req.artifact}: every version number tried was taken meanwhile")


class TagTaken(GitError):
    """The version tag a commit was made for exists on another commit. Never moved: the
    number is re-picked when the commit is still ours alone (unpushed, at HEAD)."""

    retryable = False


#: re-picks of a taken number within one job (each re-reads every tag, so one is usual)
MAX_REPICKS = 10


def _check_names(req: VersionRequest) -> None:
    """Refuse names the index would refuse to read back (see ``metadata.checked``)."""
    try:
        safe_component(_name_of(req), "checkpoint name")
        safe_text(str(req.source or req.path), "checkpoint path")
        if req.relpath is not None:
            safe_relpath(req.relpath, "checkpoint relpath")
    except UnsafeInput as exc:
        raise InputError(exc.message, "invalid_name") from exc


def _undo_commit(core: EngineCore, commit: str) -> bool:
    """Drop ``commit`` when it is HEAD and was never pushed; False when it must stay."""
    reg = core.registry
    if reg.head() != commit or commit not in reg.unpushed_commits():
        return False
    reg.reset_hard(f"{commit}^")
    core.invalidate()
    return True


def next_version(core: EngineCore, artifact: str, bump: str) -> Version:
    """The next free number: every version tag counts, even one whose message is not ours."""
    index = core.index()
    if artifact not in index.highest:
        return FIRST_VERSION
    taken = index.numbers[artifact]
    candidate = index.highest[artifact].bump(bump)
    while candidate in taken:
        candidate = candidate.bump("minor")
    return candidate


def commit_version(core: EngineCore, req: VersionRequest, content: ContentHash) -> tuple[str, str]:
    """Commit the artifact's pointer for a new version; returns (commit, version tag).

    The number comes from the cached index. A tag made by hand (or fetched) since the index
    was read makes ``git tag`` refuse; ``version`` then drops this commit and re-picks from
    a fresh index: skipped, never fought over, one git process fewer per version."""
    reg = core.registry
    number = str(next_version(core, req.artifact, req.bump))
    if req.artifact not in core.laid_out:
        reg.ensure_layout({req.artifact: req.kind}, message="cpv: register artifact")
        core.laid_out.add(req.artifact)
    pointer = pointer_of(content)
    tag = version_tag(req.artifact, number)
    with reg.unchanged_on_failure():
        rel = reg.write_pointer(req.artifact, pointer)
        commit = reg.commit(
            [rel],
            # the name is quoted: a newline in it must not start a line (or a trailer)
            f"cpv: {req.artifact} {number} from {json.dumps(_name_of(req))}",
            trailers={
                "Cpv-Job": req.job_id,
                "Cpv-Action": "version",
                "Cpv-Version": tag,
                "Cpv-Current": tag,
            },
        )
    core.note_committed(req.artifact, number, pointer)
    return commit, tag


def tag_version(
    core: EngineCore,
    req: VersionRequest,
    content: ContentHash,
    commit: str,
    made: tuple[str, str | None] | None = None,
) -> VersionInfo:
    """Tag ``commit``. ``made`` = (tag, parent version) when this process just committed
    it; otherwise (a resumed job) both are read back from git and the tag is checked."""
    target: str | None = None
    if made is not None:
        # a clash with an existing tag still fails: ``git tag`` refuses to overwrite
        tag, parent = made
    else:
        existing = core.index().find_job(req.job_id)
        if existing is not None and existing.commit == commit:
            return existing
        tag = core.registry.trailers(commit).get("Cpv-Version", [""])[0]
        target = core.registry.tag_target(tag) if tag else None
        if not tag:
            raise GitError(f"commit {commit} of job {req.job_id} names no version tag")
        if target is not None and target != commit:
            raise TagTaken(f"version tag {tag!r} for job {req.job_id} is taken by another commit")
        parent = core.version_at(req.artifact, core.registry.git("rev-parse", f"{commit}^").strip())
    info = VersionInfo(
        artifact=req.artifact,
        version=tag.rpartition("@")[2],
        md5=content.md5,
        size=content.size,
        nfiles=content.nfiles,
        is_dir=content.is_dir,
        name=_name_of(req),
        source=str(req.source or req.path),
        kind=req.kind,
        metrics=dict(req.metrics or {}),
        lineage={d: v for d in req.data if (v := core.current_version(d)) is not None},
        parent=parent,
        job_id=req.job_id,
        relpath=req.relpath,
        origin=req.origin,
    )
    if target is None:
        try:
            core.registry.create_tag(tag, commit, info.message())
        except GitError:
            if core.registry.tag_target(tag) not in (None, commit):
                raise TagTaken(f"version tag {tag} was made on another commit meanwhile") from None
            raise
    info.commit = commit
    core.note_tagged(info)
    return info


def commit_revert(core: EngineCore, targets: list[VersionInfo]) -> None:
    """One commit moving each target's pointer back to it (``Cpv-Current`` names them)."""
    with core.registry.unchanged_on_failure():
        rels = [core.registry.write_pointer(i.artifact, pointer_of_info(i)) for i in targets]
        core.registry.commit(
            rels,
            "cpv: revert " + ", ".join(i.tag for i in targets),
            trailers={
                "Cpv-Job": uuid.uuid4().hex,
                "Cpv-Action": "revert",
                "Cpv-Current": [i.tag for i in targets],
            },
        )
    core.note_moved(i.artifact for i in targets)


def pointer_of(content: ContentHash) -> Pointer:
    return Pointer(content.md5, content.size, content.nfiles, content.is_dir)


def pointer_of_info(info: VersionInfo) -> Pointer:
    return Pointer(info.md5, info.size, info.nfiles, info.is_dir)


def _name_of(req: VersionRequest) -> str:
    return req.name or Path(req.source or req.path).name
