"""One registry's lane: its storage and engine, its own registry and io threads, its share
of the queue, and the worker, pusher, lifecycle, gc and local keeper that run on it.

Several teams on one machine (``[[registry]]`` profiles) get one lane each, so a registry
whose remote hangs or whose bucket is down never holds up another's versions. A single
registry is one lane on the daemon's own threads and the whole queue: the daemon runs as it
always did. Each lane's components read the config through :func:`cpvd.config.views.view`,
so none of them knows there are other registries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from cpvd.api.events import EventBus
from cpvd.api.metrics import DaemonMetrics
from cpvd.api.operations import Operations
from cpvd.api.queries import Queries
from cpvd.config.model import Config
from cpvd.config.views import artifacts_of, is_multi, registry_names, view
from cpvd.errors import CpvError
from cpvd.hooks.outbox import Outbox
from cpvd.lifecycle.collector import Collector
from cpvd.lifecycle.local_keeper import LocalKeeper
from cpvd.lifecycle.runner import Lifecycle
from cpvd.pipeline.coalesce import Coalescer
from cpvd.pipeline.copier import Copier
from cpvd.pipeline.health import Health, Pause, Wakeups
from cpvd.pipeline.prepared import PreparedJobs
from cpvd.pipeline.pusher import Pusher
from cpvd.pipeline.snapshot import SnapshotStore
from cpvd.pipeline.threads import Executors, _pool
from cpvd.pipeline.upload_sweep import sweep_unresumed
from cpvd.pipeline.worker import Worker
from cpvd.registry.engine import Engine
from cpvd.startup import open_registry
from cpvd.state.ledger import Ledger
from cpvd.state.queue import JobQueue
from cpvd.state.scoped_queue import ScopedQueue
from cpvd.storage.transfer_events import TransferEvents

log = logging.getLogger("cpvd")


@dataclass(eq=False)
class Shared:
    """What every lane uses: the one queue database, ledger, snapshot store, pause state,
    work wake-up (the intake sets it), event bus, metrics and hook outbox."""

    queue: JobQueue
    ledger: Ledger
    snapshots: SnapshotStore
    prepared: PreparedJobs
    pause: Pause
    work: asyncio.Event
    bus: EventBus
    metrics: DaemonMetrics
    outbox: Outbox


@dataclass(eq=False)
class Lane:
    """One registry and everything that writes to it. ``own_pools``: its registry and io
    threads are its own (stopped with it); the first lane runs on the daemon's."""

    name: str
    config: Callable[[], Config]
    engine: Engine
    executors: Executors
    queue: ScopedQueue
    health: Health = field(default_factory=Health)
    wakeups: Wakeups = field(default_factory=Wakeups)
    own_pools: bool = False

    def build(self, shared: Shared, copier: Copier) -> None:
        """The lane's worker, pusher, lifecycle, gc, keeper, queries and operations."""
        cfg, ex, bus = self.config, self.executors, shared.bus
        self.lifecycle = Lifecycle(cfg, self.engine, bus)
        self.worker = Worker(
            cfg, self.queue, shared.ledger, shared.snapshots, copier, self.engine, ex,
            shared.prepared, self.health, shared.pause, self.wakeups, bus, shared.metrics,
            self.lifecycle, shared.outbox,
        )  # fmt: skip
        self.pusher = Pusher(
            cfg, self.queue, self.engine, ex, self.health, self.wakeups, bus, self.lifecycle
        )
        self.coalescer = Coalescer(
            cfg, self.queue, shared.ledger, shared.snapshots, shared.prepared, self.engine, ex,
            bus, busy=self.worker.uploading_ahead,
        )  # fmt: skip
        self.collector = Collector(self.engine, ex, bus, cfg)
        self.keeper = LocalKeeper(cfg, self.engine, shared.ledger, ex, bus)
        self.queries = Queries(cfg, self.engine, shared.queue, ex)
        self.operations = Operations(
            self.engine, shared.queue, shared.ledger, ex, self.health, shared.pause,
            self.wakeups, bus,
        )  # fmt: skip

    def tasks(self) -> tuple[list[asyncio.Task[None]], list[asyncio.Task[None]]]:
        """Start the lane: (worker and pusher, drained on stop; gc and keeper, cancelled)."""
        tag = f"-{self.name}" if self.own_pools else ""
        drained = [
            asyncio.create_task(self.worker.run(), name=f"worker{tag}"),
            asyncio.create_task(self.pusher.run(), name=f"pusher{tag}"),
        ]
        cancelled = [
            asyncio.create_task(self.collector.periodic(), name=f"periodic-gc{tag}"),
            asyncio.create_task(self.keeper.run(), name=f"keep-local{tag}"),
            asyncio.create_task(  # interrupted uploads nothing resumed
                sweep_unresumed(lambda: self.engine.storage, self.queue, self.executors),
                name=f"upload-sweep{tag}",
            ),
        ]
        return drained, cancelled

    def apply(self, cfg: Config) -> None:  # on the lane's registry thread (SIGHUP)
        """The engine knows the new artifacts, and revert may write into the new watches."""
        mine = view(cfg, self.name)
        self.engine.config = mine
        self.engine.writable_roots = [Path(p) for p in _real_paths(mine)]

    def shutdown(self) -> None:
        if self.own_pools:
            for pool in (self.executors.io, self.executors.registry):
                pool.shutdown(wait=True, cancel_futures=True)

    def describe(self) -> dict[str, object]:
        """The lane in ``status``: which registry and storage, reachability, artifacts."""
        from cpvd.redact import mask_url

        cfg, h = self.config(), self.health
        return {
            "name": self.name,
            "path": str(cfg.registry.path),
            "remote": mask_url(cfg.registry.remote) if cfg.registry.remote else None,
            "storage": mask_url(cfg.storage.url),
            "storage_reachable": h.storage_ok,
            "storage_error": h.storage_error,
            "remote_reachable": h.remote_ok,
            "remote_error": h.remote_error,
            "unpushed": h.unpushed,
            "artifacts": sorted(cfg.artifact_kinds()),
        }


