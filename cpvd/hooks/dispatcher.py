"""Delivers the outbox: one asyncio task ("lane") per hook, so a slow or failing hook never
holds up another, and nothing runs on the worker's path (a version only costs the insert
that records its event). A lane takes its hook's due deliveries oldest first, one at a time;
after a failure it backs off (the shared policy, capped by ``[daemon] retry_max_seconds``)
before trying that hook again, so a receiver that is down is not hammered with the whole
backlog. Successes are deleted from the outbox in small batches (a crash before the batch
is written delivers those again, with the same ids: at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiohttp

from cpvd.config.model import Config
from cpvd.errors import CpvError
from cpvd.hooks.attempt import Attempt
from cpvd.hooks.event import HookEvent
from cpvd.hooks.exec_runner import run_exec
from cpvd.hooks.http_sender import client_session, post
from cpvd.hooks.model import HookConfig
from cpvd.hooks.outbox import Delivery, Outbox
from cpvd.hooks.record import HookRecord
from cpvd.retry import Backoff

log = logging.getLogger(__name__)

BATCH = 50
#: seconds between two writes of the deliveries hooks took (all hooks in one transaction)
ACK_EVERY = 1.0
#: longest a delivery waits for a backlog of versions to clear (seconds after its event)
DEFER_MAX = 60.0
#: how often a held-back lane looks at the backlog again
BUSY_POLL = 0.5


class Dispatcher:
    def __init__(
        self,
        config: Callable[[], Config],
        outbox: Outbox,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.config, self.outbox, self.busy = config, outbox, busy
        self.records: dict[str, HookRecord] = {}
        self._lanes: dict[str, asyncio.Task[None]] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        #: each failing hook's current backoff (gone after a success)
        self._delays: dict[str, float] = {}
        #: deliveries taken by their hook, not yet deleted from the outbox (by seq)
        self._acks: dict[int, Delivery] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self.stopping = False

    def hook(self, name: str) -> HookConfig | None:
        return next((h for h in self.config().hooks if h.name == name), None)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._session = client_session()
        recovered = self.outbox.recover()
        if recovered:
            log.info("hooks: %d deliveries left by a previous run are due now", recovered)
        self._flusher = asyncio.create_task(self._flush_acks(), name="hook-acks")
        self.sync()

    def sync(self) -> None:
        """A lane for every configured hook (call after a SIGHUP); lanes of removed hooks end."""
        names = {h.name for h in self.config().hooks}
        for name in names - set(self._lanes):
            self.records.setdefault(name, HookRecord())
            self._wakeups[name] = asyncio.Event()
            self._lanes[name] = asyncio.create_task(self._lane(name), name=f"hook-{name}")
        for name in set(self._lanes) - names:
            self._lanes.pop(name).cancel()
            self._wakeups.pop(name, None)

    def pending(self) -> dict[str, int]:
        """Deliveries waiting per hook (those taken but not yet written off excluded)."""
        counts = self.outbox.pending()
        for d in list(self._acks.values()):
            counts[d.hook] = counts.get(d.hook, 0) - 1
        return {hook: n for hook, n in counts.items() if n > 0}

    def wake(self) -> None:
        """Something was recorded; callable from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between: shutdown
            loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        for event in self._wakeups.values():
            event.set()

    async def stop(self) -> None:
        self.stopping = True
        tasks = [*self._lanes.values(), *([self._flusher] if self._flusher else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._lanes.clear()
        with contextlib.suppress(CpvError):  # unwritable: they are delivered again next start
            self._write_acks()
        if self._session is not None:
            await self._session.close()

    async def send(self, hook: HookConfig, event: HookEvent) -> Attempt:
        if hook.url is not None:
            assert self._session is not None, "start() first"
            return await post(self._session, hook, event)
        return await run_exec(hook, event)

    # -- lanes ------------------------------------------------------------------------------

    async def _lane(self, name: str) -> None:
        """Outlives any failure of its own (the state database unwritable: disk full)."""
        delay: float | None = None
        while not self.stopping and self.hook(name) is not None:
            try:
                await self._lane_step(name)
                delay = None
            except CpvError as exc:
                delay = self._backoff().after(delay)
                log.error("hook %s: %s; retrying in %.0fs", name, exc.message, delay)
                await asyncio.sleep(delay)

    async def _lane_step(self, name: str) -> None:
        """Deliver what is due; sleep until more is due or recorded, or after a failed
        delivery for the hook's backoff (new events do not cut it short)."""
        hook = self.hook(name)
        if hook is None:
            return
        if self.busy():  # versions are waiting: they go first (checked before any batch is read)
            oldest = self.outbox.oldest(name)
            if oldest is not None and time.time() < oldest + DEFER_MAX:
                await asyncio.sleep(BUSY_POLL)
                return
        self._wakeups[name].clear()  # before reading: a record after this wakes us
        taken = self._acks
        due = self.outbox.due(name, time.time(), BATCH + len(taken))
        batch = [d for d in due if d.seq not in taken][:BATCH]
        if not batch:  # the rows due now, if any, were taken and wait for the next ack write
            until = self.outbox.next_due_at(name)
            if due and until is not None:
                until = max(until, time.time() + ACK_EVERY)
            await self._sleep(name, until)
            return
        failed = await self._deliver(hook, batch)
        if failed is None:
            self._delays.pop(name, None)
            return
        delay = self._delays[name] = self._backoff().after(self._delays.get(name))
        record = self.records[name]
        record.retry_at = time.time() + delay
        self.outbox.failed(failed.seq, record.last_error or "", record.retry_at)
        log.warning(
            "hook %s: event %s (%s) not delivered: %s; retrying in %.0fs",
            name, failed.event.id, failed.event.type, record.last_error, delay,
        )  # fmt: skip
        await asyncio.sleep(delay)

    async def _deliver(self, hook: HookConfig, batch: list[Delivery]) -> Delivery | None:
        """Send ``batch`` in order until one fails (returned); the successes are acked."""
        record = self.records[hook.name]
        for item in batch:
            attempt = await self.send(hook, item.event)
            record.note(item.event, attempt)
            if not attempt.ok:
                return item
            self._acks[item.seq] = item
        return None

    async def _flush_acks(self) -> None:
        while True:
            await asyncio.sleep(ACK_EVERY)
            try:
                self._write_acks()
            except CpvError as exc:  # kept, and tried again at the next round
                log.error("hooks: could not record deliveries: %s", exc.message)

    def _write_acks(self) -> None:
        if self._acks:
            taken = list(self._acks.values())
            self.outbox.delivered(taken)
            for d in taken:
                self._acks.pop(d.seq, None)

    def _backoff(self) -> Backoff:
        return Backoff(base=1.0, cap=max(0.05, min(300.0, self.config().daemon.retry_max_seconds)))

    async def _sleep(self, name: str, until: float | None) -> None:
        wakeup = self._wakeups.get(name)
        if wakeup is None:
            return
        timeout = None if until is None else max(0.0, until - time.time())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), timeout)
