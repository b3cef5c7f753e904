"""What the API may change: retry a job, revert, promote, pause and resume, verify.

Each call validates its input, runs the registry part on the registry thread, records what
the durable state must remember (the ledger row of a revert) and publishes the event. No
HTTP here; the handlers call one method each.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpvctl.protocol import ref_of, validate_name
from cpvd.api.events import EventBus
from cpvd.errors import CpvError, InputError
from cpvd.pipeline.health import Health, Pause, Wakeups
from cpvd.pipeline.intake import request_path
from cpvd.pipeline.threads import Executors
from cpvd.registry.engine import Engine
from cpvd.registry.pruned import check_restorable
from cpvd.state.ledger import Ledger
from cpvd.state.queue import JobQueue
from cpvd.watch.settle import signature_of, walk


@dataclass(eq=False)
class Operations:
    """Owns no state: each verb changes the registry (on its thread), the ledger, the pause
    state or a job, and publishes what happened. Never touches the watcher or a snapshot."""

    engine: Engine
    queue: JobQueue
    ledger: Ledger
    executors: Executors
    health: Health
    paused: Pause
    wakeups: Wakeups
    bus: EventBus

    def retry(self, job_id: str) -> dict[str, Any]:
        job = self.queue.retry(job_id)
        self.wakeups.work.set()
        return job.to_dict()

    async def revert(
        self,
        artifact: str,
        version: str,
        with_data: bool,
        to: str | None,
        include_pruned: bool = False,
    ) -> dict[str, Any]:
        target = request_path(to, "to") if to is not None else None
        engine = self.engine
        version = await self._resolve(artifact, version)
        await self.executors.on_registry(self._restorable, artifact, version, with_data,
                                         include_pruned)  # fmt: skip
        await self.executors.on_registry(self._expect, artifact, version, with_data, target)
        results = await self.executors.on_registry(
            engine.revert, artifact, version, with_data, target
        )
        for r in results:
            files = walk(Path(r.path))
            info = await self.executors.on_registry(engine.show, r.artifact, r.version)
            if files:
                sig = signature_of(files)
                self.ledger.record(
                    r.artifact, r.path, info.md5, sig.size, sig.mtime_ns, r.version, "reverted"
                )
            self.bus.publish(
                "reverted", artifact=r.artifact, version=r.version, path=r.path, backup=r.backup
            )
        await self._refresh_unpushed()
        return {"reverted": [r.__dict__ for r in results]}

    def _restorable(
        self, artifact: str, version: str, with_data: bool, include_pruned: bool
    ) -> None:
        """A pruned version (or data version of its lineage) only when asked for by name."""
        engine = self.engine
        for info in engine.with_lineage(engine.show(artifact, version), with_data):
            check_restorable(engine, info, include_pruned)

    def _expect(self, artifact: str, version: str, with_data: bool, to: Path | None) -> None:
        """Record each path a revert will restore, with the content it will hold, before the
        bytes land (on the registry thread). A kill between the restore and the ledger row
        written after it, with ``--to`` inside a watch, let the rescan version the restored
        bytes again. Size and mtime are not known yet (-1): the rescan hashes the file once
        and the worker finds its md5 handled (``seen_content``). A revert refused later
        leaves a row naming bytes that are a version of that artifact anyway."""
        engine = self.engine
        for info in engine.with_lineage(engine.show(artifact, version), with_data):
            base = to if to is not None else Path(info.source).parent
            if info.source and base.is_absolute():
                dest = Path(os.path.realpath(base)) / info.name
                self.ledger.record(
                    info.artifact, str(dest), info.md5, -1, -1, info.version, "reverted"
                )

    async def _resolve(self, artifact: str, selector: str | None) -> str:
        """The ``vX.Y.Z`` a reference names now (``selector``: see cpvctl.protocol.Ref)."""
        info = await self.executors.on_registry(self.engine.resolve, ref_of(artifact, selector))
        return info.version

    async def promote(
        self, artifact: str, version: str | None, stage: str, with_data: bool
    ) -> dict[str, Any]:
        version = await self._resolve(artifact, version)
        made = await self.executors.on_registry(
            self.engine.promote, artifact, version, stage, with_data
        )
        for m in made:
            self.bus.publish("promoted", **m)
        return {"promoted": made}

    def pause(self, artifact: str | None) -> dict[str, Any]:
        self.paused.pause(None if artifact is None else validate_name(artifact))
        return {"paused": self.paused.describe()}

    def resume(self, artifact: str | None) -> dict[str, Any]:
        self.paused.resume(None if artifact is None else validate_name(artifact))
        self.wakeups.work.set()
        return {"paused": self.paused.describe()}

    async def verify(self, sample: int | None, artifact: str | None) -> dict[str, Any]:
        if artifact is not None:
            validate_name(artifact)
        if sample is not None and (not isinstance(sample, int) or sample < 1):
            raise InputError("sample must be a positive integer")
        infos = await self.executors.on_registry(self.engine.verify_targets, sample, artifact)
        return await self.executors.on_io(self.engine.verify_objects, infos)  # the long part

    async def _refresh_unpushed(self) -> None:
        with contextlib.suppress(CpvError):
            self.health.unpushed = await self.executors.on_registry(self.engine.unpushed)
        if self.health.unpushed:
            self.wakeups.push.set()