def _real_paths(cfg: Config) -> list[str]:
    import os

    return [os.path.realpath(w.path) for w in cfg.watches]


async def open_lanes(
    config: Callable[[], Config],
    state: Path,
    queue: JobQueue,
    ledger: Ledger,
    ex: Executors,
    transfers: TransferEvents | None = None,
) -> list[Lane]:
    """Open every registry (clone, storage binding, preflight) on its lane's thread; the
    first lane uses the daemon's threads, the others their own."""
    cfg = config()
    multi = is_multi(cfg)
    seed = ledger.is_empty()  # a new state database: every registry's versions are handled
    lanes: list[Lane] = []
    try:
        for i, name in enumerate(registry_names(cfg)):
            lanes.append(await _open_lane(
                config, name, i, multi, state, queue, ledger, ex, seed, transfers
            ))
    except BaseException:
        for lane in lanes:
            lane.shutdown()
        raise
    return lanes


async def _open_lane(
    config: Callable[[], Config],
    name: str,
    index: int,
    multi: bool,
    state: Path,
    queue: JobQueue,
    ledger: Ledger,
    ex: Executors,
    seed: bool,
    transfers: TransferEvents | None,
) -> Lane:
    own = index > 0
    lane_ex = (
        Executors(_pool(1, f"cpv-registry-{name}")(), _pool(2, f"cpv-io-{name}")(),
                  ex.snapshot, ex.file_upload)
        if own else ex
    )  # fmt: skip
    mine = partial(_view_of, config, name)
    journal = f"uploads-{name}" if own else "uploads"
    try:
        engine = await lane_ex.on_registry(
            open_registry, mine(), state, ledger, journal, seed, transfers
        )
    except BaseException:
        if own:
            lane_ex.registry.shutdown(wait=False)
            lane_ex.io.shutdown(wait=False)
        raise
    scope = partial(artifacts_of_now, config, name) if multi else None
    lane = Lane(name, mine, engine, lane_ex, ScopedQueue(queue.db, scope, queue.backoff_cap))
    lane.own_pools = own
    await _abort_incomplete_uploads(lane)
    return lane


def _view_of(config: Callable[[], Config], name: str) -> Config:
    return view(config(), name)


def artifacts_of_now(config: Callable[[], Config], name: str) -> frozenset[str]:
    return artifacts_of(config(), name)


async def _abort_incomplete_uploads(lane: Lane) -> None:
    with contextlib.suppress(CpvError):
        aborted = await lane.executors.on_io(lane.engine.storage.abort_incomplete_uploads)
        if aborted:
            log.info("%s: aborted %d incomplete uploads that cannot be resumed", lane.name, aborted)
