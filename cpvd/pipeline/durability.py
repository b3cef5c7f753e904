"""Durability lag and recovery point (DESIGN.md "Durability and backlog").

- **lag**: the age of the oldest complete checkpoint that is not yet a pushed version: the
  oldest job still queued or running, or a version made but still waiting for its push to
  the registry remote (without a remote a version is durable once tagged). A machine lost
  now loses at most ``lag`` seconds of checkpoints.
- **recovery point** per artifact: when the newest pushed version's checkpoint was
  complete: what another machine can resume from.

Why from bus events: the worker publishes ``versioned`` and the pusher ``pushed``; listening
to them keeps both untouched. Versions waiting for a push are remembered in memory only: at
a restart the pusher pushes them first, and the registry seeds the recovery points.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cpvd.registry.engine import Engine
from cpvd.state.backlog import oldest_created
from cpvd.state.queue import JobQueue

#: job states that are checkpoints on their way (not yet versions)
_ON_THE_WAY = ("queued", "running")


class Durability:
    """Reads the queue; keeps the versions made since the last push (event thread)."""

    def __init__(
        self,
        queue: JobQueue,
        has_remote: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.has_remote = has_remote
        self.clock = clock
        self._lock = threading.Lock()
        #: job id -> (artifact, when its checkpoint was complete), versioned but unpushed
        self._unpushed: dict[str, tuple[str, float]] = {}
        #: artifact -> when the newest pushed version's checkpoint was complete
        self._recovery: dict[str, float] = {}

    # -- inputs -----------------------------------------------------------------------

    def seed(self, points: dict[str, float]) -> None:
        """Recovery points known at start-up (the registry's newest pushed versions)."""
        with self._lock:
            for artifact, at in points.items():
                self._recovery[artifact] = max(at, self._recovery.get(artifact, at))

    def on_event(self, type: str, data: dict[str, Any]) -> None:
        """A bus tap: ``versioned`` (a job became a version), ``pushed`` (all are)."""
        if type == "versioned":
            job = self.queue.get(str(data.get("job_id")))
            if job is None:
                return
            with self._lock:
                self._unpushed[job.id] = (job.artifact, job.created_at)
            if not self.has_remote():
                self.pushed()
        elif type == "pushed":
            self.pushed()

    def pushed(self) -> None:
        """Everything versioned so far is on the remote."""
        with self._lock:
            for artifact, at in self._unpushed.values():
                self._recovery[artifact] = max(at, self._recovery.get(artifact, at))
            self._unpushed.clear()

    # -- answers ----------------------------------------------------------------------

    def oldest_unprotected(self, unpushed_count: int) -> float | None:
        """When the oldest checkpoint not yet a pushed version was complete; None: none.
        ``unpushed_count`` is the registry's own count (0: a push emptied it, even one that
        carried no new commit and so published no ``pushed`` event)."""
        if unpushed_count == 0 and self.has_remote():
            self.pushed()
        oldest = oldest_created(self.queue, _ON_THE_WAY)
        with self._lock:
            waiting = [at for _, at in self._unpushed.values()]
        times = [t for t in (oldest, *waiting) if t is not None]
        return min(times) if times else None

    def lag(self, unpushed_count: int) -> float:
        """Seconds since the oldest checkpoint not yet a pushed version was complete."""
        since = self.oldest_unprotected(unpushed_count)
        return 0.0 if since is None else max(0.0, self.clock() - since)

    def recovery_points(self) -> dict[str, float]:
        with self._lock:
            return dict(self._recovery)

    def report(self, unpushed_count: int) -> dict[str, Any]:
        """The ``durability`` part of ``status``."""
        now = self.clock()
        since = self.oldest_unprotected(unpushed_count)
        return {
            "lag_seconds": 0.0 if since is None else round(max(0.0, now - since), 3),
            "oldest_unpushed_at": since,
            "recovery_points": {
                artifact: {"at": at, "age_seconds": round(max(0.0, now - at), 3)}
                for artifact, at in sorted(self.recovery_points().items())
            },
        }


def pushed_points(engine: Engine) -> dict[str, float]:
    """Per artifact, when its newest version that the remote holds was made (the registry
    thread, once at start-up): the recovery points a previous run left. Tags carry the
    version's time, close after its checkpoint's; an unreadable time is left out."""
    waiting = set(engine.registry.unpushed_commits()) if engine.registry.has_remote else set()
    points: dict[str, float] = {}
    for artifact, versions in engine.index().versions.items():
        for v in versions:  # newest first
            if v.pruned or (v.commit and v.commit in waiting):
                continue
            with contextlib.suppress(ValueError):
                points[artifact] = datetime.fromisoformat(v.created_at).timestamp()
            break
    return points
