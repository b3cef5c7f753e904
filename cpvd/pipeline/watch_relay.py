"""Carries the watcher's decisions (made on its own thread) onto the event loop: a complete
checkpoint to the intake, an early-snapshot offer or drop to the speculative snapshots, an
invalid one to the event stream. Holds no state of its own."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from cpvd.api.events import EventBus
from cpvd.config.model import WatchConfig
from cpvd.pipeline.intake import Intake
from cpvd.pipeline.speculative_snapshot import SpeculativeSnapshots
from cpvd.watch.settle import Hint, Signature


@dataclass(eq=False)
class WatchRelay:
    """Stateless: the watcher's three callbacks, each handed to the loop thread."""

    loop: asyncio.AbstractEventLoop
    intake: Intake
    speculative: SpeculativeSnapshots
    bus: EventBus

    def ready(self, watch: WatchConfig, path: Path, sig: Signature) -> None:
        self.loop.call_soon_threadsafe(self.intake.accept, watch, path, sig.size, sig.mtime_ns)

    def waiting(self, watch: WatchConfig, path: Path, reason: str) -> None:
        self.bus.publish("waiting", artifact=watch.artifact, path=str(path), reason=reason)

    def hint(self, watch: WatchConfig, hint: Hint) -> None:
        if hint.what == "offer" and hint.signature is not None:
            sig = hint.signature
            self.loop.call_soon_threadsafe(
                self.speculative.offer, watch, hint.path, sig.size, sig.mtime_ns, hint.sealed
            )
        else:
            self.loop.call_soon_threadsafe(self.speculative.discard, watch.artifact, str(hint.path))
