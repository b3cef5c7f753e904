"""What the daemon can be asked to do, independent of HTTP.

The API handlers parse a request, call one method here and return its answer; the watcher
calls :meth:`Controller.on_checkpoint`. Registry work runs on the one registry thread
(DVC/Git on one registry is serialised); snapshots and hashing on their own threads so a
long copy never blocks a query.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cpvctl.protocol import API_VERSION, CPV_VERSION, Version, validate_name
from cpvd.api.events import EventBus
from cpvd.api.metrics import Registry as Metrics
from cpvd.config.model import Config, WatchConfig
from cpvd.errors import CpvError, InputError, NoSpace, NotFound, StateError
from cpvd.pipeline.file_upload import EarlyUploads, UploadBatch
from cpvd.pipeline.snapshot import Layout, SnapshotStore
from cpvd.pipeline.speculative_snapshot import Abandoned, EarlySnapshots, Taken
from cpvd.registry.engine import Engine
from cpvd.state.ledger import Ledger
from cpvd.state.queue import Job, JobQueue
from cpvd.storage.hashing import ContentHash, StreamHasher
from cpvd.watch.settle import signature_of, walk

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Health:
    """Last known reachability of the storage and the Git remote (shown by status)."""

    storage_ok: bool | None = None
    storage_error: str | None = None
    remote_ok: bool | None = None
    remote_error: str | None = None
    unpushed: int = 0


@dataclass
class Executors:
    registry: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="cpv-registry")
    )
    io: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="cpv-io")
    )
    snapshot: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="cpv-snapshot")
    )
    #: stores files hashed while their snapshot is still being taken (cpvd.pipeline.file_upload)
    early: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="cpv-early")
    )

    def shutdown(self) -> None:
        for ex in (self.snapshot, self.early, self.io, self.registry):
            ex.shutdown(wait=True, cancel_futures=True)


class Controller:
    def __init__(
        self,
        config: Config,
        engine: Engine,
        queue: JobQueue,
        ledger: Ledger,
        snapshots: SnapshotStore,
        bus: EventBus,
        metrics: Metrics,
        executors: Executors,
    ) -> None:
        self.config = config
        self.engine = engine
        self.queue = queue
        self.ledger = ledger
        self.snapshots = snapshots
        self.bus = bus
        self.metrics = metrics
        self.ex = executors
        self.health = Health()
        self.started = time.time()
        self.paused_all = False
        self.paused: set[str] = set()
        self.waiting: Callable[[], list[tuple[WatchConfig, Path, str]]] = list
        #: "offer this checkpoint again later, listed as waiting with this reason" (watcher)
        self.defer: Callable[[WatchConfig, Path, str], None] = lambda w, p, r: None
        self.wake = asyncio.Event()  # the worker sleeps on it
        self.push_wanted = asyncio.Event()  # the pusher sleeps on it
        #: job id -> content hash computed while its snapshot was copied (the worker's hash
        #: step uses it instead of reading the snapshot again; absent after a restart)
        self.hashes: dict[str, ContentHash] = {}
        self.early = EarlyUploads(lambda: self.engine.storage, snapshots.root, executors.early)
        #: job id -> the uploads started while its snapshot was taken (the worker waits)
        self.batches: dict[str, UploadBatch] = {}
        #: snapshots taken during a checkpoint's quiet period (cpvd.pipeline.speculative_snapshot)
        self.early_snaps = EarlySnapshots(self)
        self._versions_cache: dict[str, tuple[tuple[str, int], bytes]] = {}
        self._intake: set[asyncio.Task[Job | None]] = set()
        m = metrics
        m.gauge("cpv_queue_depth", "Jobs queued or running.", function=lambda: float(queue.depth()))
        m.gauge(
            "cpv_unpushed_versions",
            "Commits not yet on the registry remote.",
            function=lambda: float(self.health.unpushed),
        )
        m.gauge(
            "cpv_storage_up",
            "1 when the last storage operation succeeded.",
            function=lambda: 0.0 if self.health.storage_ok is False else 1.0,
        )
        self._jobs_total = m.counter("cpv_jobs_total", "Finished jobs by final state.", ["state"])
        self._bytes = m.counter("cpv_bytes_uploaded_total", "Bytes of new versions stored.")
        self._duration = m.histogram("cpv_job_duration_seconds", "Time from claim to version.")
        self._failures = m.counter(
            "cpv_failures_total", "Failed job attempts by error type.", ["reason"]
        )
        self._versions = m.counter("cpv_versions_total", "Versions made.", ["artifact"])

    def metrics_job_done(self, state: str, seconds: float, size: int, artifact: str) -> None:
        self._jobs_total.inc(state=state)
        self._duration.observe(seconds)
        if state == "done":
            self._bytes.inc(size)
            self._versions.inc(artifact=artifact)

    def metrics_failure(self, reason: str) -> None:
        self._failures.inc(reason=reason)

    # -- thread helpers -------------------------------------------------------------------
    async def on_registry(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.ex.registry, lambda: fn(*args, **kw))

    async def on_io(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.ex.io, lambda: fn(*args, **kw))

    # -- intake ---------------------------------------------------------------------------
    def watch_of(self, path: Path) -> WatchConfig | None:
        real = Path(os.path.realpath(path))
        for w in self.config.watches:
            root = Path(os.path.realpath(w.path))
            if real == root or root in real.parents:
                return w
        return None

    def intake(self, watch: WatchConfig, path: Path, size: int, mtime_ns: int) -> None:
        """Called on the loop thread for each complete checkpoint the watcher reports."""
        task = asyncio.create_task(self.on_checkpoint(watch, path, size, mtime_ns))
        self._intake.add(task)
        task.add_done_callback(self._intake_done)

    def _intake_done(self, task: asyncio.Task[Job | None]) -> None:
        self._intake.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.warning("could not queue a checkpoint: %s", exc)
            self.bus.publish("failed", error=str(exc))

    async def on_checkpoint(
        self, watch: WatchConfig, path: Path, size: int, mtime_ns: int
    ) -> Job | None:
        """A complete checkpoint seen by the watcher: snapshot it and queue it, once."""
        source = str(path)
        why = self.handled(watch.artifact, source, size, mtime_ns)
        if why is not None:
            log.debug("%s: %s", why, source)
            self.early_snaps.discard(watch.artifact, source)
            return None
        self.bus.publish("detected", artifact=watch.artifact, path=source)
        try:
            taken = await self.early_snaps.claim(watch.artifact, path)
            return await self._enqueue(
                watch.artifact, path, origin="watch", signature=(size, mtime_ns), taken=taken
            )
        except CpvError as exc:
            # never queued: the watcher offers it again after a backoff (status: waiting)
            log.warning("could not queue %s: %s; retrying", source, exc.message)
            self.bus.publish(
                "failed", artifact=watch.artifact, path=source, error=exc.message, will_retry=True
            )
            self.defer(watch, path, exc.message)
            return None

    def handled(self, artifact: str, source: str, size: int, mtime_ns: int) -> str | None:
        """Why this exact source (path, size, mtime) needs no new job, or None."""
        if self.ledger.seen_stat(artifact, source, size, mtime_ns) is not None:
            return "already handled"
        queued = self.queue.active_with_signature(artifact, source, size, mtime_ns)
        if queued is not None:  # offered again by the start-up rescan: on its way already
            return f"already queued as job {queued.id}"
        return None

    async def submit(
        self, path: str, artifact: str, metrics: dict[str, Any] | None, bump: str
    ) -> Job | None:
        """A manual ``cpvctl push``: only paths inside a watch root are read."""
        validate_name(artifact)
        p = _request_path(path, "path")
        if self.watch_of(p) is None:
            raise InputError(
                f"{path} is outside every watched directory; cpvd only reads checkpoints inside "
                "its [[watch]] paths (add one, or copy the checkpoint into one)",
                "path_outside_watch",
            )
        if not p.exists():
            raise NotFound(f"no such file or directory: {path}", "not_found")
        if bump not in ("minor", "major"):
            raise InputError(f"bump must be 'minor' or 'major', got {bump!r}")
        files = walk(p)
        sig = signature_of(files) if files else None
        return await self._enqueue(
            artifact,
            p,
            origin="push",
            metrics=metrics,
            bump=bump,
            signature=(sig.size, sig.mtime_ns) if sig else None,
        )

    async def _enqueue(
        self,
        artifact: str,
        path: Path,
        *,
        origin: str,
        metrics: dict[str, Any] | None = None,
        bump: str = "minor",
        signature: tuple[int, int] | None = None,
        taken: Taken | None = None,
    ) -> Job | None:
        # snapshotted during the quiet period (cpvd.pipeline.speculative_snapshot)
        early = taken is not None
        if taken is None:
            taken = await self._take(artifact, path)
            if taken is None:
                return None
        key, snap, content, batch = taken.key, taken.snap, taken.content, taken.batch
        from cpvd.watch.sidecar import read_metrics

        found = read_metrics(snap, path)
        merged = {**found, **(metrics or {})}
        try:
            job = self.queue.add(
                artifact,
                str(path),
                snapshot=str(snap),
                kind="dir" if snap.is_dir() else "file",
                metrics=merged or None,
                bump=bump,
                origin=origin,
                signature=signature,
            )
        except CpvError:
            self.snapshots.release(key)  # no job owns it: do not keep a full disk full
            raise
        if content is not None:
            self.hashes[job.id] = content
            if batch.futures():
                self.batches[job.id] = batch
        self.bus.publish(
            "queued",
            job_id=job.id,
            artifact=artifact,
            path=str(path),
            early_snapshot=early,
        )
        self.wake.set()
        return job

    async def _take(self, artifact: str, path: Path) -> Taken | None:
        """Snapshot ``path`` now (None: it vanished, and was skipped)."""
        key = uuid.uuid4().hex
        batch = self.early_batch(artifact)
        try:
            snap, content, _ = await asyncio.get_running_loop().run_in_executor(
                self.ex.snapshot, self.snapshot_and_hash, path, key, batch
            )
        except NotFound:
            log.warning("%s vanished before it could be snapshotted; skipped", path)
            self.bus.publish("skipped", artifact=artifact, path=str(path), reason="vanished")
            return None
        except OSError as exc:
            raise self._snapshot_error(path, exc) from exc
        return Taken(key, snap, content, batch)

    def early_batch(self, artifact: str) -> UploadBatch:
        """A batch of early uploads for a new snapshot of ``artifact``'s checkpoint."""
        batch = self.early.batch()
        batch.enabled = self.early_uploads_allowed(artifact)
        return batch

    def early_uploads_allowed(self, artifact: str) -> bool:
        """No bytes leave early for a paused artifact or while the storage is failing."""
        return not (self.paused_all or artifact in self.paused or self.health.storage_ok is False)

    def _snapshot_error(self, path: Path, exc: OSError) -> CpvError:
        where = self.snapshots.root
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return NoSpace(
                f"no space left on device to snapshot {path} into {where}: free space on the "
                f"state directory's filesystem ({self.config.daemon.state_dir}); the checkpoint "
                "is retried by itself"
            )
        return StateError(f"cannot snapshot {path} into {where}: {exc.strerror or exc}")

    def snapshot_and_hash(
        self,
        path: Path,
        key: str,
        batch: UploadBatch | None = None,
        abandon: threading.Event | None = None,
    ) -> tuple[Path, ContentHash | None, Layout]:
        """Snapshot ``path`` and hash the bytes as they are copied (one read, not two);
        each file starts uploading (``batch``) as soon as its md5 is final. Setting
        ``abandon`` stops the copy at its next chunk (:class:`Abandoned`)."""
        hasher = StreamHasher(on_hashed=batch.on_hashed if batch is not None else None)
        layouts: list[Layout] = []

        def on_chunk(rel: str, data: bytes) -> None:
            if abandon is not None and abandon.is_set():
                raise Abandoned(f"{path} changed while it was snapshotted early")
            hasher.on_chunk(rel, data)

        try:
            snap = self.snapshots.take(
                path,
                key,
                on_chunk=on_chunk,
                on_layout=layouts.append,
                on_restart=hasher.on_restart,
                on_file=(
                    (lambda rel, p: hasher.on_file(rel, batch.on_file(rel, p)))
                    if batch is not None
                    else None
                ),
            )
        finally:
            hasher.close()
        return snap, hasher.result(snap), layouts[-1]

    # -- queries --------------------------------------------------------------------------
    def kind_of(self, artifact: str) -> str:
        return self.config.artifact_kinds().get(artifact, "model")

    async def versions(self, artifact: str) -> list[dict[str, Any]]:
        return json.loads(await self.versions_json(artifact))

    async def versions_json(self, artifact: str) -> bytes:
        """The ``versions`` answer, serialised; cached until the engine's generation moves
        (10,000 versions took ~0.5 s to build and serialise on every call)."""
        return await self.on_registry(self._versions_json, validate_name(artifact))

    def _versions_json(self, artifact: str) -> bytes:  # on the registry thread
        key = (artifact, self.engine.generation)
        hit = self._versions_cache.get(artifact)
        if hit is not None and hit[0] == key:
            return hit[1]
        infos = self.engine.versions(artifact)
        if not infos and artifact not in self.config.artifact_kinds():
            raise NotFound(f"unknown artifact {artifact!r}", "unknown_artifact")
        body = json.dumps([i.to_json() for i in infos]).encode()
        self._versions_cache[artifact] = (key, body)
        return body

    async def show(self, artifact: str, version: str | None) -> dict[str, Any]:
        validate_name(artifact)
        if version is not None:
            version = str(Version.parse(version))
        info = await self.on_registry(self.engine.show, artifact, version)
        return info.to_json()

    async def artifacts(self) -> list[dict[str, Any]]:
        return await self.on_registry(self.engine.artifacts)

    def job(self, job_id: str) -> dict[str, Any]:
        job = self.queue.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id}", "unknown_job")
        return job.to_dict()

    def retry(self, job_id: str) -> dict[str, Any]:
        job = self.queue.retry(job_id)
        self.wake.set()
        return job.to_dict()

    async def status(self) -> dict[str, Any]:
        counts = self.queue.counts()
        jobs = self.queue.list(states=("queued", "running", "failed"), limit=50)
        return {
            "daemon": {
                "pid": os.getpid(),
                "version": CPV_VERSION,
                "api_version": API_VERSION,
                "uptime": round(time.time() - self.started, 1),
                "paused": "all" if self.paused_all else sorted(self.paused),
                "state_dir": str(self.config.daemon.state_dir),
            },
            "queue": {**counts, "depth": self.queue.depth()},
            "jobs": [j.to_dict() for j in jobs],
            "watches": [
                {
                    "path": str(w.path),
                    "artifact": w.artifact,
                    "kind": w.kind,
                    "poll": w.poll,
                    "exists": w.path.is_dir(),
                    "paused": self.paused_all or w.artifact in self.paused,
                }
                for w in self.config.watches
            ],
            "waiting": [
                {"artifact": w.artifact, "path": str(p), "reason": r} for w, p, r in self.waiting()
            ],
            "storage": {
                "url": self.config.storage.url,
                "reachable": self.health.storage_ok,
                "error": self.health.storage_error,
            },
            "registry": {
                "path": str(self.config.registry.path),
                "remote": self.config.registry.remote,
                "reachable": self.health.remote_ok,
                "error": self.health.remote_error,
                "unpushed": self.health.unpushed,
            },
        }

    # -- operations -----------------------------------------------------------------------
    async def revert(
        self, artifact: str, version: str, with_data: bool, to: str | None
    ) -> dict[str, Any]:
        validate_name(artifact)
        version = str(Version.parse(version))
        target = None
        if to is not None:
            target = _request_path(to, "to")
        results = await self.on_registry(self.engine.revert, artifact, version, with_data, target)
        for r in results:
            files = walk(Path(r.path))
            info = await self.on_registry(self.engine.show, r.artifact, r.version)
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

    async def promote(
        self, artifact: str, version: str, stage: str, with_data: bool
    ) -> dict[str, Any]:
        validate_name(artifact)
        version = str(Version.parse(version))
        made = await self.on_registry(self.engine.promote, artifact, version, stage, with_data)
        for m in made:
            self.bus.publish("promoted", **m)
        return {"promoted": made}

    def pause(self, artifact: str | None) -> dict[str, Any]:
        if artifact is None:
            self.paused_all = True
        else:
            self.paused.add(validate_name(artifact))
        return {"paused": "all" if self.paused_all else sorted(self.paused)}

    def resume(self, artifact: str | None) -> dict[str, Any]:
        if artifact is None:
            self.paused_all = False
            self.paused.clear()
        else:
            self.paused.discard(validate_name(artifact))
        self.wake.set()
        return {"paused": "all" if self.paused_all else sorted(self.paused)}

    async def verify(self, sample: int | None, artifact: str | None) -> dict[str, Any]:
        if artifact is not None:
            validate_name(artifact)
        if sample is not None and (not isinstance(sample, int) or sample < 1):
            raise InputError("sample must be a positive integer")
        infos = await self.on_registry(self.engine.verify_targets, sample, artifact)
        return await self.on_io(self.engine.verify_objects, infos)  # the long part: reads

    async def manifest(self, artifact: str, version: str | None) -> dict[str, Any]:
        validate_name(artifact)
        if version is not None:
            version = str(Version.parse(version))
        m = await self.on_registry(self.engine.manifest, artifact, version)
        return m.to_json()

    async def _refresh_unpushed(self) -> None:
        with contextlib.suppress(CpvError):
            self.health.unpushed = await self.on_registry(self.engine.unpushed)
        if self.health.unpushed:
            self.push_wanted.set()


def _request_path(value: str, field: str) -> Path:
    """A path from a request: absolute, without ``..`` and without NUL (which no filesystem
    call accepts: it would surface as a ValueError deep inside, i.e. a 500)."""
    p = Path(value)
    if "\0" in value or not p.is_absolute() or ".." in p.parts:
        raise InputError(
            f"{field!r} must be an absolute, normalised path, got {value!r}", "invalid_path"
        )
    return p
