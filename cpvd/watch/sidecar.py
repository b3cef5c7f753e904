"""Metrics found next to (or inside) a checkpoint.

``<file>.metrics.json`` beside a file; ``metrics.json`` or Hugging Face's
``trainer_state.json`` inside a directory. Only flat numbers/strings/bools are kept so a
tag message stays small and readable.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_SIDECAR_BYTES = 1 << 20


def _load(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_SIDECAR_BYTES:
            return None
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.debug("ignoring metrics file %s: %s", path, exc)
        return None


def _flat(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        return {}
    return {str(k): v for k, v in obj.items() if _scalar(v)}


def _scalar(v: Any) -> bool:
    return isinstance(v, int | float | bool) or (isinstance(v, str) and len(v) < 200)


def _trainer_state(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        return {}
    out: dict[str, Any] = {}
    for entry in obj.get("log_history") or []:
        out.update(_flat(entry))  # later entries win: the latest loss/eval numbers
    for key in ("global_step", "epoch", "best_metric"):
        if isinstance(obj.get(key), int | float):
            out[key] = obj[key]
    return out


def read_metrics(checkpoint: Path, source: Path | None = None) -> dict[str, Any]:
    """Metrics for a checkpoint; ``source`` is where it was found (sidecars live there)."""
    origin = source or checkpoint
    if checkpoint.is_dir():
        for root in (checkpoint, origin):
            found = _load(root / "metrics.json")
            if found is not None:
                return _flat(found)
            found = _load(root / "trainer_state.json")
            if found is not None:
                return _trainer_state(found)
        return {}
    for base in (origin, checkpoint):
        found = _load(base.with_name(base.name + ".metrics.json"))
        if found is not None:
            return _flat(found)
    return {}
