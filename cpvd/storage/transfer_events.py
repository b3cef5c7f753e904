"""Events the storage layer has to tell (an upload resumed, a part stalled), published on
the daemon's event bus once the composition root attaches it; logged either way.

The storage is built before the bus (the registry needs it first), so it gets this relay at
construction and the daemon plugs the bus in later. Callable from any upload thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Sink = Callable[..., None]


class TransferEvents:
    def __init__(self) -> None:
        self._sink: Sink | None = None

    def attach(self, sink: Sink) -> None:
        """``sink(type, **data)``: the event bus's ``publish``."""
        self._sink = sink

    def publish(self, type: str, **data: Any) -> None:
        log.info("%s: %s", type, ", ".join(f"{k}={v}" for k, v in data.items()))
        sink = self._sink
        if sink is not None:
            sink(type, **data)
