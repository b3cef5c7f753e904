"""Per artifact, what ``cpvctl status`` shows of best and retention."""

from __future__ import annotations

from typing import Any

from cpvd.config.model import Config
from cpvd.lifecycle.entries import best_holder
from cpvd.lifecycle.policy import metric_value
from cpvd.registry.core import EngineCore

#: versions without the best metric listed by name (beyond: counted)
LISTED = 10


def summarize(core: EngineCore, config: Config) -> list[dict[str, Any]]:
    index = core.index()
    out = []
    for w in config.watches:
        versions = index.artifact_versions(w.artifact)
        holder = best_holder(versions)
        lacking = [
            v.version
            for v in versions
            if w.best is not None and metric_value(v.metrics, w.best.metric) is None
        ]
        pruned = sum(1 for v in versions if v.pruned)
        # what the kept versions hold in storage, each content once (same md5, same objects)
        stored = {v.md5: v.size for v in versions if not v.pruned}
        out.append(
            {
                "artifact": w.artifact,
                "latest": versions[0].version if versions else None,
                "best": holder.version if holder else None,
                "metric": w.best.metric if w.best else None,
                "kept": len(versions) - pruned,
                "pruned": pruned,
                "bytes": sum(stored.values()),
                "without_metric": lacking[:LISTED],
                "without_metric_count": len(lacking),
            }
        )
    return out
