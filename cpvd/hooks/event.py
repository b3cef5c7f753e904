"""A hook event: a stable ``id`` (kept across every retry, so a receiver can deduplicate),
its type, when it happened, and its data. The body a webhook receives and an exec hook
reads on stdin is :meth:`HookEvent.body`, byte for byte the same at every attempt."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cpvd.hooks.model import TEST_EVENT


@dataclass(frozen=True)
class HookEvent:
    type: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        stamp = datetime.fromtimestamp(self.time, UTC).isoformat().replace("+00:00", "Z")
        return {"id": self.id, "type": self.type, "time": stamp, "data": self.data}

    def body(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, default=str).encode()


def sample_event() -> HookEvent:
    """What ``cpvctl hooks test`` sends: the shape of a ``version.created``, typed
    ``hook.test`` so no receiver starts an evaluation or a deployment on it."""
    return HookEvent(
        TEST_EVENT,
        {
            "artifact": "example/model",
            "version": "v1.0.0",
            "tag": "example/model@v1.0.0",
            "stage": "",
            "path": "/tmp/example/checkpoint.pt",
            "md5": "0" * 32,
            "size": 0,
            "test": True,
        },
    )
