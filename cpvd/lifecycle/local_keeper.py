"""The daemon's side of ``keep_local``: after each version and each push, delete the
checkpoints cpvd.lifecycle.local_space chooses, log each one and emit ``local.deleted``.

Facts about versions (pushed? staged?) are read on the registry thread; the directory
listing and the deletions run on an io thread, never on the worker's.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cpvd.api.events import EventBus
from cpvd.config.model import Config, WatchConfig
from cpvd.errors import CpvError
from cpvd.lifecycle.local_space import choose, delete_unit, units_in
from cpvd.pipeline.threads import Executors
from cpvd.registry.core import EngineCore
from cpvd.state.ledger import Ledger, LedgerEntry

log = logging.getLogger(__name__)

TRIGGERS = frozenset({"versioned", "unchanged", "pushed"})
DEBOUNCE = 0.2


@dataclass(frozen=True)
class VersionFacts:
    durable: dict[str, set[str]]  # artifact -> versions pushed (or committed, with no remote)
    protected: dict[str, set[str]]  # artifact -> versions holding a stage


def version_facts(engine: EngineCore) -> VersionFacts:
    """Read on the registry thread."""
    reg = engine.registry
    unpushed: set[str] = set()
    if reg.has_remote:
        if reg.remote_branch() is None:
            return VersionFacts({}, {})  # nothing pushed yet
        unpushed = set(reg.unpushed_commits())
    durable: dict[str, set[str]] = {}
    protected: dict[str, set[str]] = {}
    for artifact, vs in engine.index().versions.items():
        durable[artifact] = {v.version for v in vs if v.commit and v.commit not in unpushed}
        protected[artifact] = {v.version for v in vs if v.stages}
    return VersionFacts(durable, protected)


@dataclass(eq=False)
class LocalKeeper:
    config: Callable[[], Config]
    engine: EngineCore
    ledger: Ledger
    executors: Executors
    bus: EventBus

    async def run(self) -> None:
        async with self.bus.subscribe(TRIGGERS) as sub:
            await self._sweep_logged()
            while True:
                event = await sub.get()
                if event is None:
                    return
                await asyncio.sleep(DEBOUNCE)
                while await sub.get(timeout=0) is not None:
                    pass  # one sweep for a burst
                await self._sweep_logged()

    async def _sweep_logged(self) -> None:
        try:
            await self.sweep()
        except (CpvError, OSError) as exc:
            log.warning("keep_local: %s", getattr(exc, "message", exc))

    async def sweep(self) -> int:
        watches = [w for w in self.config().watches if w.keep_local > 0]
        if not watches:
            return 0
        facts = await self.executors.on_registry(version_facts, self.engine)
        deleted = 0
        for w in watches:
            deleted += await self._sweep_watch(w, facts)
        return deleted

    async def _sweep_watch(self, w: WatchConfig, facts: VersionFacts) -> int:
        root = Path(w.path)
        units = await self.executors.on_io(units_in, root)
        handled = {u.name: self._handled(w.artifact, root / u.name) for u in units}
        chosen = choose(
            units,
            w.keep_local,
            handled,
            facts.durable.get(w.artifact, set()),
            facts.protected.get(w.artifact, set()),
        )
        deleted = 0
        for d in chosen:
            if await self.executors.on_io(delete_unit, root, d.unit):
                path = str(root / d.unit.name)
                log.info(
                    "keep_local: deleted %s (%s@%s, pushed; keeping the %d newest)",
                    path, w.artifact, d.version, w.keep_local,
                )  # fmt: skip
                self.bus.publish(
                    "local.deleted", artifact=w.artifact, version=d.version, path=path,
                    bytes=d.unit.size, keep_local=w.keep_local,
                )  # fmt: skip
                deleted += 1
        return deleted

    def _handled(self, artifact: str, path: Path) -> LedgerEntry | None:
        entry = self.ledger.lookup(artifact, str(path))
        real = os.path.realpath(path)
        if entry is None and real != str(path):
            entry = self.ledger.lookup(artifact, real)
        return entry
