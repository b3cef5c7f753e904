"""Read-only answers the API gives: versions, show, artifacts, jobs, pull manifests and
objects, and the daemon's status. Registry reads run on the registry thread (the engine is
not thread-safe); nothing here changes state."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cpvctl.protocol import API_VERSION, CPV_VERSION, Version, validate_name
from cpvd.config.model import Config, WatchConfig
from cpvd.errors import NotFound
from cpvd.pipeline.health import Health, Pause
from cpvd.pipeline.threads import Executors
from cpvd.redact import mask_url
from cpvd.registry.engine import Engine
from cpvd.state.queue import JobQueue

#: the checkpoints the watcher holds back, with the reason (cpvd.watch.watcher.Watcher.waiting)
Waiting = Callable[[], list[tuple[WatchConfig, Path, str]]]


def _version_arg(version: str | None) -> str | None:
    return None if version is None else str(Version.parse(version))


@dataclass(eq=False)
class Queries:
    """Read-only: registry answers (on the registry thread, cached by engine generation) and
    job lookups. Never writes the queue, the ledger or the registry."""

    config: Callable[[], Config]
    engine: Engine
    queue: JobQueue
    executors: Executors

    def __post_init__(self) -> None:
        self._versions_cache: dict[str, tuple[tuple[str, int], bytes]] = {}

    async def versions_json(self, artifact: str) -> bytes:
        """The ``versions`` answer, serialised; cached until the engine's generation moves
        (10,000 versions took ~0.5 s to build and serialise on every call)."""
        return await self.executors.on_registry(self._versions_json, validate_name(artifact))

    def _versions_json(self, artifact: str) -> bytes:  # on the registry thread
        key = (artifact, self.engine.generation)
        hit = self._versions_cache.get(artifact)
        if hit is not None and hit[0] == key:
            return hit[1]
        infos = self.engine.versions(artifact)
        if not infos and artifact not in self.config().artifact_kinds():
            raise NotFound(f"unknown artifact {artifact!r}", "unknown_artifact")
        body = json.dumps([i.to_json() for i in infos]).encode()
        self._versions_cache[artifact] = (key, body)
        return body

    async def show(self, artifact: str, version: str | None) -> dict[str, Any]:
        validate_name(artifact)
        info = await self.executors.on_registry(self.engine.show, artifact, _version_arg(version))
        return info.to_json()

    async def artifacts(self) -> list[dict[str, Any]]:
        return await self.executors.on_registry(self.engine.artifacts)

    def job(self, job_id: str) -> dict[str, Any]:
        job = self.queue.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id}", "unknown_job")
        return job.to_dict()

    async def manifest(self, artifact: str, version: str | None) -> dict[str, Any]:
        validate_name(artifact)
        m = await self.executors.on_registry(self.engine.manifest, artifact, _version_arg(version))
        return m.to_json()

    async def open_object(self, md5: str) -> BinaryIO:
        """A stored object's bytes, for ``pull`` (read on an io thread by the caller)."""
        return await self.executors.on_io(self.engine.storage.open_object, md5)

    async def read(self, stream: BinaryIO, size: int) -> bytes:
        return await self.executors.on_io(stream.read, size)

    async def close(self, stream: BinaryIO) -> None:
        await self.executors.on_io(stream.close)


@dataclass(eq=False)
class Status:
    """The ``status`` answer: daemon, queue, watches, waiting checkpoints, storage, registry."""

    config: Callable[[], Config]
    queue: JobQueue
    health: Health
    pause: Pause
    waiting: Waiting
    #: config keys a SIGHUP changed that the daemon applies only at its next start
    restart_needed: Callable[[], list[str]] = list

    def __post_init__(self) -> None:
        self.started = time.time()

    def report(self) -> dict[str, Any]:
        cfg, health = self.config(), self.health
        return {
            "daemon": {
                "pid": os.getpid(),
                "version": CPV_VERSION,
                "api_version": API_VERSION,
                "uptime": round(time.time() - self.started, 1),
                "paused": self.pause.describe(),
                "state_dir": str(cfg.daemon.state_dir),
                "restart_needed": list(self.restart_needed()),
            },
            "queue": {**self.queue.counts(), "depth": self.queue.depth()},
            "jobs": [
                j.to_dict()
                for j in self.queue.list(states=("queued", "running", "failed"), limit=50)
            ],
            "watches": [self._watch(w) for w in cfg.watches],
            "waiting": [
                {"artifact": w.artifact, "path": str(p), "reason": r} for w, p, r in self.waiting()
            ],
            "storage": {
                "url": mask_url(cfg.storage.url),
                "reachable": health.storage_ok,
                "error": health.storage_error,
            },
            "registry": {
                "path": str(cfg.registry.path),
                "remote": mask_url(cfg.registry.remote) if cfg.registry.remote else None,
                "reachable": health.remote_ok,
                "error": health.remote_error,
                "unpushed": health.unpushed,
            },
        }

    def _watch(self, w: WatchConfig) -> dict[str, Any]:
        return {
            "path": str(w.path),
            "artifact": w.artifact,
            "kind": w.kind,
            "poll": w.poll,
            "exists": w.path.is_dir(),
            "paused": self.pause.is_paused(w.artifact),
        }
