"""Tag index -> :class:`~cpvd.lifecycle.policy.Entry`: what best and retention decide on."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cpvd.lifecycle.policy import Entry, metric_value
from cpvd.registry.metadata import VersionInfo

BEST_STAGE = "best"


def entries(versions: Sequence[VersionInfo], metric: str | None) -> list[Entry]:
    """``versions`` (newest first, as the index keeps them) as entries, newest first."""
    count = len(versions)
    return [
        Entry(
            version=v.version,
            ordinal=count - i,
            created=created_seconds(v.created_at),
            metric=metric_value(v.metrics, metric) if metric else None,
            staged=bool(v.stages),
            explicit=v.origin == "push",
            pruned=v.pruned,
        )
        for i, v in enumerate(versions)
    ]


def created_seconds(text: str) -> float:
    """A tag's ``created_at``; an unreadable one counts as very old (``days`` keeps
    nothing for it, every other rule still can)."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return 0.0


def best_holder(versions: Sequence[VersionInfo]) -> VersionInfo | None:
    return next((v for v in versions if BEST_STAGE in v.stages), None)
