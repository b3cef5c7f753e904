"""The one retry policy: exponential backoff, capped, optionally jittered.

Every place that waits before trying again (a failed job, a rejected push, a checkpoint
that is not valid yet, a snapshot whose source changed under the copy, the worker loop
itself) takes its delays from a :class:`Backoff`, so the rule is written once and tested
once. Only the numbers differ between callers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delay before retry number ``attempt`` (1-based): ``base * 2**(attempt-1)``, at most
    ``cap``. With ``jitter`` the delay is scaled by a factor in [0.5, 1]: several jobs (or
    machines) hitting the same outage spread out, while each delay stays at least half the
    nominal one, so the sequence never shrinks."""

    base: float
    cap: float
    jitter: bool = False

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        nominal = min(self.cap, self.base * 2.0 ** max(0, attempt - 1))
        if not self.jitter:
            return nominal
        return nominal * (0.5 + 0.5 * (rng or random).random())

    def after(self, previous: float | None) -> float:
        """The delay that follows ``previous`` (None: the first), for loops that keep the
        last delay rather than an attempt count."""
        if previous is None:
            return min(self.cap, self.base)
        return min(self.cap, max(self.base, previous * 2.0))
