"""A job: one checkpoint on its way to becoming a version, as the queue stores it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

JOB_STATES = ("queued", "running", "done", "unchanged", "failed", "skipped", "superseded")
#: "superseded": a newer checkpoint of its artifact made it redundant (a watch's coalesce)
TERMINAL_STATES = frozenset({"done", "unchanged", "failed", "skipped", "superseded"})
ACTIVE_STATES = ("queued", "running")
#: worker steps in order; ``Job.step`` is the last one completed
STEPS = ("snapshotted", "hashed", "uploaded", "committed", "tagged", "pushed")
KINDS = ("file", "dir")
BUMPS = ("minor", "major")
ORIGINS = ("watch", "push")

JSON_FIELDS = frozenset({"metrics", "result"})
JOB_COLUMNS = (
    "id", "artifact", "source", "snapshot", "kind", "state", "step", "attempts",
    "next_attempt_at", "error", "created_at", "updated_at", "md5", "size", "nfiles",
    "version", "bump", "metrics", "origin", "result",
)  # fmt: skip


@dataclass
class Job:
    """One checkpoint on its way to becoming a version."""

    id: str
    artifact: str
    source: str
    snapshot: str | None
    kind: str | None
    state: str
    step: str | None
    attempts: int
    next_attempt_at: float
    error: str | None
    created_at: float
    updated_at: float
    md5: str | None
    size: int | None
    nfiles: int | None
    version: str | None
    bump: str
    metrics: dict[str, Any] | None
    origin: str
    result: dict[str, Any] | None

    @classmethod
    def _from_row(cls, row: tuple[Any, ...]) -> Job:
        values = dict(zip(JOB_COLUMNS, row, strict=True))
        for name in JSON_FIELDS:
            if values[name] is not None:
                values[name] = json.loads(values[name])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the API's job object)."""
        return asdict(self)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES
