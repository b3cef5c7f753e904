"""Start-up recovery, run by the composition root while it holds the single-instance lock:
open the durable state (moving a corrupt database aside on request), open the registry
(clearing lock files a crash left, resetting the work tree, seeding a new ledger from the
registry's tags), and delete or set aside the snapshots no queued job owns."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from cpvd.config.model import Config
from cpvd.pipeline.snapshot import SnapshotStore
from cpvd.registry.engine import Engine
from cpvd.registry.preflight import prepare_registry
from cpvd.registry.repo import RegistryRepo
from cpvd.service.instance import clear_stale_git_locks
from cpvd.state.db import StateDB
from cpvd.state.ledger import Ledger
from cpvd.state.queue import JobQueue
from cpvd.storage import open_storage
from cpvd.storage.transfer_events import TransferEvents

log = logging.getLogger("cpvd")

#: finished jobs are kept this long for ``status`` and ``cpvctl job``, then deleted; what a
#: restart must remember of them (which checkpoints were handled) lives in the ledger
FINISHED_JOBS_KEPT_SECONDS = 30 * 86400


def open_state(
    state: Path, retry_max_seconds: float, rebuild: bool
) -> tuple[StateDB, JobQueue, Ledger]:
    db_path = state / "queue.db"
    if rebuild and db_path.exists():
        moved = JobQueue.rebuild(db_path)
        log.warning("moved the old queue database aside to %s", moved)
    db = StateDB(db_path)
    queue = JobQueue(db, backoff_cap=retry_max_seconds)
    pruned = queue.prune(before=time.time() - FINISHED_JOBS_KEPT_SECONDS)
    if pruned:
        log.info("deleted %d jobs that ended over 30 days ago", pruned)
    return db, queue, Ledger(db)


def open_registry(
    cfg: Config,
    state: Path,
    ledger: Ledger,
    journal: str = "uploads",
    seed: bool | None = None,
    events: TransferEvents | None = None,
) -> Engine:
    """The engine on a registry ready to write (runs on the registry thread). ``journal``:
    the upload journal's directory under ``state`` (one per storage); ``seed``: record the
    registry's versions as handled (None: when the ledger is empty); ``events`` relays the
    storage's transfer events (cpvd.storage.transfer_events)."""
    removed = clear_stale_git_locks(Path(cfg.registry.path))
    if removed:
        log.warning("removed stale lock files left by a crash: %s", ", ".join(map(str, removed)))
    storage = open_storage(cfg.storage, journal_dir=state / journal, events=events)
    settings = storage.dvc_remote_settings()
    cloned = not (Path(cfg.registry.path) / ".git").exists()
    prepare_registry(cfg, settings)  # refuses another storage or an unrelated remote
    engine = Engine(cfg, storage, RegistryRepo(cfg.registry, settings))
    engine.open()
    if cloned:  # a clone brings the storage its versions are in
        prepare_registry(cfg, settings)
    engine.registry.reset_worktree()
    if ledger.is_empty() if seed is None else seed:
        seeded = ledger.seed(
            (v.artifact, v.source, v.md5, v.version)
            for vs in engine.index().versions.values()
            for v in vs
            if v.source
        )
        if seeded:
            log.info(
                "new state database: %d versions from the registry recorded as handled, so "
                "the rescan does not version them again",
                seeded,
            )
    return engine


def release_finished_snapshots(queue: JobQueue, snapshots: SnapshotStore, rebuilt: bool) -> None:
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
        if rebuilt:
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
