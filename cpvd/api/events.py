"""The in-process event bus behind ``GET /v1/events`` and progress reporting.

Why this shape: workers run in threads (DVC and Git are blocking), subscribers are asyncio
tasks (SSE handlers, ``push --wait``). So ``publish`` is callable from any thread and hops to
the loop with ``call_soon_threadsafe``; ids are given out on the loop thread, so they follow
delivery order. A slow subscriber must never stall a worker: each subscription has a bounded
queue that drops its oldest events and then yields one ``lagged`` notice saying how many it
missed.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

DEFAULT_HISTORY = 500
DEFAULT_MAX_QUEUE = 1000
LAGGED = "lagged"
#: an SSE comment line: send it on idle streams so proxies and clients see the link alive
SSE_KEEPALIVE = b": keepalive\n\n"

_TYPE_RE = re.compile(r"^[a-z][a-z0-9_.\-]*$")


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    time: float
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "time": self.time, "data": self.data}


def format_sse(event: Event) -> bytes:
    """One server-sent event: ``id``, ``event``, ``data`` (the JSON of :meth:`Event.to_dict`).

    ``json.dumps`` escapes newlines inside strings, so the data is always a single line.
    """
    payload = json.dumps(event.to_dict(), separators=(",", ":"), default=str)
    return f"id: {event.id}\nevent: {event.type}\ndata: {payload}\n\n".encode()


class Subscription:
    """A bounded, filtered view of the bus; use ``async with bus.subscribe() as sub``.

    Iterate it (``async for ev in sub``) or call :meth:`get` with a timeout (for SSE
    keep-alives). Leaving the ``async with`` unsubscribes.
    """

    def __init__(self, bus: EventBus, types: Collection[str] | None, max_queue: int) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self._bus = bus
        self.types = frozenset(types) if types is not None else None
        self.max_queue = max_queue
        self._queue: deque[Event] = deque()
        self._wakeup = asyncio.Event()
        self._dropped = 0
        self._last_dropped_id = 0
        self._closed = False
        #: events this subscriber lost to lag, over its whole life
        self.dropped_total = 0

    # called on the loop thread only
    def _offer(self, event: Event) -> None:
        if self._closed or (self.types is not None and event.type not in self.types):
            return
        if len(self._queue) >= self.max_queue:
            lost = self._queue.popleft()
            self._note_dropped(lost.id, 1)
        self._queue.append(event)
        self._wakeup.set()

    def _note_dropped(self, last_id: int, n: int) -> None:
        self._dropped += n
        self.dropped_total += n
        self._last_dropped_id = max(self._last_dropped_id, last_id)
        self._bus.lagged_total += n

    def _close(self) -> None:
        self._closed = True
        self._wakeup.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def pending(self) -> int:
        return len(self._queue)

    def _take(self) -> Event | None:
        if self._dropped:
            # id of the last lost event: an SSE client resuming from here knows it has a gap
            notice = Event(self._last_dropped_id, LAGGED, time.time(), {"dropped": self._dropped})
            self._dropped = 0
            return notice
        if self._queue:
            return self._queue.popleft()
        return None

    async def get(self, timeout: float | None = None) -> Event | None:
        """The next event; None when ``timeout`` passes first or the subscription is closed."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            event = self._take()
            if event is not None:
                return event
            if self._closed:
                return None
            self._wakeup.clear()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                return None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        event = await self.get()
        if event is None:
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        """Unsubscribe (idempotent)."""
        self._bus._unsubscribe(self)
        self._close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventBus:
    """Fan-out of :class:`Event` to asyncio subscribers, publishable from any thread."""

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        self._lock = threading.Lock()
        self._history: deque[Event] = deque(maxlen=history)
        self._subs: set[Subscription] = set()
        self._next_id = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._closed = False
        #: events dropped across all subscribers because they read too slowly
        self.lagged_total = 0
        self._taps: list[Callable[[str, dict[str, Any]], None]] = []

    def tap(self, fn: Callable[[str, dict[str, Any]], None]) -> None:
        """Call ``fn(type, data)`` on the publishing thread for every event, before it is
        queued for subscribers: never dropped for lag (the hooks outbox records from here)."""
        self._taps.append(fn)

    def attach(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Bind to the loop subscribers live on; call from that loop's thread at start-up."""
        self._loop = loop or asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    @property
    def last_id(self) -> int:
        """The id of the newest event published so far (0 before the first)."""
        with self._lock:
            return self._next_id

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def publish(self, type: str, **data: Any) -> None:
        """Publish from any thread; never blocks on subscribers."""
        if not _TYPE_RE.match(type):
            raise ValueError(f"invalid event type {type!r}")
        for tap in self._taps:
            tap(type, data)
        stamp = time.time()
        loop = self._loop
        if loop is None or self._loop_thread == threading.get_ident():
            self._deliver(type, stamp, data)
            return
        try:
            loop.call_soon_threadsafe(self._deliver, type, stamp, data)
        except RuntimeError:
            # the loop is closed (shutdown): nobody can listen any more; keep it in history
            self._record(type, stamp, data)

    def _record(self, type: str, stamp: float, data: dict[str, Any]) -> Event:
        with self._lock:
            self._next_id += 1
            event = Event(self._next_id, type, stamp, data)
            self._history.append(event)
            return event

    def _deliver(self, type: str, stamp: float, data: dict[str, Any]) -> None:
        event = self._record(type, stamp, data)
        for sub in list(self._subs):
            sub._offer(event)

    def subscribe(
        self,
        types: Collection[str] | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        *,
        after_id: int | None = None,
    ) -> Subscription:
        """Subscribe now (no event after this call is missed); call on the loop thread.

        ``after_id`` replays remembered events newer than it (an SSE ``Last-Event-ID``);
        events already forgotten are reported as one ``lagged`` notice.
        """
        if self._loop is None:
            self.attach()
        sub = Subscription(self, types, max_queue)
        if self._closed:
            sub._close()
            return sub
        if after_id is not None:
            with self._lock:
                history = list(self._history)
            first = history[0].id if history else self._next_id + 1
            if first - after_id - 1 > 0:
                sub._note_dropped(first - 1, first - after_id - 1)
            for event in history:
                if event.id > after_id:
                    sub._offer(event)
        self._subs.add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def recent(self, limit: int | None = None, types: Collection[str] | None = None) -> list[Event]:
        """The last remembered events, oldest first."""
        with self._lock:
            events = list(self._history)
        if types is not None:
            wanted = frozenset(types)
            events = [e for e in events if e.type in wanted]
        return events if limit is None else events[-limit:] if limit > 0 else []

    def close(self) -> None:
        """End every subscription (their iterators stop); used at shutdown, on the loop thread."""
        self._closed = True
        for sub in list(self._subs):
            sub._close()
        self._subs.clear()
