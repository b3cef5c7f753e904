"""Retention: deregister the versions no ``keep`` rule and no protection holds.

A pruned version gets a GTO deregistration tag ``NAME@vX.Y.Z!#N`` on its commit (what
``gto deprecate NAME vX.Y.Z`` writes), so ``gto show`` and every clone agree it is gone;
its version tag, history and stored bytes stay (deleting objects is ``gc``'s job).

Runs on the registry thread after a push succeeded, never before: a version is only ever
pruned in favour of versions that are already safe on the remote. Model artifacts are
planned first, so the data versions in the lineage of every model version that stays are
protected.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from cpvd.config.model import Config, WatchConfig
from cpvd.lifecycle.entries import entries
from cpvd.lifecycle.policy import plan_prune
from cpvd.lifecycle.tagging import create_tags
from cpvd.registry.core import EngineCore
from cpvd.registry.index import RegistryIndex


def plan(core: EngineCore, config: Config, now: float | None = None) -> dict[str, list[str]]:
    """Artifact -> versions to prune now (newest first), for every watch with ``keep``."""
    index = core.index()
    now = time.time() if now is None else now
    plans: dict[str, list[str]] = {}
    watches = [w for w in config.watches if w.keep is not None]
    for w in sorted(watches, key=lambda w: w.kind == "data"):  # models first
        plans[w.artifact] = _plan_one(core, index, w, plans, now)
    return {a: vs for a, vs in plans.items() if vs}


def _plan_one(
    core: EngineCore,
    index: RegistryIndex,
    w: WatchConfig,
    plans: dict[str, list[str]],
    now: float,
) -> list[str]:
    assert w.keep is not None
    protected = set(_lineage_kept(index, w.artifact, plans))
    current = core.current_version(w.artifact)
    if current is not None:
        protected.add(current)
    metric = w.best.metric if w.best else None
    return plan_prune(
        entries(index.artifact_versions(w.artifact), metric),
        w.keep,
        mode=w.best.mode if w.best else None,
        protected=frozenset(protected),
        now=now,
    )


def _lineage_kept(
    index: RegistryIndex, data_artifact: str, plans: dict[str, list[str]]
) -> Iterable[str]:
    """Versions of ``data_artifact`` named by a model version that stays registered."""
    for artifact, versions in index.versions.items():
        going = set(plans.get(artifact, ()))
        for v in versions:
            if not v.pruned and v.version not in going and data_artifact in v.lineage:
                yield v.lineage[data_artifact]


def deregister(core: EngineCore, plans: dict[str, list[str]]) -> list[dict[str, str]]:
    """Make the deregistration tags locally (one GTO counter per artifact), all in one
    process; what was made. Counters come from a fresh read of every tag: the batch would
    overwrite a tag that exists (see :mod:`cpvd.lifecycle.tagging`)."""
    core.invalidate()
    index = core.index()
    made: list[dict[str, str]] = []
    batch: list[tuple[str, str, str]] = []
    for artifact, versions in sorted(plans.items()):
        counter = index.next_stage_counter(artifact)
        for version in versions:
            info = index.get(artifact, version)
            tag = f"{artifact}@{version}!#{counter}"
            if info is None or not info.commit or tag in index.tags:
                continue  # gone meanwhile; the next pass decides again
            message = f"Deregistering artifact {artifact} version {version} (cpv keep)"
            batch.append((tag, info.commit, message))
            made.append({"artifact": artifact, "version": version, "tag": tag})
            counter += 1
    create_tags(core.registry.path, batch)
    if made:
        core.invalidate()
    return made
