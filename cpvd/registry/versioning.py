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

import uuid
from pathlib import Path

from cpvctl.protocol import FIRST_VERSION, Version, validate_name
from cpvd.errors import GitError, InputError
from cpvd.registry.core import EngineCore
from cpvd.registry.dvcfiles import Pointer
from cpvd.registry.metadata import VersionInfo, version_tag
from cpvd.registry.model import VersionRequest, VersionResult
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
    commit = core.registry.find_job_commit(req.job_id) if resume else None
    if commit is not None:
        return VersionResult("versioned", tag_version(core, req, content, commit), content)
    cur = core.current_version(req.artifact)
    pointer = core.pointer_at_head(req.artifact)
    if pointer is not None and pointer.md5 == content.md5 and cur is not None:
        return VersionResult("unchanged", core.show(req.artifact, cur), content)
    commit, tag = commit_version(core, req, content)
    # just made: its tag and parent are known, no need to read them back from git
    info = tag_version(core, req, content, commit, made=(tag, cur))
    return VersionResult("versioned", info, content)


def next_version(core: EngineCore, artifact: str, bump: str) -> Version:
    """The next free number: every version tag counts, even one whose message is not ours."""
    index = core.index()
    taken = {Version.parse(v.version) for v in index.artifact_versions(artifact)}
    taken |= {
        Version.parse(t.split("@", 1)[1])
        for t in index.tags
        if t.startswith(artifact + "@v") and _is_version(t.split("@", 1)[1])
    }
    if not taken:
        return FIRST_VERSION
    candidate = max(taken).bump(bump)
    while candidate in taken:
        candidate = candidate.bump("minor")
    return candidate


def commit_version(core: EngineCore, req: VersionRequest, content: ContentHash) -> tuple[str, str]:
    """Commit the artifact's pointer for a new version; returns (commit, version tag)."""
    reg = core.registry
    number = str(next_version(core, req.artifact, req.bump))
    if req.artifact not in core.laid_out:
        reg.ensure_layout({req.artifact: req.kind}, message="cpv: register artifact")
        core.laid_out.add(req.artifact)
    pointer = pointer_of(content)
    rel = reg.write_pointer(req.artifact, pointer)
    tag = version_tag(req.artifact, number)
    commit = reg.commit(
        [rel],
        f"cpv: {req.artifact} {number} from {_name_of(req)}",
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
        if not tag or (target is not None and target != commit):
            raise GitError(f"version tag {tag!r} for job {req.job_id} is taken by another commit")
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
    )
    if target is None:
        core.registry.create_tag(tag, commit, info.message())
    info.commit = commit
    core.note_tagged(info)
    return info


def commit_revert(core: EngineCore, targets: list[VersionInfo]) -> None:
    """One commit moving each target's pointer back to it (``Cpv-Current`` names them)."""
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


def _is_version(text: str) -> bool:
    try:
        Version.parse(text)
    except ValueError:
        return False
    return text.count(".") == 2
