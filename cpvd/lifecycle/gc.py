"""Garbage collection of the storage: delete what no kept version references.

Two steps on two threads. :func:`read_roots` (registry thread) fetches the registry when it
has a remote and collects the objects the kept versions name directly: each version's file
or ``.dir`` md5, and each artifact's pointer at HEAD. :func:`collect` (an io thread) checks
the ownership marker, reads the kept ``.dir`` manifests to add their files, lists the
storage and deletes the unreferenced objects older than the grace period (cpvd.lifecycle.plan).

It deletes only what is certain: a kept version whose files cannot be known (a manifest
missing, corrupt or unsafe; a pointer that does not parse) stops the gc before anything is
deleted, naming the version.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cpvd.errors import CpvError, IntegrityError, NotFound
from cpvd.lifecycle.kept import kept_versions
from cpvd.lifecycle.marker import RegistryIdentity, claim, identity_of
from cpvd.lifecycle.plan import GcPlan, plan_gc
from cpvd.registry.core import EngineCore
from cpvd.registry.dvcfiles import DvcFileError
from cpvd.registry.retrieve import dir_entries
from cpvd.registry.safety import UnsafeInput
from cpvd.registry.sync import fetch_all_tags
from cpvd.storage.base import CollectableStorage, StoredObject

log = logging.getLogger(__name__)

#: objects deleted per call (S3's DeleteObjects takes at most 1,000)
DELETE_BATCH = 1000
#: parallel manifest reads (one GET each on S3)
MANIFEST_THREADS = 8
#: DeleteObjects calls in flight: the client builds (and S3 checks) 1,000 keys of XML
#: per call, and one at a time left each side waiting on the other
DELETE_THREADS = 4

GcProgress = Callable[[int, int], None]  # (bytes deleted so far, bytes to delete)


class GcRefused(CpvError):
    """gc cannot be sure what a kept version references, so it deletes nothing."""

    code = "conflict"


class GcStopped(CpvError):
    """The daemon is stopping: gc ends between two steps (what it deleted stays deleted)."""

    code = "internal"


@dataclass
class Roots:
    """What the registry says is referenced, before the manifests are read."""

    referenced: set[str] = field(default_factory=set)
    dirs: dict[str, str] = field(default_factory=dict)  # .dir md5 -> a tag that names it
    kept: int = 0
    pruned: int = 0
    identity: RegistryIdentity | None = None


def read_roots(core: EngineCore, fetch: bool = True) -> Roots:
    """The registry's side of gc (registry thread): fetch, then what kept versions name."""
    reg = core.registry
    if fetch and reg.has_remote and reg.head() is not None:
        reg.fetch()
        fetch_all_tags(core)  # every deregistration and version tag, not only followed ones
    index = core.index()
    kept = kept_versions(index)
    roots = Roots(kept=len(kept.versions) + len(kept.unreadable), pruned=kept.pruned)
    for v in kept.versions:
        _add(roots, v.md5, v.tag)
    for tag in kept.unreadable:
        artifact = tag.rpartition("@")[0]
        _add_pointer(roots, core, artifact, tag, f"version tag {tag}")
    artifacts = set(index.versions) | {w.artifact for w in core.config.watches}
    if reg.head() is not None:
        for artifact in sorted(artifacts):
            _add_pointer(roots, core, artifact, "HEAD", f"{artifact}'s pointer at HEAD")
    roots.identity = identity_of(reg)
    return roots


def _add(roots: Roots, md5: str, tag: str) -> None:
    roots.referenced.add(md5)
    if md5.endswith(".dir"):
        roots.dirs.setdefault(md5, tag)


def _add_pointer(roots: Roots, core: EngineCore, artifact: str, rev: str, what: str) -> None:
    try:
        pointer = core.registry.pointer(artifact, rev)
    except DvcFileError as exc:
        raise GcRefused(
            f"gc cannot tell what {what} references ({exc.message}); it deletes nothing "
            "until that pointer is repaired or the version is pruned"
        ) from None
    if pointer is not None:
        _add(roots, pointer.md5, what)


