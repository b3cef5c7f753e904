"""The composition root: build state, registry, pipeline, watcher and API in order; stop them
in reverse. Every object gets what it uses through its constructor, here and nowhere else.
Signals only set flags (SIGTERM/SIGINT: stop, SIGHUP: reload); shutdown drains the running
step with a timeout, then cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path

from cpvd.api import backlog as backlog_metrics
from cpvd.api.backlog import backlog_report
from cpvd.api.events import EventBus
from cpvd.api.handlers import Services
from cpvd.api.limits import connection_cap, raise_open_file_limit
from cpvd.api.metrics import DaemonMetrics
from cpvd.api.operations import Operations
from cpvd.api.queries import Queries, Status
from cpvd.api.routing import CollectorRouter, OperationsRouter, QueryRouter
from cpvd.api.server import ApiServer
from cpvd.config.model import Config
from cpvd.config.views import keep_profiles, registry_of
from cpvd.errors import CpvError
from cpvd.hooks import metrics as hook_metrics
from cpvd.hooks.bridge import bus_tap
from cpvd.hooks.dispatcher import Dispatcher
from cpvd.hooks.outbox import Outbox
from cpvd.hooks.service import HookService
from cpvd.lifecycle.collector import Collector
from cpvd.pipeline.durability import Durability, pushed_points
from cpvd.pipeline.file_upload import FileUploads
from cpvd.pipeline.follow import Follower
from cpvd.pipeline.health import Health, Pause, Wakeups
from cpvd.pipeline.intake import Intake
from cpvd.pipeline.lane import Lane, Shared, open_lanes
from cpvd.pipeline.prepared import PreparedJobs
from cpvd.pipeline.routed_copier import RoutedCopier
from cpvd.pipeline.snapshot import SnapshotStore
from cpvd.pipeline.speculative_snapshot import SpeculativeSnapshots
from cpvd.pipeline.threads import Executors
from cpvd.pipeline.watch_relay import WatchRelay
from cpvd.service.instance import InstanceLock, clear_stale_socket, prepare_socket_dir
from cpvd.service.sdnotify import Notifier
from cpvd.startup import open_state, release_finished_snapshots
from cpvd.state.db import StateDB
from cpvd.state.outcome import why_handled
from cpvd.state.queue import JobQueue
from cpvd.storage.base import Storage
from cpvd.storage.transfer_events import TransferEvents
from cpvd.watch.watcher import Watcher

log = logging.getLogger("cpvd")

DAEMON_ENV = {"DVC_NO_ANALYTICS": "1", "ITERATIVE_DO_NOT_TRACK": "1", "GTO_NO_ANALYTICS": "1"}

#: [daemon] keys a SIGHUP applies to the running daemon. Every other [daemon] key, and all
#: of [registry] and [storage], are opened once at start (socket, state database, registry
#: work tree, storage client): a SIGHUP keeps their running values and reports them as
#: needing a restart, so ``status`` always shows what is in use.
LIVE_DAEMON_KEYS = frozenset(
    {"allow_uids", "allow_group", "rescan_seconds", "drain_timeout", "retry_max_seconds",
     "snapshot_limit_bytes"}
)  # fmt: skip


def split_reload(running: Config, new: Config) -> tuple[Config, list[str]]:
    """The config to run after a SIGHUP (watches and live keys from ``new``, the rest kept
    from ``running``) and the dotted names of the kept keys whose value ``new`` changes."""
    changed = [
        f"{section}.{f.name}"
        for section in ("daemon", "registry", "storage")
        for f in fields(getattr(running, section))
        if (section != "daemon" or f.name not in LIVE_DAEMON_KEYS)
        and getattr(getattr(running, section), f.name) != getattr(getattr(new, section), f.name)
    ]
    kept = {
        f.name: getattr(running.daemon, f.name)
        for f in fields(running.daemon)
        if f.name not in LIVE_DAEMON_KEYS
    }
    applied = replace(
        new,
        daemon=replace(new.daemon, **kept),
        registry=running.registry,
        storage=running.storage,
    )
    applied, profiles = keep_profiles(running, applied)  # several registries: each lane's
    return applied, changed + profiles


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3", "watchdog", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_daemon(cfg: Config, log_level: str = "INFO", rebuild_queue: bool = False) -> int:
    """Run in the foreground until SIGTERM/SIGINT; returns the exit status."""
    setup_logging(log_level)
    os.environ.update(DAEMON_ENV)
    try:
        daemon = Daemon(cfg, rebuild_queue=rebuild_queue, open_files=raise_open_file_limit())
        return asyncio.run(daemon.serve())
    except CpvError as exc:
        log.error("%s", exc.message)
        print(f"cpvd: {exc.message}", file=sys.stderr)
        return 1


class Daemon:
    def __init__(self, cfg: Config, rebuild_queue: bool = False, open_files: int = 1024) -> None:
        self.cfg = cfg
        self.open_files = open_files  # the soft RLIMIT_NOFILE: API connections get a share
        self.rebuild_queue = rebuild_queue
        self.stop = asyncio.Event()
        self.reload = asyncio.Event()
        self.notifier = Notifier(unset_environment=True)
        #: keys a SIGHUP changed that only a restart applies (shown by ``status``)
        self.restart_needed: list[str] = []

    def config(self) -> Config:
        """The running config (SIGHUP replaces it); every component reads it through here."""
        return self.cfg

    async def serve(self) -> int:
        d = self.cfg.daemon
        state = Path(d.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        lock = InstanceLock(state)
        lock.acquire()  # refuses (StateError) when another cpvd holds this state dir
        loop = asyncio.get_running_loop()
        for sig, ev in ((signal.SIGTERM, self.stop), (signal.SIGINT, self.stop)):
            loop.add_signal_handler(sig, ev.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload.set)
        try:
            async with AsyncExitStack() as stack:
                prepare_socket_dir(d.socket)
                clear_stale_socket(d.socket)
                await self._run(stack, state)
            return 0
        finally:
            lock.release()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    async def _run(self, stack: AsyncExitStack, state: Path) -> None:
        """Start everything in order; ``stack`` stops it in reverse, whatever happens."""
        cfg, d = self.cfg, self.cfg.daemon
        ex = Executors.lowered(d.nice)
        db, queue, ledger = open_state(state, d.retry_max_seconds, self.rebuild_queue)
        stack.callback(db.close)
        stack.callback(ex.shutdown)
        transfers = TransferEvents()  # the storage tells resumed/stalled uploads through it
        lanes = await open_lanes(self.config, state, queue, ledger, ex, transfers)  # per registry
        for lane in lanes:
            stack.callback(lane.shutdown)
        _resume_interrupted(queue)
        snapshots = SnapshotStore(state / "snapshots", d.snapshot_limit_bytes)
        release_finished_snapshots(queue, snapshots, self.rebuild_queue)

        bus, pause, wakeups = EventBus(), Pause(), Wakeups()
        health = lanes[0].health
        for lane in lanes:  # the intake wakes every worker; each pusher has its own wake-up
            lane.wakeups = wakeups if lane is lanes[0] else Wakeups(work=wakeups.work)
        bus.attach(asyncio.get_running_loop())
        transfers.attach(bus.publish)
        metrics = _metrics(queue, lanes)
        outbox, dispatcher = await self._start_hooks(stack, db, bus, metrics, queue)
        prepared = PreparedJobs()
        stack.callback(prepared.cancel_all)  # queued jobs upload everything next start
        copier = _copier(self.config, lanes, snapshots, ex, pause)
        handled = partial(why_handled, queue, ledger)
        follower = Follower(snapshots)  # hashes while written; speculative.close stops it
        speculative = SpeculativeSnapshots(copier, ex, handled, follower)
        watcher = Watcher(cfg.watches, rescan_seconds=d.rescan_seconds)
        watcher.on_activity = follower.event
        intake = Intake(
            self.config, queue, ledger, copier, speculative, prepared, bus, wakeups, watcher.defer
        )
        shared = Shared(
            queue, ledger, snapshots, prepared, pause, wakeups.work, bus, metrics, outbox
        )
        for lane in lanes:
            lane.build(shared, copier)
        durability = await self._start_backlog(lanes, queue, bus, metrics, intake)
        routed = _routed(self.config, lanes)
        stack.callback(routed.collector.cancel)  # before the io pool waits for a running gc
        stack.callback(snapshots.close)  # after the drain: a copy waiting for space gives up
        stack.push_async_callback(self._drain, lanes)
        stack.callback(speculative.close)  # the start-up clean-up deletes their snapshots
        self._tasks = []
        for lane in lanes:
            drained, cancelled = lane.tasks()
            self._tasks += drained
            for task in cancelled:
                stack.callback(task.cancel)
        relay = WatchRelay(asyncio.get_running_loop(), intake, speculative, bus)
        watcher.start(relay.ready, relay.waiting, relay.hint)
        stack.callback(watcher.stop)

        services = Services(
            intake=intake,
            queries=routed.queries,
            status=self._status(queue, health, pause, watcher, lanes, durability),
            operations=routed.operations,
            bus=bus,
            metrics=metrics,
            collector=routed.collector,
            hooks=HookService(dispatcher),
        )
        api = ApiServer(services, d, connection_cap(self.open_files))
        await api.start()
        stack.push_async_callback(api.stop)
        _log_ready(cfg, lanes)
        self.notifier.ready()
        heartbeat = asyncio.create_task(self._heartbeat(queue, lanes), name="heartbeat")
        stack.callback(heartbeat.cancel)
        await self._main_loop(Live(watcher, api, lanes, queue, snapshots, dispatcher))
        self.notifier.stopping()
        log.info("stopping")

    def _status(
        self, queue: JobQueue, health: Health, pause: Pause, watcher: Watcher, lanes: list[Lane],
        durability: Durability,
    ) -> Status:  # fmt: skip
        status = Status(
            self.config,
            queue,
            health,
            pause,
            watcher.pending,
            lambda: self.restart_needed,
            watcher.ignored,
            lambda: [row for lane in lanes for row in lane.lifecycle.summary],
            registries=lambda: [lane.describe() for lane in lanes],
        )
        status.backlog = lambda: backlog_report(self.cfg, queue, durability, _unpushed(lanes))
        return status


    async def _start_backlog(
        self, lanes: list[Lane], queue: JobQueue, bus: EventBus, metrics: DaemonMetrics,
        intake: Intake,
    ) -> Durability:  # fmt: skip
        """Durability lag and recovery points (from the bus and the registries), and the
        coalescing of superseded checkpoints after each new job (cpvd.pipeline.coalesce)."""
        durability = Durability(queue, lambda: all(ln.config().registry.remote for ln in lanes))
        bus.tap(durability.on_event)
        for lane in lanes:
            with contextlib.suppress(CpvError):
                durability.seed(await lane.executors.on_registry(pushed_points, lane.engine))
        backlog_metrics.register(metrics.registry, durability, partial(_unpushed, lanes))
        by_name = {lane.name: lane for lane in lanes}
        intake.coalesce = partial(_coalesce, self.config, by_name)
        for watch in self.cfg.watches:  # what a previous run left waiting
            await intake.coalesce(watch.artifact)
        return durability

    async def _start_hooks(
        self,
        stack: AsyncExitStack,
        db: StateDB,
        bus: EventBus,
        metrics: DaemonMetrics,
        queue: JobQueue,
    ) -> tuple[Outbox, Dispatcher]:
        """The outbox (the worker records into it), the bus events it takes, and the
        dispatcher, which first delivers what a previous run left undelivered and holds
        deliveries back while a job is queued or running (the event is recorded as its own
        job ends, so a lone version's hooks run at once; a burst's wait for the last)."""
        outbox = Outbox(db, lambda: self.cfg.hooks)
        dispatcher = Dispatcher(self.config, outbox, busy=lambda: queue.depth() > 0)
        outbox.notify = dispatcher.wake
        bus.tap(bus_tap(outbox))
        hook_metrics.register(metrics.registry, dispatcher)
        await dispatcher.start()
        stack.push_async_callback(dispatcher.stop)
        return outbox, dispatcher

    async def _main_loop(self, live: Live) -> None:
        while not self.stop.is_set():
            stop_wait = asyncio.create_task(self.stop.wait())
            reload_wait = asyncio.create_task(self.reload.wait())
            await asyncio.wait({stop_wait, reload_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            reload_wait.cancel()
            if self.reload.is_set() and not self.stop.is_set():
                self.reload.clear()
                await self._reload(live)

    async def _reload(self, live: Live) -> None:
        from cpvd.config.load import load_config

        source = self.cfg.source
        if source is None:
            log.info("SIGHUP: no config file to reload (started from flags)")
            return
        try:
            new = load_config(source)
        except CpvError as exc:
            log.error("SIGHUP: keeping the running config: %s", exc.message)
            return
        applied, self.restart_needed = split_reload(self.cfg, new)
        self.cfg = applied
        await live.apply(applied)
        log.info("SIGHUP: reloaded %s (%d watches)", source, len(applied.watches))
        if self.restart_needed:
            log.warning(
                "SIGHUP: %s changed; still running on the old values until a restart",
                ", ".join(self.restart_needed),
            )

    async def _heartbeat(self, queue: JobQueue, lanes: list[Lane]) -> None:
        interval = self.notifier.watchdog_interval()
        period = interval if interval else 10.0
        while True:
            if interval:
                self.notifier.watchdog()
            unpushed = sum(lane.health.unpushed for lane in lanes)
            self.notifier.status(f"queue: {queue.depth()}, unpushed: {unpushed}")
            await asyncio.sleep(period)

    async def _drain(self, lanes: list[Lane]) -> None:
        """Let the running step finish within the drain timeout, then cancel."""
        for lane in lanes:
            lane.worker.stopping = lane.pusher.stopping = True
            lane.wakeups.work.set()
            lane.wakeups.push.set()
        tasks = self._tasks
        _done, pending = await asyncio.wait(tasks, timeout=self.cfg.daemon.drain_timeout)
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(eq=False)
class Live:
    """What a SIGHUP changes in the running daemon: each live key, applied completely."""

    watcher: Watcher
    api: ApiServer
    lanes: list[Lane]
    queue: JobQueue
    snapshots: SnapshotStore
    hooks: Dispatcher | None = None

    async def apply(self, cfg: Config) -> None:
        d = cfg.daemon
        self.watcher.update_watches(cfg.watches)
        self.watcher.rescan_seconds = max(0.1, float(d.rescan_seconds))
        self.api.reconfigure(d.allow_uids, d.allow_group)
        self.queue.backoff_cap = d.retry_max_seconds
        self.snapshots.limit_bytes = max(0, int(d.snapshot_limit_bytes))
        if self.hooks is not None:
            self.hooks.sync()  # a lane for each added hook; removed hooks' lanes end
        for lane in self.lanes:  # the engines know the new artifacts and writable watches
            lane.queue.backoff_cap = d.retry_max_seconds
            await lane.executors.on_registry(lane.apply, cfg)


def _metrics(queue: JobQueue, lanes: list[Lane]) -> DaemonMetrics:
    """Queue depth, and unpushed versions and storage health over every registry."""
    metrics = DaemonMetrics()
    metrics.read_state(
        queue_depth=lambda: float(queue.depth()),
        unpushed=lambda: float(sum(lane.health.unpushed for lane in lanes)),
        storage_up=lambda: 0.0 if any(ln.health.storage_ok is False for ln in lanes) else 1.0,
    )
    return metrics


def _copier(
    config: Callable[[], Config],
    lanes: list[Lane],
    snapshots: SnapshotStore,
    ex: Executors,
    pause: Pause,
) -> RoutedCopier:
    """Early uploads go to the storage of the artifact's registry."""
    uploads = {
        lane.name: FileUploads(partial(_storage_of, lane), snapshots.root, ex.file_upload)
        for lane in lanes
    }
    by_name = {lane.name: lane for lane in lanes}

    def route(artifact: str) -> tuple[FileUploads, Health]:
        name = registry_of(config(), artifact)
        return uploads[name], by_name[name].health

    first = lanes[0]
    multi = len(lanes) > 1
    return RoutedCopier(
        snapshots, uploads[first.name], ex, pause, first.health, route=route if multi else None
    )


