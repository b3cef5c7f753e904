"""The values the registry's verbs take and return (requests, results, reports).

Plain data only: no git, no storage, no I/O, so every verb module and every caller (the
worker, the controller, the API) can import them without pulling in the engine.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpvd.registry.metadata import VersionInfo
from cpvd.storage.hashing import ContentHash, FileEntry


@dataclass
class VersionRequest:
    artifact: str
    path: Path  # where the bytes are read (a snapshot, or the checkpoint itself)
    source: str | None = None  # where the checkpoint was found (default: path)
    kind: str = "model"
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    metrics: dict[str, Any] | None = None
    bump: str = "minor"
    name: str | None = None  # original file/dir name (default: the source's name)
    data: Sequence[str] = ()  # data artifacts to record as lineage
    relpath: str | None = None  # the checkpoint's path below its watch (None: not in one)
    origin: str = "watch"  # "push": an explicit submission (retention keeps it by default)


@dataclass
class VersionResult:
    status: str  # "versioned" | "unchanged"
    info: VersionInfo
    content: ContentHash


@dataclass
class Reverted:
    artifact: str
    version: str
    path: str
    backup: str | None = None
    restored: bool = True  # False when the target already held these bytes


@dataclass
class PushReport:
    pushed: int  # commits pushed
    renumbered: list[tuple[str, str]] = field(default_factory=list)  # (old tag, new tag)


@dataclass
class Manifest:
    artifact: str
    version: str
    kind: str  # "file" | "dir"
    name: str
    md5: str
    size: int
    files: list[FileEntry]

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "version": self.version,
            "kind": self.kind,
            "name": self.name,
            "md5": self.md5,
            "size": self.size,
            "files": [{"relpath": f.relpath, "md5": f.md5, "size": f.size} for f in self.files],
        }
