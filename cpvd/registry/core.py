"""The engine's shared state and its read-only queries.

:class:`EngineCore` holds what every verb needs: the config, the storage, the registry's
working tree (:class:`~cpvd.registry.repo.RegistryRepo`), the tag index and the
current-version and pointer caches, and ``generation``, which answer caches key on. The
verbs (``versioning``, ``sync``, ``stages``, ``revert``, ``retrieve``) are functions over a
core; they change the caches only through the ``note_*`` methods here, never by hand, so
the rule "anything a query shows may have changed -> bump ``generation``" lives in one place.

This module imports no verb module: verbs depend on the core, never the reverse.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cpvctl.protocol import Version, validate_name
from cpvd.config.model import Config
from cpvd.errors import NotFound
from cpvd.registry.dvcfiles import DvcFileError, Pointer, pointer_file
from cpvd.registry.index import RegistryIndex, read_index
from cpvd.registry.metadata import VersionInfo
from cpvd.registry.repo import RegistryRepo
from cpvd.storage.base import Storage

log = logging.getLogger(__name__)


class EngineCore:
    """Registry state and queries. Synchronous and not thread-safe: one registry thread."""

    def __init__(
        self,
        config: Config,
        storage: Storage,
        registry: RegistryRepo,
        *,
        writable_roots: Sequence[Path] | None = None,
    ) -> None:
        self.config = config
        self.storage = storage
        self.registry = registry
        self.state_dir = Path(config.daemon.state_dir)
        # start-up's reset of the work tree moves hand edits here instead of dropping them
        registry.backups = self.state_dir / "backups"
        roots = writable_roots if writable_roots is not None else [w.path for w in config.watches]
        self.writable_roots = [Path(os.path.realpath(r)) for r in roots]
        self._index: RegistryIndex | None = None
        self._current: dict[str, str | None] = {}
        self._pointers: dict[str, Pointer | None] = {}
        self.laid_out: set[str] = set()  # artifacts whose dvc.yaml entry is committed
        #: bumped whenever anything a query shows may have changed (answer caches key on it)
        self.generation = 0

    # -- setup ----------------------------------------------------------------------------
    def open(self) -> None:
        self.registry.open(self.config.artifact_kinds())
        self.invalidate()
        self.index()  # read every tag now, so the first query does not pay for it

    def invalidate(self) -> None:
        """Forget everything read from the registry (after fetch, replay, reset, promote)."""
        self._index = None
        self._current.clear()
        self._pointers.clear()
        self.laid_out.clear()
        self.generation += 1

    # -- cache updates by the verbs -------------------------------------------------------
    def note_committed(self, artifact: str, version: str, pointer: Pointer) -> None:
        """A version commit just moved ``artifact``'s pointer (its tag is not made yet)."""
        self._current[artifact] = version
        self._pointers[artifact] = pointer

    def note_tagged(self, info: VersionInfo) -> None:
        """A version tag was made on ``info.commit`` (or found there, for a resumed job)."""
        if self._index is not None and info.tag not in self._index.tags:
            self._index.add_version(dataclasses.replace(info, stages=[]))
        else:
            self._index = None  # resumed with the tag already there: read it back
        self.generation += 1

    def note_moved(self, artifacts: Iterable[str]) -> None:
        """Pointers moved back to older versions (a revert): read them again when asked."""
        for artifact in artifacts:
            self._current.pop(artifact, None)
            self._pointers.pop(artifact, None)
        self.generation += 1

    # -- queries --------------------------------------------------------------------------
    def index(self) -> RegistryIndex:
        if self._index is None:
            self._index = read_index(self.registry.path)
        return self._index

    def current_version(self, artifact: str) -> str | None:
        """The version the artifact's pointer names at HEAD (after a revert: the reverted-to)."""
        if artifact not in self._current:
            head = self.registry.head()
            self._current[artifact] = None if head is None else self.version_at(artifact, "HEAD")
        return self._current[artifact]

    def pointer_at_head(self, artifact: str) -> Pointer | None:
        """The artifact's pointer at HEAD. An unreadable one counts as none (with a warning):
        the next version rewrites it, which is the repair."""
        if artifact not in self._pointers:
            try:
                self._pointers[artifact] = self.registry.pointer(artifact)
            except DvcFileError as exc:
                log.warning("%s; the next version of %s replaces it", exc.message, artifact)
                self._pointers[artifact] = None
        return self._pointers[artifact]

    def version_at(self, artifact: str, commit: str) -> str | None:
        """The version the artifact's pointer names at ``commit`` (from commit trailers)."""
        out = self.registry.git(
            "log", "-n", "1", "--format=%H", commit, "--", pointer_file(artifact)
        ).strip()
        if not out:
            return None
        for value in self.registry.trailers(out).get("Cpv-Current", []):
            name, _, version = value.rpartition("@")
            if name == artifact:
                return version
        return None

    def versions(self, artifact: str) -> list[VersionInfo]:
        validate_name(artifact)
        current = self.current_version(artifact)
        out = []
        for v in self.index().artifact_versions(artifact):
            v.current = v.version == current
            out.append(v)
        return out

    def show(self, artifact: str, version: str | None = None) -> VersionInfo:
        validate_name(artifact)
        if version is None:
            version = self.current_version(artifact)
            if version is None:
                raise NotFound(f"artifact {artifact!r} has no versions yet", "unknown_artifact")
        else:
            version = str(Version.parse(version))
        info = self.index().get(artifact, version)
        if info is None:
            if not self.index().artifact_versions(artifact):
                raise NotFound(f"unknown artifact {artifact!r}", "unknown_artifact")
            raise NotFound(f"{artifact} has no version {version}", "unknown_version")
        info.current = info.version == self.current_version(artifact)
        return info

    def with_lineage(self, info: VersionInfo, with_data: bool) -> list[VersionInfo]:
        """``info``, then (``with_data``) the data versions its lineage names."""
        targets = [info]
        if with_data:
            for data_name, data_version in sorted(info.lineage.items()):
                targets.append(self.show(data_name, data_version))
        return targets

    def artifacts(self) -> list[dict[str, Any]]:
        kinds = dict(self.config.artifact_kinds())
        index = self.index()
        for name, vs in index.versions.items():
            kinds.setdefault(name, vs[0].kind if vs else "model")
        out = []
        for name, kind in sorted(kinds.items()):
            latest = index.latest(name)
            versions = index.artifact_versions(name)
            out.append(
                {
                    "name": name,
                    "kind": kind,
                    "latest": latest.version if latest else None,
                    "current": self.current_version(name),
                    "count": len(versions),
                    # for the local page: where each stage points, and the bytes the
                    # versions hold (before deduplication by content)
                    "stages": {s: v.version for v in versions for s in v.stages},
                    "bytes": sum(v.size for v in versions),
                }
            )
        return out
