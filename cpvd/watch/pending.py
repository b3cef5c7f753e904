"""Checkpoints the watcher has not handed over yet, as ``cpvctl status`` shows them.

Why: a newcomer who drops a file sees nothing happen for ``settle_seconds`` and, when the
file is not valid, nothing at all unless status says so. Two kinds: *settling* (quiet time
left before the format check) and *waiting* (settled, failed its check; since when and why).
The tracker keeps monotonic times; status shows wall-clock ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Pending:
    path: Path
    #: None while settling; the failed check's reason once waiting
    reason: str | None
    #: monotonic time it started waiting (or, settling, its last change)
    since: float
    #: seconds of quiet still needed before the next look (0 when the look is due)
    quiet_left: float


def wall_iso(monotonic_time: float) -> str:
    """A ``time.monotonic()`` instant as an ISO-8601 UTC timestamp."""
    wall = time.time() - (time.monotonic() - monotonic_time)
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds")


def status_rows(
    pending: list[tuple[Any, Pending]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(waiting, settling) for the status answer; ``Any`` is the watch's config."""
    waiting: list[dict[str, Any]] = []
    settling: list[dict[str, Any]] = []
    for watch, p in pending:
        row: dict[str, Any] = {"artifact": watch.artifact, "path": str(p.path)}
        if p.reason is None:
            settling.append({**row, "quiet_left": round(p.quiet_left, 1)})
        else:
            waiting.append({**row, "reason": p.reason, "since": wall_iso(p.since)})
    return waiting, settling
