"""Which version is best, and which versions retention prunes: pure functions, no git.

Everything a decision needs is in :class:`Entry`; the registry side
(:mod:`cpvd.lifecycle.best`, :mod:`cpvd.lifecycle.retention`) builds entries from the tag
index and acts on the answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cpvd.config.lifecycle import KeepConfig

DAY = 86400.0


@dataclass(frozen=True)
class Entry:
    """One registered version as retention sees it (``ordinal``: 1 for the artifact's
    first version ever, pruned ones included, so "every 10th" never shifts)."""

    version: str
    ordinal: int
    created: float  # seconds since the epoch
    metric: float | None = None
    staged: bool = False  # holds any stage (best, prod, ...)
    explicit: bool = False  # made by ``cpvctl push`` / ``Client.submit``
    pruned: bool = False


def metric_value(metrics: Mapping[str, object], name: str) -> float | None:
    """The metric as a finite number; None when missing, not a number, NaN or infinite."""
    value = metrics.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def beats(new: float, old: float | None, mode: str) -> bool:
    """Strictly better: a tie keeps the holder (the stage does not move for nothing)."""
    if old is None:
        return True
    return new < old if mode == "min" else new > old


def pick_best(newer: Sequence[Entry], holder: float | None, mode: str) -> Entry | None:
    """The entry the stage moves to, among versions newer than the holder (oldest first),
    or None. Same answer as moving it version by version, so a catch-up after a crash or
    a replayed push lands where the live run would have."""
    best: Entry | None = None
    score = holder
    for e in newer:
        if e.metric is not None and not e.pruned and beats(e.metric, score, mode):
            best, score = e, e.metric
    return best


def plan_prune(
    entries: Sequence[Entry],
    keep: KeepConfig,
    *,
    mode: str | None,
    protected: frozenset[str],
    now: float,
) -> list[str]:
    """The versions to deregister now, newest first.

    ``entries``: every version of one artifact, newest first. ``protected``: versions kept
    whatever ``keep`` says, named by the caller (the current version, data versions in a
    kept model's lineage). Also always kept: the newest version, staged versions, explicit
    submissions unless ``keep.explicit`` is false, and those already pruned (nothing to do).
    """
    live = [e for e in entries if not e.pruned]
    if not live:
        return []
    kept = _kept_by_rules(live, keep, mode, now) | set(protected) | {live[0].version}
    return [
        e.version
        for e in live
        if e.version not in kept and not e.staged and not (e.explicit and keep.explicit)
    ]


def _kept_by_rules(
    live: Sequence[Entry], keep: KeepConfig, mode: str | None, now: float
) -> set[str]:
    kept = {e.version for e in live[: keep.last]}
    if keep.every:
        kept |= {e.version for e in live if e.ordinal % keep.every == 0}
    if keep.days:
        kept |= {e.version for e in live if now - e.created < keep.days * DAY}
    if keep.best and mode is not None:
        scored = [e for e in live if e.metric is not None]
        sign = 1.0 if mode == "min" else -1.0
        # ties: the older version first, as ``pick_best`` keeps the older holder
        scored.sort(key=lambda e: (sign * (e.metric or 0.0), e.ordinal))
        kept |= {e.version for e in scored[: keep.best]}
    return kept
