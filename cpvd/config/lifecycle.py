"""The ``best`` and ``keep`` tables of a watch: their shape and how they are read.

Kept apart from ``load`` so the retention rules (what each key means, what is refused)
sit in one small place; ``load`` turns a :class:`KeyedError` into an error naming the file,
the watch and the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MODES = ("min", "max")
KEEP_COUNTS = ("last", "best", "every", "days")


@dataclass(frozen=True)
class BestConfig:
    """Move the stage ``best`` to a new version that beats the holder on ``metric``."""

    metric: str
    mode: str = "min"  # "min" | "max"


@dataclass(frozen=True)
class KeepConfig:
    """Which versions retention keeps; the rest are deregistered (0 or unset: rule off).

    ``explicit``: versions made by ``cpvctl push`` / ``Client.submit`` are always kept
    (true, the default); false lets the rules above prune them like any other.
    """

    last: int = 0
    best: int = 0
    every: int = 0
    days: int = 0
    explicit: bool = True


class KeyedError(ValueError):
    """A bad ``best``/``keep`` value; ``key`` is its dotted name (``keep.last``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def parse_best(value: object) -> BestConfig:
    table = _table(value, "best", ("metric", "mode"))
    metric = table.get("metric")
    if not isinstance(metric, str) or not metric.strip():
        raise KeyedError("best.metric", 'must name a metric, e.g. "eval_loss"')
    mode = table.get("mode", "min")
    if mode not in MODES:
        raise KeyedError("best.mode", f'must be "min" or "max", got {mode!r}')
    return BestConfig(metric=metric, mode=mode)


def parse_keep(value: object, best: BestConfig | None) -> KeepConfig:
    table = _table(value, "keep", (*KEEP_COUNTS, "explicit"))
    counts = {k: _count(table[k], f"keep.{k}") for k in KEEP_COUNTS if k in table}
    explicit = table.get("explicit", True)
    if not isinstance(explicit, bool):
        raise KeyedError("keep.explicit", f"expected true or false, got {explicit!r}")
    if counts.get("best") and best is None:
        raise KeyedError(
            "keep.best",
            'needs the watch\'s best metric: add best = { metric = "...", mode = "min" }',
        )
    return KeepConfig(explicit=explicit, **counts)


def _table(value: object, name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise KeyedError(name, f"must be a table such as {name} = {{ ... }}, got {value!r}")
    for key in value:
        if key not in keys:
            raise KeyedError(f"{name}.{key}", f"unknown key; expected one of {', '.join(keys)}")
    return dict(value)


def _count(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise KeyedError(key, f"expected a whole number, got {value!r}")
    if isinstance(value, float) and (math.isnan(value) or not value.is_integer()):
        raise KeyedError(key, f"expected a whole number, got {value!r}")
    if value < 0:
        raise KeyedError(key, f"must be 0 or more, got {value!r}")
    return int(value)


def as_toml(cfg: BestConfig | KeepConfig) -> dict[str, object]:
    """The table ``dump_config`` writes (unset counts left out)."""
    if isinstance(cfg, BestConfig):
        return {"metric": cfg.metric, "mode": cfg.mode}
    out: dict[str, object] = {k: getattr(cfg, k) for k in KEEP_COUNTS if getattr(cfg, k)}
    if not cfg.explicit:
        out["explicit"] = False
    return out
