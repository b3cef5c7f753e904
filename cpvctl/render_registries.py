"""``cpvctl status`` with several registries (``[[registry]]`` profiles): one line each for
its registry and its storage, with the artifacts it holds, instead of the single pair."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DASH = "-"


def _reach(value: object) -> str:
    return "not checked yet" if value is None else "reachable" if value else "UNREACHABLE"


def registry_lines(st: Mapping[str, Any]) -> list[str] | None:
    """None with a single registry (status shows the usual storage and registry lines)."""
    registries = st.get("registries") or []
    if len(registries) < 2:
        return None
    out: list[str] = []
    for r in registries:
        artifacts = ", ".join(r.get("artifacts") or []) or "no artifacts"
        line = f"registry {r.get('name', '?')} ({artifacts}): {r.get('path', DASH)}"
        if r.get("remote"):
            line += f" -> {r['remote']}"
            if r.get("remote_reachable") is False:
                line += "  remote UNREACHABLE"
        line += f"  unpushed {r.get('unpushed', 0)}"
        if r.get("remote_error"):
            line += f"  ({r['remote_error']})"
        out.append(line)
        line = f"  storage: {r.get('storage', DASH)}  {_reach(r.get('storage_reachable'))}"
        if r.get("storage_error"):
            line += f"  ({r['storage_error']})"
        out.append(line)
    return out
