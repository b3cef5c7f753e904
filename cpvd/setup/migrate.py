"""``cpvd migrate-storage --to URL``: move a registry's objects to another storage, then
switch the registry's record of where they are, in that order.

Every object any version references (file objects, ``.dir`` manifests and the files they
list) is copied from the storage the registry records to the new one, verified there, and
journalled (``cpv.storage.transfer``), so a kill at any moment loses nothing: run it again
and it goes on. Only when every object is there does one registry commit switch
``.dvc/config`` and ``.cpv/storage.json``; until then the registry (and every clone of it)
still reads the old storage, which is never changed. Holds the daemon's single-instance
lock: the daemon must not write versions into the old storage meanwhile.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from cpvd.config.model import Config, StorageConfig
from cpvd.config.urls import normalize_storage_url
from cpvd.errors import ConfigError, IntegrityError, NotFound, StateError
from cpvd.registry.binding import (
    StorageIdentity,
    dvc_remote_settings_at_head,
    identity_of,
    recorded_storage,
)
from cpvd.registry.dvcfiles import DVC_REMOTE
from cpvd.registry.index import read_index
from cpvd.registry.repo import RegistryRepo
from cpvd.registry.retrieve import dir_entries
from cpvd.service.instance import InstanceLock, clear_stale_git_locks
from cpvd.storage import open_storage
from cpvd.storage.base import Storage
from cpvd.storage.transfer import TransferReport, VerifiedJournal, transfer

Say = Callable[[str], None]


class MigrationIncomplete(IntegrityError):
    """Objects some version needs are missing from the old storage; nothing was switched."""

    retryable = False


def target_config(cfg: Config, to_url: str, endpoint_url: str | None) -> StorageConfig:
    """The new storage: the config's own [storage] when it already names ``to_url`` (its
    endpoint, profile, region and transfer settings), else ``to_url`` with ``endpoint_url``."""
    url = normalize_storage_url(to_url, "--to")
    if url == cfg.storage.url:
        storage = cfg.storage
        return dataclasses.replace(storage, endpoint_url=endpoint_url or storage.endpoint_url)
    return StorageConfig(url=url, endpoint_url=endpoint_url)


def source_config(path: Path, recorded: StorageIdentity) -> StorageConfig:
    """The recorded storage, with the region and profile its ``.dvc/config`` names."""
    settings = dvc_remote_settings_at_head(path) or {}
    if not settings or identity_of(settings) != recorded:
        settings = {}
    return StorageConfig(
        url=recorded.url,
        endpoint_url=recorded.endpoint_url,
        region=settings.get("region"),
        profile=settings.get("profile"),
    )


def referenced_objects(path: Path, source: Storage) -> tuple[list[str], list[str]]:
    """Every object the registry's versions reference, files before the manifests listing
    them, each once; and the ``.dir`` manifests missing from ``source``."""
    ordered: dict[str, None] = {}
    missing: list[str] = []
    infos = [v for vs in read_index(path).versions.values() for v in vs]
    for info in sorted(infos, key=lambda v: (v.created_at or "", v.tag)):
        if info.is_dir:
            try:
                entries = dir_entries(source, info.md5)
            except NotFound:
                missing.append(info.md5)
                continue
            ordered.update((e.md5, None) for e in entries)
        ordered[info.md5] = None
    return list(ordered), missing


def _journal_path(state_dir: Path, source: StorageIdentity, target: StorageIdentity) -> Path:
    key = hashlib.sha256(f"{source.describe()}\n{target.describe()}".encode()).hexdigest()[:16]
    return state_dir / "migrate" / f"verified-{key}.txt"


def _say(out: TextIO) -> Say:
    def say(line: str) -> None:
        print(f"migrate: {line}", file=out, flush=True)

    return say


def migrate_storage(
    cfg: Config, to_url: str, endpoint_url: str | None, allow_missing: bool, out: TextIO
) -> int:
    """Copy, verify, switch; returns the exit status (0). Raises CpvError on failure."""
    path = Path(cfg.registry.path)
    if not (path / ".git").exists():
        raise ConfigError(f"no registry at {path} ([registry] path): nothing to migrate")
    state = Path(cfg.daemon.state_dir)
    lock = InstanceLock(state)
    try:
        lock.acquire()
    except StateError as exc:
        raise StateError(
            f"{exc.message}: stop it first (it would keep writing into the old storage), "
            "then run cpvd migrate-storage again"
        ) from None
    try:
        clear_stale_git_locks(path)
        return _migrate_locked(cfg, target_config(cfg, to_url, endpoint_url), allow_missing, out)
    finally:
        lock.release()


def _migrate_locked(cfg: Config, new: StorageConfig, allow_missing: bool, out: TextIO) -> int:
    path, state = Path(cfg.registry.path), Path(cfg.daemon.state_dir)
    say = _say(out)
    target = open_storage(new, journal_dir=state / "uploads")
    wanted = identity_of(target.dvc_remote_settings())
    recorded = recorded_storage(path)
    if recorded is None or recorded == wanted:
        say(f"the registry already records {wanted.describe()}; nothing to copy")
        return _switch(cfg, target, 0, say)
    source = open_storage(source_config(path, recorded))
    try:
        source.check()
        target.check()
        target.abort_incomplete_uploads()
        objects, missing = referenced_objects(path, source)
        say(f"{len(objects)} objects from {recorded.describe()} to {wanted.describe()}")
        journal = VerifiedJournal(_journal_path(state, recorded, wanted))
        report = transfer(source, target, objects, journal, state / "migrate" / "tmp", say)
        report.missing[:0] = missing
        _refuse_missing(report, source, allow_missing)
        say(
            f"done: {report.copied} copied ({report.bytes_copied} bytes), "
            f"{report.skipped} already there"
        )
        return _switch(cfg, target, len(objects), say)
    finally:
        source.close()
        target.close()


def _refuse_missing(report: TransferReport, source: Storage, allow_missing: bool) -> None:
    if not report.missing or allow_missing:
        return
    shown = ", ".join(report.missing[:5]) + (" ..." if len(report.missing) > 5 else "")
    raise MigrationIncomplete(
        f"{len(report.missing)} objects that versions reference are missing from "
        f"{source.describe()} ({shown}); nothing was switched. Restore them and run again, "
        "or pass --allow-missing to switch anyway (those versions stay unpullable)"
    )


def _switch(cfg: Config, target: Storage, n: int, say: Say) -> int:
    settings = target.dvc_remote_settings()
    repo = RegistryRepo(cfg.registry, settings)
    changed = repo.ensure_layout(
        {},
        message=f"cpv: storage moved to {identity_of(settings).describe()} ({n} objects)",
        switch_storage=True,
    )
    head = repo.head() or "?"
    did = f"switched the registry's storage (commit {head[:12]})" if changed else "up to date"
    say(f"{did}: .dvc/config and .cpv/storage.json name {identity_of(settings).describe()}")
    say(
        "the old storage was left as it was: a checkout of a commit made before this one "
        "reads it from that commit's .dvc/config; delete it only once every clone pulls old "
        f"versions with `dvc remote modify --local {DVC_REMOTE} url {settings['url']}`"
    )
    if cfg.storage.url != settings["url"]:
        key = f"[[storage]] {cfg.storage.name!r} url" if cfg.registries else "[storage] url"
        say(f'now set {key} = "{settings["url"]}" in {cfg.source or "the config"}')
    return 0
