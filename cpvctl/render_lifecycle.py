"""How ``status`` shows best and retention per artifact (kept apart: render.py is long)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

DASH = "-"


def render_lifecycle(
    artifacts: Sequence[Mapping[str, Any]], size: Callable[[object], str] = str
) -> list[str]:
    """``ARTIFACT LATEST BEST KEPT PRUNED STORED`` rows (``size`` formats the bytes the kept
    versions hold in storage), then one line per artifact whose versions lack the best
    metric (they can never become best)."""
    if not artifacts:
        return []
    rows = [
        (
            str(a.get("artifact", DASH)),
            str(a.get("latest") or DASH),
            str(a.get("best") or DASH),
            str(a.get("kept", 0)),
            str(a.get("pruned", 0)),
            size(a["bytes"]) if "bytes" in a else DASH,
        )
        for a in artifacts
    ]
    headers = ("ARTIFACT", "LATEST", "BEST", "KEPT", "PRUNED", "STORED")
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    out = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [headers, *rows]
    ]
    for a in artifacts:
        count = a.get("without_metric_count") or 0
        if count:
            listed = ", ".join(str(v) for v in a.get("without_metric") or [])
            more = f" and {count - len(a.get('without_metric') or [])} more" if count > 10 else ""
            out.append(
                f"{a.get('artifact')}: {count} version(s) without metric {a.get('metric')!r}, "
                f"never best: {listed}{more}"
            )
    return out


def version_label(v: Mapping[str, Any]) -> str:
    """``v1.2.0``, or ``v1.2.0 (pruned)`` for a version retention deregistered."""
    label = str(v.get("version", DASH))
    return f"{label} (pruned)" if v.get("pruned") else label