def _storage_of(lane: Lane) -> Storage:
    return lane.engine.storage


@dataclass(frozen=True)
class _Routed:
    queries: Queries
    operations: Operations
    collector: Collector


def _routed(config: Callable[[], Config], lanes: list[Lane]) -> _Routed:
    """What the handlers call: the one registry's objects, or routers over several."""
    if len(lanes) == 1:
        return _Routed(lanes[0].queries, lanes[0].operations, lanes[0].collector)
    return _Routed(
        QueryRouter(config, {lane.name: lane.queries for lane in lanes}),
        OperationsRouter(config, {lane.name: lane.operations for lane in lanes}),
        CollectorRouter({lane.name: lane.collector for lane in lanes}),
    )


def _resume_interrupted(queue: JobQueue) -> None:
    """Jobs a stop or crash left running go back to the queue (each step is idempotent)."""
    recovered = queue.recover()
    if recovered:
        log.info("resuming %d jobs interrupted by a stop or crash", len(recovered))


def _unpushed(lanes: list[Lane]) -> int:
    return sum(lane.health.unpushed for lane in lanes)


async def _coalesce(config: Callable[[], Config], lanes: dict[str, Lane], artifact: str) -> object:
    """Supersede what a new job of ``artifact`` makes redundant, in its registry's lane."""
    return await lanes[registry_of(config(), artifact)].coalescer.sweep(artifact)


def _log_ready(cfg: Config, lanes: list[Lane]) -> None:
    log.info(
        "cpvd ready: %d watches, socket %s, %s",
        len(cfg.watches), cfg.daemon.socket,
        "; ".join(
            f"registry {ln.config().registry.path}, storage {ln.config().storage.url}"
            for ln in lanes
        ),
    )  # fmt: skip
