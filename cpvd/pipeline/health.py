"""What the daemon knows about its surroundings and its own gates: the last reachability of
the storage and the Git remote, which artifacts are paused, and the two wake-ups the worker
and the pusher sleep on. Plain shared state, created once in the composition root and handed
to the few objects that read or change it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class Health:
    """Last known reachability of the storage and the Git remote (shown by status)."""

    storage_ok: bool | None = None
    storage_error: str | None = None
    remote_ok: bool | None = None
    remote_error: str | None = None
    unpushed: int = 0

    def storage_up(self) -> None:
        self.storage_ok, self.storage_error = True, None

    def storage_down(self, message: str) -> None:
        self.storage_ok, self.storage_error = False, message


@dataclass
class Pause:
    """``cpvctl pause [NAME]``: no job of a paused artifact is claimed, and no byte of one
    leaves early. In memory only: a restart resumes everything."""

    everything: bool = False
    artifacts: set[str] = field(default_factory=set)

    def is_paused(self, artifact: str) -> bool:
        return self.everything or artifact in self.artifacts

    def pause(self, artifact: str | None) -> None:
        if artifact is None:
            self.everything = True
        else:
            self.artifacts.add(artifact)

    def resume(self, artifact: str | None) -> None:
        if artifact is None:
            self.everything = False
            self.artifacts.clear()
        else:
            self.artifacts.discard(artifact)

    def describe(self) -> str | list[str]:
        return "all" if self.everything else sorted(self.artifacts)


@dataclass
class Wakeups:
    """``work``: a job may be ready (the worker sleeps on it); ``push``: commits wait to be
    pushed (the pusher sleeps on it)."""

    work: asyncio.Event = field(default_factory=asyncio.Event)
    push: asyncio.Event = field(default_factory=asyncio.Event)