def collect(
    storage: CollectableStorage,
    roots: Roots,
    grace: float,
    dry_run: bool,
    progress: GcProgress | None = None,
    now: Callable[[], float] = time.time,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """The storage's side of gc (io thread); returns the report ``cpvctl gc`` prints.
    ``stop`` (set when the daemon stops) ends it between two steps with GcStopped."""
    stop = stop or threading.Event()
    phases: dict[str, float] = {}
    with _phase(phases, "manifests"):
        # refuses a storage owned by another registry; a dry run writes no marker either
        claim(storage, roots.identity, write=not dry_run)
        referenced = set(roots.referenced) | manifest_files(storage, roots.dirs, stop)
    with _phase(phases, "list"):
        plan = plan_gc(_until(stop, storage.list_objects()), referenced, now(), grace)
    with _phase(phases, "delete"):
        deleted = 0 if dry_run else delete_planned(storage, plan, progress, stop)
    out = report(plan, roots, grace, dry_run, deleted)
    out["phase_seconds"] = phases
    return out


@contextlib.contextmanager
def _phase(phases: dict[str, float], name: str) -> Iterator[None]:
    """Time one step (the report shows where a slow gc spends it: storage or cpvd)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = round(time.perf_counter() - t0, 3)


def _until(stop: threading.Event, objects: Iterable[StoredObject]) -> Iterator[StoredObject]:
    for obj in objects:
        _check(stop)
        yield obj


def _check(stop: threading.Event) -> None:
    if stop.is_set():
        raise GcStopped("gc stopped because cpvd is stopping; run it again to finish")


def manifest_files(
    storage: CollectableStorage, dirs: dict[str, str], stop: threading.Event
) -> set[str]:
    """Every file md5 the kept ``.dir`` manifests list (read in parallel)."""

    def entries(item: tuple[str, str]) -> list[str]:
        md5, tag = item
        _check(stop)
        try:
            return [e.md5 for e in dir_entries(storage, md5)]
        except NotFound:
            reason = "is missing from the storage"
        except (IntegrityError, UnsafeInput) as exc:
            reason = f"cannot be trusted ({exc.message})"
        raise GcRefused(
            f"the manifest {md5} of {tag} {reason}, so gc cannot tell which files that kept "
            "version needs; it deletes nothing (check with `cpvctl verify`, or prune that "
            "version)"
        )

    out: set[str] = set()
    with ThreadPoolExecutor(MANIFEST_THREADS, thread_name_prefix="cpv-gc") as pool:
        for files in pool.map(entries, sorted(dirs.items())):
            out.update(files)
    return out


def delete_planned(
    storage: CollectableStorage,
    plan: GcPlan,
    progress: GcProgress | None,
    stop: threading.Event | None = None,
) -> int:
    """Delete in batches, DELETE_THREADS at a time, every file before any manifest (the
    manifests start only once all file batches succeeded); returns the bytes deleted."""
    stop = stop or threading.Event()
    objects = plan.ordered()
    count = Deleted(total=sum(o.size for o in objects), progress=progress)
    files = [o for o in objects if not o.md5.endswith(".dir")]
    manifests = objects[len(files) :]
    with ThreadPoolExecutor(DELETE_THREADS, thread_name_prefix="cpv-gc-delete") as pool:
        for group in (files, manifests):
            batches = [group[i : i + DELETE_BATCH] for i in range(0, len(group), DELETE_BATCH)]
            for size in pool.map(lambda b: _delete_batch(storage, b, stop), batches):
                count.add(size)
    return count.done


@dataclass
class Deleted:
    """Bytes deleted so far, reported to ``progress`` (in the calling thread)."""

    total: int
    progress: GcProgress | None
    done: int = 0

    def add(self, size: int) -> None:
        self.done += size
        if self.progress is not None:
            self.progress(self.done, self.total)


def _delete_batch(
    storage: CollectableStorage, batch: list[StoredObject], stop: threading.Event
) -> int:
    _check(stop)
    storage.delete_objects(o.md5 for o in batch)
    return sum(o.size for o in batch)


def report(
    plan: GcPlan, roots: Roots, grace: float, dry_run: bool, deleted_bytes: int
) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "grace_hours": grace / 3600,
        "versions_kept": roots.kept,
        "versions_pruned": roots.pruned,
        "objects_listed": plan.listed,
        "objects_referenced": plan.referenced,
        "objects_young": plan.young,
        "objects_deleted": 0 if dry_run else len(plan.delete),
        "bytes_deleted": deleted_bytes,
        "objects_to_delete": len(plan.delete),
        "bytes_to_delete": plan.delete_bytes,
    }
