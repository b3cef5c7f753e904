"""``cpvctl events``: print the remembered events, then (with ``--follow``) the new ones.

Why not just follow: a stream of what happens next shows a newcomer a silent, hung terminal.
So the recent history comes first and the command exits; ``--follow`` goes on from the last
id the history answer named (``Last-Event-ID``), so nothing between the two calls is lost,
and says on stderr that it is waiting when there was nothing to show yet.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import IO, Any, Protocol

from cpvctl.render import render_event


class EventSource(Protocol):
    def recent_events(self, since: float | None = None, count: int | None = None) -> Any: ...

    def events(
        self, read_timeout: float | None = None, after_id: int | None = None, raw: bool = False
    ) -> Any: ...


def format_event(envelope: Mapping[str, Any], as_json: bool) -> str:
    """One line: ``12:03:04  versioned  artifact=demo/model version=v1.0.0`` or its JSON."""
    kind = str(envelope.get("type") or "message")
    data = envelope.get("data")
    data = data if isinstance(data, dict) else {}
    if as_json:
        line = {"event": kind, "id": envelope.get("id"), "time": envelope.get("time"), "data": data}
        return json.dumps(line)
    stamp = envelope.get("time")
    clock = "--:--:--"
    if isinstance(stamp, float | int):
        clock = time.strftime("%H:%M:%S", time.localtime(stamp))
    return f"{clock}  {render_event(kind, data)}"


def print_events(
    client: EventSource,
    *,
    since: float | None,
    count: int | None,
    follow: bool,
    as_json: bool,
    out: IO[str],
    err: IO[str],
) -> None:
    answer = client.recent_events(since, count)
    history = [e for e in answer.get("events") or [] if isinstance(e, dict)]
    for envelope in history:
        print(format_event(envelope, as_json), file=out, flush=True)
    if not follow:
        if not history and not as_json:
            print("no events yet (cpvctl events --follow waits for new ones)", file=err)
        return
    if not history:
        print("waiting for events... (Ctrl-C to stop)", file=err, flush=True)
    last_id = answer.get("last_id")
    stream = client.events(after_id=last_id if isinstance(last_id, int) else None, raw=True)
    try:
        for kind, envelope in stream:
            envelope.setdefault("type", kind)
            print(format_event(envelope, as_json), file=out, flush=True)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
