"""gc as the daemon runs it: on request (``cpvctl gc``) and every ``[retention] gc_interval``.

The registry part runs on the registry thread (it must not interleave with a version
commit), the listing and deletion on an io thread, never on the worker's; one gc at a time.
Progress goes out as ``gc.progress`` events, the outcome as ``gc.finished`` / ``gc.failed``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cpvd.api.events import EventBus
from cpvd.config.model import Config
from cpvd.errors import CpvError, InputError
from cpvd.lifecycle.gc import collect, read_roots
from cpvd.lifecycle.marker import claim, identity_of
from cpvd.pipeline.threads import Executors
from cpvd.registry.core import EngineCore
from cpvd.storage.base import CollectableStorage

log = logging.getLogger(__name__)

#: at most this many ``gc.progress`` events a second
PROGRESS_INTERVAL = 0.2


@dataclass(eq=False)
class Collector:
    engine: EngineCore
    executors: Executors
    bus: EventBus
    config: Callable[[], Config]
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Make a running gc end at its next step (the daemon is stopping: its io pool waits
        for the thread, and a gc of a large bucket can take minutes)."""
        self._stop.set()

    def storage(self) -> CollectableStorage:
        storage = self.engine.storage
        if not isinstance(storage, CollectableStorage):
            raise InputError(f"gc is not supported on storage {storage.describe()}")
        return storage

    async def mark_storage(self) -> None:
        """Write the ownership marker when the storage has none (at start-up); a storage
        owned by another registry is logged here and refused by gc."""
        try:
            ident = await self.executors.on_registry(identity_of, self.engine.registry)
            await self.executors.on_io(claim, self.storage(), ident)
        except CpvError as exc:
            log.warning("%s", exc.message)

    async def run(self, dry_run: bool) -> dict[str, Any]:
        async with self._lock:
            storage = self.storage()
            grace = self.config().retention.grace_hours * 3600
            started = time.monotonic()
            try:
                roots = await self.executors.on_registry(read_roots, self.engine, True)
                registry_seconds = round(time.monotonic() - started, 3)
                result = await self.executors.on_io(
                    collect, storage, roots, grace, dry_run, self._progress(), time.time,
                    self._stop,
                )  # fmt: skip
            except CpvError as exc:
                self.bus.publish("gc.failed", message=exc.message, dry_run=dry_run)
                raise
            result["seconds"] = round(time.monotonic() - started, 3)
            result["phase_seconds"]["registry"] = registry_seconds
            self.bus.publish("gc.finished", **result)
            log.info(
                "gc%s: %d objects, %d bytes %s; %d kept versions, %d pruned",
                " (dry run)" if dry_run else "",
                result["objects_to_delete"],
                result["bytes_to_delete"],
                "would go" if dry_run else "deleted",
                result["versions_kept"],
                result["versions_pruned"],
            )
            return result

    def _progress(self) -> Callable[[int, int], None]:
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if done >= total or now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                self.bus.publish("gc.progress", bytes=done, total=total)

        return progress

    async def periodic(self) -> None:
        """Mark the storage as this registry's, then run gc every ``[retention]
        gc_interval`` hours (re-read each round, so a SIGHUP turns it on or off); a failed
        round is logged and the next one comes as planned."""
        await self.mark_storage()
        while True:
            hours = self.config().retention.gc_interval
            if hours <= 0:
                await asyncio.sleep(60)
                continue
            await asyncio.sleep(hours * 3600)
            if self.config().retention.gc_interval <= 0:
                continue
            try:
                await self.run(dry_run=False)
            except CpvError as exc:
                log.warning("periodic gc failed: %s", exc.message)
