"""The composition root: start queue, engine, workers, watcher and API in order; stop them in
reverse. Signals only set flags (SIGTERM/SIGINT: stop, SIGHUP: reload); shutdown drains the
running step with a timeout, then cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

from cpvd.api.events import EventBus
from cpvd.api.metrics import Registry as Metrics
from cpvd.api.server import ApiServer
from cpvd.config.model import Config, WatchConfig
from cpvd.errors import CpvError
from cpvd.pipeline.controller import Controller, Executors
from cpvd.pipeline.snapshot import SnapshotStore
from cpvd.pipeline.worker import Pusher, Worker
from cpvd.registry.engine import Engine
from cpvd.registry.repo import Registry
from cpvd.service.instance import (
    InstanceLock,
    clear_stale_git_locks,
    clear_stale_socket,
    prepare_socket_dir,
)
from cpvd.service.sdnotify import Notifier
from cpvd.state.ledger import Ledger
from cpvd.state.queue import JobQueue, StateDB
from cpvd.storage import open_storage
from cpvd.watch.settle import Hint, Signature
from cpvd.watch.watcher import Watcher

log = logging.getLogger("cpvd")

DAEMON_ENV = {"DVC_NO_ANALYTICS": "1", "ITERATIVE_DO_NOT_TRACK": "1", "GTO_NO_ANALYTICS": "1"}


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3", "watchdog", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_daemon(
    cfg: Config, log_level: str = "INFO", reload: object = None, rebuild_queue: bool = False
) -> int:
    """Run in the foreground until SIGTERM/SIGINT; returns the exit status."""
    setup_logging(log_level)
    os.environ.update(DAEMON_ENV)
    try:
        return asyncio.run(Daemon(cfg, rebuild_queue=rebuild_queue).serve())
    except CpvError as exc:
        log.error("%s", exc.message)
        print(f"cpvd: {exc.message}", file=sys.stderr)
        return 1


def _seed_ledger(engine: Engine, ledger: Ledger) -> int:
    return ledger.seed(
        (v.artifact, v.source, v.md5, v.version)
        for vs in engine.index().versions.values()
        for v in vs
        if v.source
    )


class Daemon:
    def __init__(self, cfg: Config, rebuild_queue: bool = False) -> None:
        self.cfg = cfg
        self.rebuild_queue = rebuild_queue
        self.stop = asyncio.Event()
        self.reload = asyncio.Event()
        self.notifier = Notifier(unset_environment=True)
        self.api: ApiServer | None = None

    async def serve(self) -> int:
        cfg = self.cfg
        d = cfg.daemon
        state = Path(d.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        lock = InstanceLock(state)
        lock.acquire()  # refuses (StateError) when another cpvd holds this state dir
        loop = asyncio.get_running_loop()
        for sig, ev in (
            (signal.SIGTERM, self.stop),
            (signal.SIGINT, self.stop),
            (signal.SIGHUP, self.reload),
        ):
            loop.add_signal_handler(sig, ev.set)
        ex = Executors()
        db: StateDB | None = None
        watcher: Watcher | None = None
        api: ApiServer | None = None
        tasks: list[asyncio.Task[None]] = []
        worker: Worker | None = None
        pusher: Pusher | None = None
        try:
            prepare_socket_dir(d.socket)
            clear_stale_socket(d.socket)
            removed = clear_stale_git_locks(Path(cfg.registry.path))
            if removed:
                log.warning(
                    "removed stale lock files left by a crash: %s", ", ".join(map(str, removed))
                )
            db_path = state / "queue.db"
            if self.rebuild_queue and db_path.exists():
                moved = JobQueue.rebuild(db_path)
                log.warning("moved the old queue database aside to %s", moved)
            db = StateDB(db_path)
            queue = JobQueue(db, backoff_cap=d.retry_max_seconds)
            ledger = Ledger(db)
            bus = EventBus()
            bus.attach(loop)
            storage = open_storage(cfg.storage, journal_dir=state / "uploads")
            registry = Registry(cfg.registry, storage.dvc_remote_settings())
            engine = Engine(cfg, storage, registry)
            await loop.run_in_executor(ex.registry, self._recover_registry, engine)
            if ledger.is_empty():
                seeded = await loop.run_in_executor(ex.registry, _seed_ledger, engine, ledger)
                if seeded:
                    log.info(
                        "new state database: %d versions from the registry recorded as "
                        "handled, so the rescan does not version them again",
                        seeded,
                    )
            with contextlib.suppress(CpvError):
                aborted = await loop.run_in_executor(ex.io, storage.abort_incomplete_uploads)
                if aborted:
                    log.info("aborted %d incomplete uploads left by a crash", aborted)
            recovered = queue.recover()
            if recovered:
                log.info("resuming %d jobs interrupted by a stop or crash", len(recovered))
            snapshots = SnapshotStore(state / "snapshots", d.snapshot_limit_bytes)
            self._release_finished_snapshots(queue, snapshots)
            ctl = Controller(cfg, engine, queue, ledger, snapshots, bus, Metrics(), ex)
            worker, pusher = Worker(ctl), Pusher(ctl)
            tasks = [
                asyncio.create_task(worker.run(), name="worker"),
                asyncio.create_task(pusher.run(), name="pusher"),
            ]
            watcher = self._make_watcher(ctl, loop)
            ctl.waiting = watcher.waiting
            ctl.defer = watcher.defer
            watcher.start()
            api = self.api = ApiServer(ctl, d.socket)
            await api.start()
            log.info(
                "cpvd ready: %d watches, socket %s, registry %s, storage %s",
                len(cfg.watches),
                d.socket,
                cfg.registry.path,
                cfg.storage.url,
            )
            self.notifier.ready()
            tasks.append(asyncio.create_task(self._heartbeat(ctl), name="heartbeat"))
            await self._main_loop(ctl, watcher)
            self.notifier.stopping()
            log.info("stopping")
            return 0
        finally:
            if watcher is not None:
                watcher.stop()
            if api is not None:
                await api.stop()
            await self._drain(tasks, worker, pusher)
            ex.shutdown()
            if db is not None:
                db.close()
            lock.release()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    def _recover_registry(self, engine: Engine) -> None:
        engine.open()
        engine.registry.reset_worktree()

    def _release_finished_snapshots(self, queue: JobQueue, snapshots: SnapshotStore) -> None:
        """Delete the snapshots no queued job owns (their jobs ended). After a rebuilt queue
        nothing owns any of them, yet some were checkpoints still waiting to be versioned,
        possibly rotated away by their trainer since: those are moved aside, not deleted."""
        live = {
            Path(j.snapshot).parent.name
            for j in queue.list(states=("queued", "running"), limit=1_000_000)
            if j.snapshot
        }
        orphans = snapshots.root.parent / "orphans" / time.strftime("%Y%m%dT%H%M%S")
        kept: list[str] = []
        for key in snapshots.keys():  # noqa: SIM118 -- a method returning a list, not a dict
            if key in live:
                continue
            if self.rebuild_queue:
                kept.append(str(snapshots.set_aside(key, orphans)))
            else:
                snapshots.release(key)
        if kept:
            log.warning(
                "the rebuilt queue owns none of the %d snapshots taken before; moved to %s, "
                "not deleted: copy any checkpoint there whose original is gone (and which "
                "has no version yet) back into its watched directory to version it, then "
                "delete the folder",
                len(kept),
                orphans,
            )

    def _make_watcher(self, ctl: Controller, loop: asyncio.AbstractEventLoop) -> Watcher:
        def on_ready(watch: WatchConfig, path: Path, sig: Signature) -> None:
            loop.call_soon_threadsafe(ctl.intake, watch, path, sig.size, sig.mtime_ns)

        def on_waiting(watch: WatchConfig, path: Path, reason: str) -> None:
            ctl.bus.publish("waiting", artifact=watch.artifact, path=str(path), reason=reason)

        def on_hint(watch: WatchConfig, hint: Hint) -> None:
            if hint.what == "offer" and hint.signature is not None:
                sig = hint.signature
                loop.call_soon_threadsafe(
                    ctl.early_snaps.offer, watch, hint.path, sig.size, sig.mtime_ns
                )
            else:
                loop.call_soon_threadsafe(ctl.early_snaps.discard, watch.artifact, str(hint.path))

        return Watcher(
            self.cfg.watches,
            on_ready,
            on_waiting,
            rescan_seconds=self.cfg.daemon.rescan_seconds,
            on_hint=on_hint,
        )

    async def _main_loop(self, ctl: Controller, watcher: Watcher) -> None:
        while not self.stop.is_set():
            stop_wait = asyncio.create_task(self.stop.wait())
            reload_wait = asyncio.create_task(self.reload.wait())
            await asyncio.wait({stop_wait, reload_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            reload_wait.cancel()
            if self.reload.is_set() and not self.stop.is_set():
                self.reload.clear()
                await self._reload(ctl, watcher)

    async def _reload(self, ctl: Controller, watcher: Watcher) -> None:
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
        self.cfg = new
        ctl.config = new
        watcher.update_watches(new.watches)
        if self.api is not None:
            self.api.reconfigure(new.daemon.allow_uids, new.daemon.allow_group)
        log.info("SIGHUP: reloaded %s (%d watches)", source, len(new.watches))

    async def _heartbeat(self, ctl: Controller) -> None:
        interval = self.notifier.watchdog_interval()
        period = interval if interval else 10.0
        while True:
            if interval:
                self.notifier.watchdog()
            self.notifier.status(f"queue: {ctl.queue.depth()}, unpushed: {ctl.health.unpushed}")
            await asyncio.sleep(period)

    async def _drain(
        self, tasks: list[asyncio.Task[None]], worker: Worker | None, pusher: Pusher | None
    ) -> None:
        """Let the running step finish within the drain timeout, then cancel."""
        for w in (worker, pusher):
            if w is not None:
                w.stopping = True
        if worker is not None:
            worker.ctl.wake.set()
            worker.ctl.push_wanted.set()
            worker.ctl.early_snaps.close()  # the start-up clean-up deletes their snapshots
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks[:2], timeout=self.cfg.daemon.drain_timeout)
        for t in [*pending, *tasks[2:]]:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if worker is not None:  # jobs still queued upload everything themselves next start
            for batch in worker.ctl.batches.values():
                batch.cancel()
