"""How ``status`` shows the backlog: the upload cap, the durability lag, the recovery point
per artifact, a warning when saves come faster than uploads, and the checkpoints coalescing
skipped (kept apart: render.py is long)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

DASH = "-"
#: superseded checkpoints listed by the human status (``--json`` has up to 20)
SUPERSEDED_SHOWN = 5


def rate_text(rate: object) -> str:
    """Bytes per second as ``200.0 MiB/s``."""
    if not isinstance(rate, int | float) or isinstance(rate, bool):
        return DASH
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if rate >= size:
            return f"{rate / size:.1f} {unit}/s"
    return f"{rate:.0f} B/s"


def backlog_lines(st: Mapping[str, Any], duration: Callable[[float], str]) -> list[str]:
    """Lines for ``status`` (none when the daemon is older and says nothing of it)."""
    out: list[str] = []
    if "upload_cap" in st:
        cap = st.get("upload_cap")
        out.append(f"upload cap: {rate_text(cap) if cap else 'none'}")
    dur = st.get("durability")
    if isinstance(dur, Mapping):
        lag = float(dur.get("lag_seconds") or 0.0)
        out.append(
            "durability lag: "
            + (f"{duration(lag)} (oldest checkpoint not yet a pushed version)" if lag else "0s")
        )
        points = dur.get("recovery_points") or {}
        for artifact, p in sorted(points.items()):
            age = p.get("age_seconds") if isinstance(p, Mapping) else None
            when = f"{duration(float(age))} ago" if isinstance(age, int | float) else DASH
            out.append(f"  recovery point {artifact}: {when}")
    out += _behind_lines(st, dur, duration)
    out += _superseded_lines(st.get("superseded") or [], duration)
    return out


def _behind_lines(
    st: Mapping[str, Any], dur: object, duration: Callable[[float], str]
) -> list[str]:
    lag = float(dur.get("lag_seconds") or 0.0) if isinstance(dur, Mapping) else 0.0
    lines = []
    for b in st.get("behind") or []:
        advice = (
            "newer ones supersede older ones (coalesce)"
            if b.get("coalesce")
            else "set coalesce = true on its watch or raise [storage] max_upload_rate"
        )
        lines.append(
            f"BEHIND: {b.get('artifact', DASH)} has {b.get('waiting', '?')} checkpoints "
            f"waiting, lag {duration(lag)}: saves come faster than uploads; {advice}"
        )
    return lines


def _superseded_lines(jobs: list[Any], duration: Callable[[float], str]) -> list[str]:
    if not jobs:
        return []
    now = time.time()
    lines = [f"superseded (coalesce), newest first: {len(jobs)} listed"]
    for j in jobs[:SUPERSEDED_SHOWN]:
        at = j.get("at")
        ago = f"{duration(now - float(at))} ago" if isinstance(at, int | float) else DASH
        lines.append(f"  {j.get('artifact', DASH)}  {j.get('path', DASH)}  {ago}")
    return lines
