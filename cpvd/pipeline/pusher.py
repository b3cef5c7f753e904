"""The pusher task: versions reach the registry remote promptly, batched when several finish
together. Owns nothing but its loop; the push itself (atomic, replayed on top of another
machine's history when rejected) is the registry's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from cpvd.api.events import EventBus
from cpvd.config.model import Config
from cpvd.errors import CpvError
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


class Pusher:
    def __init__(
        self,
        config: Callable[[], Config],
        queue: JobQueue,
        engine: Engine,
        executors: Executors,
        health: Health,
        wakeups: Wakeups,
        bus: EventBus,
    ) -> None:
        self._config = config
        self._queue = queue
        self._engine = engine
        self._ex = executors
        self._health = health
        self._wanted = wakeups.push
        self._bus = bus
        self.stopping = False

    async def run(self) -> None:
        if not self._config().registry.remote:
            return
        delay: float | None = None
        self._wanted.set()  # push whatever a previous run left behind
        while not self.stopping:
            await self._wanted.wait()
            self._wanted.clear()
            await self._gather_burst()
            try:
                report = await self._ex.on_registry(self._engine.push)
            except CpvError as exc:
                backoff = Backoff(base=1.0, cap=min(60.0, self._config().daemon.retry_max_seconds))
                delay = backoff.after(delay)
                await self._failed(exc, delay)
                continue
            delay = None
            self._health.remote_ok, self._health.remote_error = True, None
            self._health.unpushed = 0
            for old, new in report.renumbered:
                log.info("renumbered %s -> %s (another machine took the number)", old, new)
                self._bus.publish("renumbered", old=old, new=new)
            if report.pushed:
                self._bus.publish("pushed", commits=report.pushed)

    async def _gather_burst(self) -> None:
        await asyncio.sleep(PUSH_BATCH_DELAY)
        waited = PUSH_BATCH_DELAY
        while waited < PUSH_MAX_WAIT and not self.stopping and self._queue.depth() > 0:
            await asyncio.sleep(PUSH_BATCH_DELAY)
            waited += PUSH_BATCH_DELAY

    async def _failed(self, exc: CpvError, delay: float) -> None:
        self._health.remote_ok, self._health.remote_error = False, exc.message
        self._health.unpushed = await self._ex.on_registry(self._unpushed)
        log.warning(
            "push to %s failed: %s; retrying in %.0fs",
            mask_url(self._config().registry.remote or ""),
            exc.message,
            delay,
        )
        try:
            await asyncio.sleep(delay)
        finally:
            self._wanted.set()

    def _unpushed(self) -> int:
        try:
            return self._engine.unpushed()
        except CpvError:
            return self._health.unpushed
