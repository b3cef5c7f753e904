"""The copier for several registries: a checkpoint's early uploads go to the storage of the
registry its artifact belongs to (never to another team's bucket), and stop while that
storage, not another, is failing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cpvd.pipeline.copier import Copier
from cpvd.pipeline.file_upload import FileUploads, UploadBatch
from cpvd.pipeline.health import Health

#: an artifact's registry lane: the early uploads into its storage, and its health
Route = Callable[[str], tuple[FileUploads, Health]]


@dataclass(eq=False)
class RoutedCopier(Copier):
    route: Route | None = None

    def batch(self, artifact: str) -> UploadBatch:
        if self.route is None:
            return super().batch(artifact)
        batch = self.route(artifact)[0].batch()
        batch.enabled = self.uploads_allowed(artifact)
        return batch

    def uploads_allowed(self, artifact: str) -> bool:
        if self.route is None:
            return super().uploads_allowed(artifact)
        health = self.route(artifact)[1]
        return not (self.pause.is_paused(artifact) or health.storage_ok is False)
