"""What the daemon remembers about each hook's deliveries since it started: counts, the
last error, and the most recent attempts (for ``cpvctl hooks``, ``status`` and /metrics).
In memory and bounded; the outbox holds what must survive a restart."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from cpvd.hooks.attempt import Attempt
from cpvd.hooks.event import HookEvent

RECENT = 20


@dataclass
class HookRecord:
    delivered: int = 0
    failures: int = 0
    #: failed attempts since the last success (0: healthy)
    failing: int = 0
    last_error: str | None = None
    retry_at: float | None = None
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))

    def note(self, event: HookEvent, attempt: Attempt, retry_at: float | None = None) -> None:
        if attempt.ok:
            self.delivered += 1
            self.failing, self.last_error, self.retry_at = 0, None, None
        else:
            self.failures += 1
            self.failing += 1
            self.last_error, self.retry_at = attempt.detail, retry_at
        self.recent.append(
            {
                "event_id": event.id,
                "type": event.type,
                "at": time.time(),
                "ok": attempt.ok,
                "detail": attempt.detail,
                "seconds": round(attempt.seconds, 3),
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "failures": self.failures,
            "failing": self.failing,
            "last_error": self.last_error,
            "retry_at": self.retry_at,
            "recent": list(self.recent)[::-1],
        }
