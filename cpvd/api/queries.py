"""Read-only answers the API gives: versions, show, artifacts, jobs, pull manifests and
objects, and the daemon's status. Registry reads run on the registry thread (the engine is
not thread-safe); nothing here changes state."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from cpvctl.protocol import API_VERSION, CPV_VERSION, Ref, ref_of, validate_name
from cpvd.api.version_pages import PageRequest, page
from cpvd.config.model import Config, WatchConfig
from cpvd.config.views import is_multi, registry_of
from cpvd.errors import NotFound
from cpvd.pipeline.health import Health, Pause
from cpvd.pipeline.threads import Executors
from cpvd.redact import mask_url
from cpvd.registry.engine import Engine, Manifest
from cpvd.registry.pruned import check_restorable
from cpvd.state.queue import JobQueue
from cpvd.watch.pending import Pending, status_rows
from cpvd.watch.unit_scan import UnitScan

#: versions pages kept (each a few KiB, the plot's data about 1 MB at 10,000 versions)
PAGE_CACHE_SIZE = 32
#: the checkpoints the watcher holds back, settling or waiting (cpvd.watch.watcher.Watcher.pending)
Waiting = Callable[[], list[tuple[WatchConfig, Pending]]]
#: what each watch holds outside every unit (cpvd.watch.watcher.Watcher.ignored)
Ignored = Callable[[], list[tuple[WatchConfig, UnitScan]]]


@dataclass(eq=False)
class Queries:
    """Read-only: registry answers (on the registry thread, cached by engine generation) and
    job lookups. Never writes the queue, the ledger or the registry."""

    config: Callable[[], Config]
    engine: Engine
    queue: JobQueue
    executors: Executors

    def __post_init__(self) -> None:
        self._versions_cache: dict[str, tuple[tuple[str, int], bytes]] = {}  # artifact\0all
        self._rows_cache: dict[str, tuple[tuple[str, int], list[dict[str, Any]]]] = {}
        self._page_cache: dict[tuple[str, int, PageRequest], bytes] = {}

    async def versions_page(self, artifact: str, req: PageRequest) -> tuple[bytes, int]:
        """One page of the ``versions`` answer and the total count (the local page asks
        for one page at a time)."""
        return await self.executors.on_registry(self._versions_page, validate_name(artifact), req)

    def _versions_page(self, artifact: str, req: PageRequest) -> tuple[bytes, int]:
        """Cached per request until the generation moves: the page asks for the same plot
        data and first page again after every event (10,000 versions: ~0.25 s to build)."""
        rows = self._version_rows(artifact)
        key = (artifact, self.engine.generation, req)
        hit = self._page_cache.get(key)
        if hit is None:
            if len(self._page_cache) >= PAGE_CACHE_SIZE:
                self._page_cache.clear()
            hit = self._page_cache[key] = json.dumps(page(rows, req)).encode()
        return hit, len(rows)

    def _version_rows(self, artifact: str) -> list[dict[str, Any]]:  # on the registry thread
        key = (artifact, self.engine.generation)
        hit = self._rows_cache.get(artifact)
        if hit is not None and hit[0] == key:
            return hit[1]
        infos = self.engine.versions(artifact)
        if not infos and artifact not in self.config().artifact_kinds():
            raise NotFound(f"unknown artifact {artifact!r}", "unknown_artifact")
        rows = [i.to_json() for i in infos]
        self._rows_cache[artifact] = (key, rows)
        return rows

    async def versions_json(self, artifact: str, every: bool = False) -> bytes:
        """The ``versions`` answer, serialised; cached until the engine's generation moves
        (10,000 versions took ~0.5 s to build and serialise on every call). Pruned versions
        only with ``every`` (``cpvctl versions --all``)."""
        name = validate_name(artifact)
        return await self.executors.on_registry(self._versions_json, name, every)

    def _versions_json(self, artifact: str, every: bool = False) -> bytes:  # registry thread
        key = (f"{artifact}\0{every}", self.engine.generation)
        hit = self._versions_cache.get(key[0])
        if hit is not None and hit[0] == key:
            return hit[1]
        infos = [i for i in self.engine.versions(artifact) if every or not i.pruned]
        if not infos and artifact not in self.config().artifact_kinds():
            raise NotFound(f"unknown artifact {artifact!r}", "unknown_artifact")
        body = json.dumps([i.to_json() for i in infos]).encode()
        self._versions_cache[key[0]] = (key, body)
        return body

    def of(self, artifact: str) -> Queries:
        """The queries of the registry holding ``artifact`` (one registry: these)."""
        return self

    async def show(self, artifact: str, version: str | None) -> dict[str, Any]:
        """``version``: a reference's selector (``vX.Y.Z``, ``latest``, ``#STAGE``, None)."""
        info = await self.executors.on_registry(self.engine.resolve, ref_of(artifact, version))
        return info.to_json()

    async def artifacts(self) -> list[dict[str, Any]]:
        return await self.executors.on_registry(self.engine.artifacts)

    def job(self, job_id: str) -> dict[str, Any]:
        job = self.queue.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id}", "unknown_job")
        return job.to_dict()

    async def manifest(
        self, artifact: str, version: str | None, include_pruned: bool = False, check: bool = True
    ) -> dict[str, Any]:
        """What ``pull`` downloads. A pruned version only with ``include_pruned`` and, when
        ``check``, only while the storage still has all its objects (cpvd.registry.pruned)."""
        ref = ref_of(artifact, version)
        m = await self.executors.on_registry(self._manifest, ref, include_pruned, check)
        return m.to_json()

    def _manifest(self, ref: Ref, include_pruned: bool, check: bool) -> Manifest:
        info = self.engine.resolve(ref)  # on the registry thread: resolve, guard, then read
        if check or not include_pruned:
            check_restorable(self.engine, info, include_pruned)
        return self.engine.manifest(ref.name, info.version)

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
    ignored: Ignored = list
    #: per artifact: latest, best, kept/pruned counts (cpvd.lifecycle.summary)
    lifecycle: Callable[[], list[dict[str, Any]]] = list
    #: each registry (cpvd.pipeline.lane): storage, remote, reachability, its artifacts
    registries: Callable[[], list[dict[str, Any]]] = list
    #: durability lag, recovery points, coalescing and the upload cap (cpvd.api.backlog)
    backlog: Callable[[], dict[str, Any]] = dict

    def __post_init__(self) -> None:
        self.started = time.time()

    async def ignored_report(self) -> list[dict[str, Any]]:
        """``status --ignored``: per watch, the files no unit holds and why (walks every
        watch, so on a thread)."""
        scans = await asyncio.to_thread(self.ignored)
        return [
            {
                "artifact": w.artifact,
                "path": str(w.path),
                "layout": w.unit_layout,
                "files": [{"relpath": rel, "reason": why} for rel, why in scan.ignored],
                "truncated": scan.truncated,
            }
            for w, scan in scans
        ]

    def report(self) -> dict[str, Any]:
        cfg, health = self.config(), self.health
        waiting, settling = status_rows(self.waiting())
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
                _with_registry(cfg, j.to_dict())
                for j in self.queue.list(states=("queued", "running", "failed"), limit=50)
            ],
            "watches": [self._watch(w) for w in cfg.watches],
            "waiting": waiting,
            "settling": settling,
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
            "artifacts": list(self.lifecycle()),
            "registries": list(self.registries()),
            **self.backlog(),
        }

    def _watch(self, w: WatchConfig) -> dict[str, Any]:
        return {
            "path": str(w.path),
            "artifact": w.artifact,
            "kind": w.kind,
            "layout": w.unit_layout,
            "poll": w.poll,
            "exists": w.path.is_dir(),
            "paused": self.pause.is_paused(w.artifact),
            "registry": registry_of(self.config(), w.artifact),
        }


def _with_registry(cfg: Config, job: dict[str, Any]) -> dict[str, Any]:
    """A job row, with the registry it versions into when there are several."""
    return {**job, "registry": registry_of(cfg, job["artifact"])} if is_multi(cfg) else job
