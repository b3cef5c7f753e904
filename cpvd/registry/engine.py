"""The versioning engine as the daemon sees it: one object, one method per verb.

:class:`Engine` is the core (:mod:`cpvd.registry.core`: state, caches, queries) plus one
line per verb delegating to the module that owns it:

==============================  ===============================================
``version``                     :mod:`cpvd.registry.versioning`
``push``, ``unpushed``          :mod:`cpvd.registry.sync`
``promote``                     :mod:`cpvd.registry.stages`
``revert``                      :mod:`cpvd.registry.revert`
``manifest``, ``verify_*``      :mod:`cpvd.registry.retrieve`
``resolve`` (references)        :mod:`cpvd.registry.references`
``upload``                      :func:`cpvd.storage.put_checkpoint`
==============================  ===============================================

Every operation is safe to run again after a crash: a version's commit is found by its job
id, its tag is checked before it is made, uploads skip objects already stored. The engine is
synchronous and not thread-safe; the daemon runs it on one worker thread per registry.
Nothing here holds logic: a rule belongs in the verb module that owns it.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from cpvctl.protocol import Ref
from cpvd.registry import references, retrieve, revert, stages, sync, versioning
from cpvd.registry.core import EngineCore
from cpvd.registry.metadata import VersionInfo
from cpvd.registry.model import (
    Manifest,
    PushReport,
    Reverted,
    VersionRequest,
    VersionResult,
)
from cpvd.storage import put_checkpoint
from cpvd.storage.base import Progress
from cpvd.storage.hashing import ContentHash


class Engine(EngineCore):
    """The registry's verbs over one :class:`EngineCore` (built as ``Engine(cfg, storage,
    repo)``; queries ``index/current_version/versions/show/artifacts`` come from the core)."""

    def upload(
        self,
        path: Path,
        content: ContentHash,
        progress: Progress | None = None,
        skip: Collection[str] = (),
    ) -> None:
        """Put every object of a checkpoint into the remote, skipping those already there
        (and the file objects in ``skip``, known to be stored)."""
        put_checkpoint(self.storage, path, content, progress, skip)

    def version(self, req: VersionRequest, content: ContentHash, *, resume: bool) -> VersionResult:
        return versioning.version(self, req, content, resume=resume)

    def unpushed(self) -> int:
        return sync.unpushed(self)

    def push(self) -> PushReport:
        return sync.push(self)

    def promote(
        self, artifact: str, version: str, stage: str, with_data: bool = False
    ) -> list[dict[str, str]]:
        return stages.promote(self, artifact, version, stage, with_data)

    def revert(
        self, artifact: str, version: str, with_data: bool = False, to: Path | None = None
    ) -> list[Reverted]:
        return revert.revert(self, artifact, version, with_data, to)

    def resolve(self, ref: Ref) -> VersionInfo:
        return references.resolve(self, ref)

    def manifest(self, artifact: str, version: str | None = None) -> Manifest:
        return retrieve.manifest(self, artifact, version)

    def verify_targets(
        self, sample: int | None = None, artifact: str | None = None
    ) -> list[VersionInfo]:
        return retrieve.verify_targets(self, sample, artifact)

    def verify_objects(self, infos: list[VersionInfo]) -> dict[str, Any]:
        return retrieve.verify_objects(self.storage, infos)


__all__ = [
    "Engine",
    "EngineCore",
    "Manifest",
    "PushReport",
    "Reverted",
    "VersionRequest",
    "VersionResult",
]
