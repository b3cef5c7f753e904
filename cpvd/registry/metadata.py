"""What a version records: the JSON in its annotated tag, and how it is read back.

The tag message is the version's single source of truth (GTO reads the tag name; CPV and
humans read the message), so anything a query shows comes from here.
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from cpvctl.protocol import CPV_VERSION
from cpvd.registry.safety import (
    UnsafeInput,
    safe_artifact,
    safe_component,
    safe_count,
    safe_md5,
    safe_relpath,
    safe_text,
    safe_version,
)

log = logging.getLogger(__name__)

SCHEMA = 1


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def version_tag(artifact: str, version: str) -> str:
    return f"{artifact}@{version}"


@dataclass
class VersionInfo:
    """One version of an artifact, as recorded in its tag."""

    artifact: str
    version: str
    md5: str
    size: int
    nfiles: int
    is_dir: bool
    name: str  # the checkpoint's original file or directory name
    source: str  # where the checkpoint was found
    kind: str = "model"
    host: str = field(default_factory=socket.gethostname)
    metrics: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, str] = field(default_factory=dict)
    parent: str | None = None
    created_at: str = field(default_factory=now_iso)
    cpv_version: str = CPV_VERSION
    job_id: str | None = None
    #: the checkpoint's path below its watch path (None: pushed from outside, or older)
    relpath: str | None = None
    #: "watch" (found by the watcher) or "push" (an explicit ``cpvctl push``/``Client.submit``,
    #: which retention keeps unless ``keep.explicit = false``)
    origin: str = "watch"
    # filled by queries, not stored in the message:
    commit: str | None = None
    stages: list[str] = field(default_factory=list)
    current: bool = False
    #: deregistered by retention (a GTO tag ``NAME@vX.Y.Z!#N`` on its commit)
    pruned: bool = False

    @property
    def tag(self) -> str:
        return version_tag(self.artifact, self.version)

    def message(self) -> str:
        body = {k: v for k, v in asdict(self).items() if k not in _QUERY_ONLY}
        body["schema"] = SCHEMA
        return json.dumps(body, sort_keys=True, indent=1)

    def to_json(self) -> dict[str, Any]:
        # field by field, not dataclasses.asdict: its recursive deep copy made `versions`
        # at 10,000 versions spend 0.34 s here alone
        out = {f: getattr(self, f) for f in _FIELDS}
        out["metrics"] = dict(self.metrics)
        out["lineage"] = dict(self.lineage)
        out["stages"] = list(self.stages)
        out["tag"] = self.tag
        return out

    @classmethod
    def from_message(cls, artifact: str, version: str, message: str) -> VersionInfo | None:
        """Parse a tag message; None when the tag was not made by CPV (e.g. by hand).

        The message is untrusted (anyone who can push a tag wrote it): a message that looks
        like ours (JSON with an ``md5``) but breaks any rule of :func:`checked` is skipped
        with a warning, so one bad tag hides one version instead of breaking every query.
        Its number still counts as taken (the index keeps every tag name).
        """
        try:
            body = json.loads(message)
        except (ValueError, RecursionError):
            return None
        if not isinstance(body, dict) or "md5" not in body:
            return None
        known = {f for f in cls.__dataclass_fields__ if f not in _QUERY_ONLY}
        kwargs = {k: v for k, v in body.items() if k in known}
        kwargs["artifact"] = artifact
        kwargs["version"] = version
        try:
            return checked(cls(**kwargs))
        except TypeError:
            return None
        except UnsafeInput as exc:
            log.warning("skipping tag %r: %s", f"{artifact}@{version}"[:300], exc.message)
            return None


def checked(info: VersionInfo) -> VersionInfo:
    """``info`` if every field has the type and form cpvd writes; UnsafeInput otherwise.

    What matters most: ``name`` is one path component (revert and pull write it below a
    directory), md5s are DVC md5s (they become storage keys), sizes are counts.
    """
    safe_artifact(info.artifact)
    safe_version(info.version)
    safe_md5(info.md5, is_dir=_flag(info.is_dir, "is_dir"))
    safe_count(info.size, "size")
    safe_count(info.nfiles, "nfiles")
    safe_component(info.name, "name")
    for label in ("source", "kind", "host", "created_at", "cpv_version"):
        safe_text(getattr(info, label), label)
    if info.relpath is not None:
        safe_relpath(info.relpath, "relpath")
    for label in ("parent", "job_id"):
        if getattr(info, label) is not None:
            safe_text(getattr(info, label), label)
    if info.origin not in ("watch", "push"):
        raise UnsafeInput(f"origin {info.origin!r} is neither watch nor push")
    if info.kind not in ("model", "data"):
        raise UnsafeInput(f"kind {info.kind!r} is neither model nor data")
    if info.parent is not None:
        safe_version(info.parent)
    if not isinstance(info.metrics, dict):
        raise UnsafeInput("metrics is not a mapping")
    if not isinstance(info.lineage, dict):
        raise UnsafeInput("lineage is not a mapping")
    for data_name, data_version in info.lineage.items():
        safe_artifact(data_name)
        safe_version(data_version)
    return info


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise UnsafeInput(f"{what} {value!r} is not true or false")
    return value


_QUERY_ONLY = {"commit", "stages", "current", "pruned"}
_FIELDS = tuple(VersionInfo.__dataclass_fields__)
