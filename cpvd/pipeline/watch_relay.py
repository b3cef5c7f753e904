"""Carries the watcher's decisions (made on its own thread) onto the event loop: a complete
checkpoint to the intake, an early-snapshot offer or drop to the speculative snapshots, an
invalid one to the event stream. Holds no state of its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cpvd.api.events import EventBus
from cpvd.config.model import WatchConfig
from cpvd.pipeline.intake import Intake
from cpvd.pipeline.speculative_snapshot import SpeculativeSnapshots
from cpvd.watch.settle import Hint, Signature


class WatchRelay:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        intake: Intake,
        speculative: SpeculativeSnapshots,
        bus: EventBus,
    ) -> None:
        self._loop = loop
        self._intake = intake
        self._speculative = speculative
        self._bus = bus

    def ready(self, watch: WatchConfig, path: Path, sig: Signature) -> None:
        self._loop.call_soon_threadsafe(self._intake.accept, watch, path, sig.size, sig.mtime_ns)

    def waiting(self, watch: WatchConfig, path: Path, reason: str) -> None:
        self._bus.publish("waiting", artifact=watch.artifact, path=str(path), reason=reason)

    def hint(self, watch: WatchConfig, hint: Hint) -> None:
        if hint.what == "offer" and hint.signature is not None:
            sig = hint.signature
            self._loop.call_soon_threadsafe(
                self._speculative.offer, watch, hint.path, sig.size, sig.mtime_ns
            )
        else:
            self._loop.call_soon_threadsafe(
                self._speculative.discard, watch.artifact, str(hint.path)
            )
