"""The daemon's upload bandwidth cap (``[storage] max_upload_rate``): one token bucket that
every upload of the daemon draws from, whatever thread or backend sends the bytes.

Why in the progress callback: both backends report bytes as they read them for sending
(boto3's transfer threads call it from inside the HTTP body read; the local backend after
each copied chunk), so blocking there holds back the next read, which is what a cap on the
wire needs, without a second wrapper around each backend's file objects.

The bucket is a GCRA (generic cell rate algorithm): a "theoretical arrival time" moves
forward by ``n / rate`` per byte taken, and a caller waits until it is within ``burst`` of
now. That is fair between threads (each reservation is FIFO under the lock) and the wait
happens outside the lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from cpvd.storage.base import Progress

#: the burst a full bucket allows, in seconds of the rate: small, so any 10 s window is
#: within a few per cent of the cap, yet larger than one read of a transfer thread
BURST_SECONDS = 0.25
#: the burst never goes below this many bytes (boto3 reads bodies in 8 KiB..1 MiB pieces)
MIN_BURST = 1 << 20

class TokenBucket:
    """``rate`` bytes per second for all callers of :meth:`take` together (thread-safe)."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(rate * BURST_SECONDS, MIN_BURST)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tat = clock()  # theoretical arrival time: when the bucket is full again
        #: bytes taken so far (tests and status)
        self.taken = 0

    def reserve(self, n: int) -> float:
        """Take ``n`` bytes; returns how long the caller must wait before sending them."""
        if n <= 0:  # a rewind (boto3 reports a retried part's bytes as negative): no credit
            return 0.0
        with self._lock:
            now = self._clock()
            self._tat = max(self._tat, now) + n / self.rate
            self.taken += n
            return max(0.0, self._tat - now - self.burst / self.rate)

    def take(self, n: int) -> None:
        """Block until ``n`` more bytes fit the rate."""
        wait = self.reserve(n)
        if wait > 0:
            self._sleep(wait)


def metered(progress: Progress | None, bucket: TokenBucket | None) -> Progress | None:
    """``progress`` that first takes its bytes from ``bucket`` (no bucket: ``progress``)."""
    if bucket is None:
        return progress

    def report(n: int) -> None:
        bucket.take(n)
        if progress is not None:
            progress(n)

    return report
