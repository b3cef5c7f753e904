"""The stage ``best``: a new GTO stage tag ``NAME#best#N`` on a version that beats the
holder on the watch's metric.

Runs on the registry thread right after the version is tagged, so the stage tag leaves in
the same atomic push as the version tag (``git push --atomic --follow-tags``). Idempotent:
it looks at every version newer than the holder, so running it again (after a crash, or
after a rejected push replayed the versions and dropped their unpushed stage tags) moves
the stage where the live run would have, or nowhere.
"""

from __future__ import annotations

import logging
from typing import Any

from cpvctl.protocol import Version
from cpvd.config.lifecycle import BestConfig
from cpvd.lifecycle.entries import BEST_STAGE, best_holder, entries
from cpvd.lifecycle.policy import metric_value, pick_best
from cpvd.registry.core import EngineCore

log = logging.getLogger(__name__)


def move_best(core: EngineCore, artifact: str, best: BestConfig) -> dict[str, Any] | None:
    """Tag the version that now deserves ``best``; what moved, or None."""
    index = core.index()
    versions = index.artifact_versions(artifact)
    holder = best_holder(versions)
    floor = Version.parse(holder.version) if holder else None
    newer = [v for v in reversed(versions) if floor is None or Version.parse(v.version) > floor]
    score = metric_value(holder.metrics, best.metric) if holder else None
    choice = pick_best(entries(newer, best.metric), score, best.mode)
    if choice is None:
        return None
    info = index.get(artifact, choice.version)
    assert info is not None and info.commit
    tag = f"{artifact}#{BEST_STAGE}#{index.next_stage_counter(artifact)}"
    core.registry.create_tag(
        tag,
        info.commit,
        f"Assigning stage {BEST_STAGE} to artifact {artifact} version {info.version} "
        f"({best.metric}={choice.metric}, {best.mode})",
    )
    core.invalidate()
    log.info("%s: stage best -> %s (%s=%s)", artifact, info.version, best.metric, choice.metric)
    return {
        "artifact": artifact,
        "version": info.version,
        "stage": BEST_STAGE,
        "tag": tag,
        "previous": holder.version if holder else None,
        "metric": best.metric,
        "value": choice.metric,
    }
