"""``GET /v1/events/recent``: the bus's remembered events, filtered by time and count.

Why a separate answer from the SSE stream: a newcomer's ``cpvctl events`` should print what
already happened and exit, not hang on a stream that only carries what happens next. The
answer also names the newest id the bus gave out (``last_id``), so a client that goes on to
follow (``Last-Event-ID: last_id``) misses nothing that happened in between.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from cpvctl.protocol import ProtocolError
from cpvd.api.events import Event, EventBus

#: events answered when the request names no ``count``
DEFAULT_COUNT = 20


def parse_since(text: str | None) -> float | None:
    """``since`` is a Unix time in seconds (the client turns ``10m`` or an ISO time into it)."""
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ProtocolError(
            "bad_request", f"since must be a Unix time in seconds (e.g. 1767225600), not {text!r}"
        )
    return value


def parse_count(text: str | None) -> int | None:
    """``count`` is a positive integer; absent means :data:`DEFAULT_COUNT` unless ``since``."""
    if text is None or text == "":
        return None
    if not text.isdigit() or int(text) < 1:
        raise ProtocolError("bad_request", f"count must be a positive integer, not {text!r}")
    return int(text)


def select(events: Sequence[Event], since: float | None, count: int | None) -> list[Event]:
    """Events at or after ``since``, then the newest ``count`` of them, oldest first.

    With neither given, the newest :data:`DEFAULT_COUNT`; with only ``since``, all of them.
    """
    chosen = [e for e in events if since is None or e.time >= since]
    limit = count if count is not None else (DEFAULT_COUNT if since is None else None)
    return chosen[-limit:] if limit is not None else chosen


def history_answer(bus: EventBus, query: Mapping[str, str]) -> dict[str, Any]:
    """The JSON answer: ``{"events": [envelope, ...], "last_id": int}``."""
    since = parse_since(query.get("since"))
    count = parse_count(query.get("count"))
    types_text = query.get("types")
    types: Collection[str] | None = set(types_text.split(",")) if types_text else None
    last_id = bus.last_id
    events = select(bus.recent(types=types), since, count)
    return {"events": [e.to_dict() for e in events], "last_id": last_id}
