"""Copy a checkpoint into the snapshot store and hash it in the same read.

Each file starts uploading (a batch of :mod:`cpvd.pipeline.file_upload`) as soon as its md5
is final. Used by the intake for a checkpoint just declared complete, and by the speculative
snapshots for one still in its quiet period. Owns no state beyond what it is given.
"""

from __future__ import annotations

import errno
import logging
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from cpvd.errors import CpvError, NoSpace, NotFound, StateError
from cpvd.pipeline.file_upload import FileUploads, UploadBatch
from cpvd.pipeline.health import Health, Pause
from cpvd.pipeline.snapshot import Layout, SnapshotStore
from cpvd.pipeline.threads import Executors
from cpvd.storage.hashing import ContentHash, StreamHasher

log = logging.getLogger(__name__)


class Abandoned(CpvError):
    """Raised inside a speculative copy to stop it: the checkpoint changed."""


class Vanished(CpvError):
    """The checkpoint disappeared before it could be snapshotted."""


@dataclass
class Taken:
    """A snapshot taken for a checkpoint, with its md5s and its early uploads."""

    key: str
    snap: Path
    content: ContentHash | None
    batch: UploadBatch


@dataclass(eq=False)
class Copier:
    """Owns no state: copies into the snapshot store it is given and starts early uploads
    through the batches it makes. Never queues a job and never touches the registry."""

    snapshots: SnapshotStore
    uploads: FileUploads
    executors: Executors
    pause: Pause
    health: Health

    def batch(self, artifact: str) -> UploadBatch:
        """A batch of early uploads for a new snapshot of ``artifact``'s checkpoint."""
        batch = self.uploads.batch()
        batch.enabled = self.uploads_allowed(artifact)
        return batch

    def uploads_allowed(self, artifact: str) -> bool:
        """No bytes leave early for a paused artifact or while the storage is failing."""
        return not (self.pause.is_paused(artifact) or self.health.storage_ok is False)

    async def take(self, artifact: str, path: Path) -> Taken:
        """Snapshot ``path`` now, on the snapshot thread. Raises :class:`Vanished`."""
        key = uuid.uuid4().hex
        batch = self.batch(artifact)
        try:
            snap, content, _ = await self.executors.on_snapshot(
                self.copy_and_hash, path, key, batch
            )
        except NotFound as exc:
            raise Vanished(f"{path} vanished before it could be snapshotted") from exc
        except OSError as exc:
            raise self._error(path, exc) from exc
        return Taken(key, snap, content, batch)

    def _error(self, path: Path, exc: OSError) -> CpvError:
        where = self.snapshots.root
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return NoSpace(
                f"no space left on device to snapshot {path} into {where}: free space on the "
                f"state directory's filesystem ({where.parent}); the checkpoint is retried by "
                "itself"
            )
        return StateError(f"cannot snapshot {path} into {where}: {exc.strerror or exc}")

    def copy_and_hash(
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
