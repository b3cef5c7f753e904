"""The pusher task: versions reach the registry remote promptly, batched when several finish
together. Owns nothing but its loop; the push itself (atomic, replayed on top of another
machine's history when rejected) is the registry's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cpvd.api.events import EventBus
from cpvd.config.model import Config
from cpvd.errors import CpvError
from cpvd.lifecycle.runner import Lifecycle
from cpvd.pipeline.health import Health, Wakeups
from cpvd.pipeline.threads import Executors
from cpvd.redact import mask_url
from cpvd.registry.engine import Engine
from cpvd.retry import Backoff
from cpvd.state.queue import JobQueue

log = logging.getLogger(__name__)

PUSH_BATCH_DELAY = 0.05  # let versions finishing together share one push
#: while the queue still holds jobs, wait up to this long so a burst shares few pushes (a
#: push costs ~50-100 ms of the registry thread; one per version capped a burst at ~6/s)
PUSH_MAX_WAIT = 1.0


@dataclass(eq=False)
class Pusher:
    """Owns its loop and backoff; writes only the remote part of :class:`Health`. The push
    (atomic, replayed when another machine won) is the engine's."""

    config: Callable[[], Config]
    queue: JobQueue
    engine: Engine
    executors: Executors
    health: Health
    wakeups: Wakeups
    bus: EventBus
    #: best catch-up and retention after each successful push; None: neither
    lifecycle: Lifecycle | None = None

    def __post_init__(self) -> None:
        self._wanted = self.wakeups.push
        self.stopping = False

    async def run(self) -> None:
        if self.lifecycle is not None:  # before the first push; status shows the summary
            with contextlib.suppress(CpvError):
                await self.executors.on_registry(self.lifecycle.start)
        if not self.config().registry.remote:
            await self._lifecycle()  # finish what a kill interrupted; no push to wait for
            return
        delay: float | None = None
        self._wanted.set()  # push whatever a previous run left behind
        while not self.stopping:
            await self._wanted.wait()
            self._wanted.clear()
            await self._gather_burst()
            try:
                report = await self.executors.on_registry(self.engine.push)
            except CpvError as exc:
                backoff = Backoff(base=1.0, cap=min(60.0, self.config().daemon.retry_max_seconds))
                delay = backoff.after(delay)
                await self._failed(exc, delay)
                continue
            delay = None
            self.health.remote_ok, self.health.remote_error = True, None
            self.health.unpushed = 0
            for old, new in report.renumbered:
                log.info("renumbered %s -> %s (another machine took the number)", old, new)
                self.bus.publish("renumbered", old=old, new=new)
            if report.pushed:
                self.bus.publish("pushed", commits=report.pushed)
            await self._lifecycle()

    async def _lifecycle(self) -> None:
        """Best catch-up and retention, only once everything made so far is pushed."""
        if self.lifecycle is None:
            return
        try:
            await self.executors.on_registry(self.lifecycle.after_push)
        except CpvError as exc:
            log.warning("best/retention after the push failed: %s; retried later", exc.message)

    async def _gather_burst(self) -> None:
        await asyncio.sleep(PUSH_BATCH_DELAY)
        waited = PUSH_BATCH_DELAY
        while waited < PUSH_MAX_WAIT and not self.stopping and self.queue.depth() > 0:
            await asyncio.sleep(PUSH_BATCH_DELAY)
            waited += PUSH_BATCH_DELAY

    async def _failed(self, exc: CpvError, delay: float) -> None:
        self.health.remote_ok, self.health.remote_error = False, exc.message
        self.health.unpushed = await self.executors.on_registry(self._unpushed)
        log.warning(
            "push to %s failed: %s; retrying in %.0fs",
            mask_url(self.config().registry.remote or ""),
            exc.message,
            delay,
        )
        try:
            await asyncio.sleep(delay)
        finally:
            self._wanted.set()

    def _unpushed(self) -> int:
        try:
            return self.engine.unpushed()
        except CpvError:
            return self.health.unpushed
