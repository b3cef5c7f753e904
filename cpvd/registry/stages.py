"""The ``promote`` verb: GTO stage tags ``<artifact>#<stage>#<N>`` on version commits.

A promotion tags a version (and, ``with_data``, the data versions in its lineage) and
pushes the tags in one atomic push: all or none. When another machine took the same
counter ``N`` meanwhile, our tags are deleted, the remote's fetched, and the round retried
after a jittered backoff with the next counters.

Owns stage tags only. Makes no commit and never touches storage or the work tree.
"""

from __future__ import annotations

import time

from cpvctl.protocol import validate_stage
from cpvd.errors import CpvError, GitError
from cpvd.registry.core import EngineCore
from cpvd.registry.metadata import VersionInfo
from cpvd.registry.repo import PushRejected
from cpvd.registry.sync import fetch_all_tags, push
from cpvd.retry import Backoff

MAX_PROMOTE_ROUNDS = 5
PROMOTE_BACKOFF = Backoff(base=0.1, cap=2.0, jitter=True)


def promote(
    core: EngineCore, artifact: str, version: str, stage: str, with_data: bool = False
) -> list[dict[str, str]]:
    """Assign ``stage`` to a version (and its lineage data versions): all tags or none."""
    validate_stage(stage)
    for attempt in range(1, MAX_PROMOTE_ROUNDS + 1):
        made = _tag_stage(core, core.with_lineage(core.show(artifact, version), with_data), stage)
        core.invalidate()
        if _push_stage(core, made):
            return [
                {"artifact": i.artifact, "version": i.version, "stage": stage, "tag": t}
                for t, i in made
            ]
        if attempt < MAX_PROMOTE_ROUNDS:
            time.sleep(PROMOTE_BACKOFF.delay(attempt))
    raise GitError("stage tags kept colliding with another machine's; try again")


def _tag_stage(
    core: EngineCore, targets: list[VersionInfo], stage: str
) -> list[tuple[str, VersionInfo]]:
    """Make the next stage tag on each target; on any failure none of them stays."""
    index = core.index()
    made: list[tuple[str, VersionInfo]] = []
    for info in targets:
        tag = f"{info.artifact}#{stage}#{index.next_stage_counter(info.artifact)}"
        assert info.commit
        message = f"Assigning stage {stage} to artifact {info.artifact} version {info.version}"
        try:
            core.registry.create_tag(tag, info.commit, message)
        except CpvError:
            core.registry.delete_tags(t for t, _ in made)
            raise
        made.append((tag, info))
    return made


def _push_stage(core: EngineCore, made: list[tuple[str, VersionInfo]]) -> bool:
    """Push the new stage tags (with anything else waiting). False: another machine took a
    counter; our tags are gone and the remote's fetched, so a new round picks the next."""
    reg = core.registry
    if not reg.has_remote:
        return True
    try:
        push(core)
        reg.push([f"refs/tags/{t}" for t, _ in made])
        return True
    except PushRejected:
        reg.delete_tags(t for t, _ in made)
        fetch_all_tags(core)
        return False
    except GitError:
        reg.delete_tags(t for t, _ in made)
        core.invalidate()
        raise
