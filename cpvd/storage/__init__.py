"""Storage backends that put checkpoint content into a DVC remote's layout.

``open_storage(cfg)`` picks the backend from the URL: ``s3://bucket/prefix`` -> S3Storage,
anything else -> LocalStorage (an absolute directory).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from cpvd.config.model import StorageConfig
from cpvd.storage.base import DEFAULT_ABANDON_AGE, Progress, Storage, object_key
from cpvd.storage.hashing import ContentHash
from cpvd.storage.local import LocalStorage
from cpvd.storage.rate import TokenBucket
from cpvd.storage.transfer_events import TransferEvents

__all__ = [
    "DEFAULT_ABANDON_AGE",
    "LocalStorage",
    "Storage",
    "object_key",
    "open_storage",
    "put_checkpoint",
]


def open_storage(
    cfg: StorageConfig, journal_dir: Path | None = None, events: TransferEvents | None = None
) -> Storage:
    """The backend for ``cfg``; S3 imports boto3 only when used (it is slow to import).

    ``journal_dir`` (the daemon's state dir) lets S3 record the multipart uploads it starts,
    so those a crash interrupts are resumed or aborted later (see ``storage.journal``);
    ``events`` relays what uploads tell (resumed, stalled) to the daemon's bus.
    ``[storage] max_upload_rate`` becomes one token bucket all its uploads share.
    """
    rate = TokenBucket(cfg.max_upload_rate) if cfg.max_upload_rate else None
    if cfg.is_s3:
        from cpvd.storage.s3 import S3Storage

        s3 = S3Storage(cfg, journal_dir=journal_dir, events=events)
        s3.rate = rate  # every upload of this storage draws from the one bucket
        return s3
    local = LocalStorage(cfg.url.removeprefix("file://"))
    local.rate = rate
    return local


def put_checkpoint(
    storage: Storage,
    path: Path,
    content: ContentHash,
    progress: Progress | None = None,
    skip: Collection[str] = (),
) -> None:
    """Upload a hashed checkpoint: each distinct file object, then the ``.dir`` manifest.

    The manifest goes last so its presence in the remote means every file it lists is there
    too (the order ``dvc push`` uses). ``path`` is the checkpoint file or directory that
    ``content`` was computed from; identical files inside a directory upload once. File
    objects in ``skip`` are known to be stored already (uploaded early) and are not checked.
    """
    if not content.is_dir:
        if content.md5 not in skip:
            storage.put_file(content.md5, path, content.size, progress)
        return
    done: set[str] = set()
    for entry in content.entries:
        if entry.md5 in skip:
            continue
        if entry.md5 in done:
            if progress is not None:
                progress(entry.size)
            continue
        storage.put_file(entry.md5, path / entry.relpath, entry.size, progress)
        done.add(entry.md5)
    if content.manifest is None:
        raise ValueError(f"directory hash {content.md5} has no manifest")
    storage.put_bytes(content.md5, content.manifest)
