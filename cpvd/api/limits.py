"""Bounds on what API clients can hold: open connections, time to send a request, and the
daemon's file descriptors.

Why: 140 idle connections against an open-file limit of 128 made ``status`` time out, held
a checkpoint back with "Too many open files" and wrote megabytes of accept tracebacks. Now
the daemon raises its soft descriptor limit to the hard one at start and keeps API
connections to a quarter of it (at most :data:`MAX_CONNECTIONS`), so the rest stays for its
own work (the state database, snapshots, git, uploads). At the cap a new connection closes
the oldest one that is not serving a request (idle, or still sending its headers), so a
flood of idle connections cannot lock out ``status``; when every connection is serving a
request, the new one is closed. A connection that sends no complete request within
:data:`REQUEST_TIMEOUT` is closed (aiohttp's keep-alive timer covers the time before the
first request, too), and a request body must arrive within it. A flood is logged once per
:data:`FLOOD_LOG_EVERY`, with counts, not once per connection.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
#: seconds a client has to send a whole request (headers, then body)
REQUEST_TIMEOUT = 10.0
FLOOD_LOG_EVERY = 60.0
#: connections accepted in one go, before any of them is admitted (descriptors in flight)
ACCEPT_BURST = 8
#: connections the kernel queues until they are accepted (they hold none of our descriptors).
#: Large: a full queue refuses a client's non-blocking connect at once (EAGAIN), and a
#: burst of idle connections must not do that to ``cpvctl status`` (the kernel caps it at
#: net.core.somaxconn)
LISTEN_BACKLOG = 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_cap(open_file_limit: int) -> int:
    """API connections allowed: a quarter of the descriptors, at most MAX_CONNECTIONS."""
    return max(4, min(MAX_CONNECTIONS, open_file_limit // 4))


class Connections:
    """The API's open connections, oldest first, and which of them serve a request now."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: dict[object, asyncio.BaseTransport] = {}
        self.busy: set[object] = set()
        self.evicted = self.refused = 0
        self._logged_at: float | None = None

    def admit(self, handler: object, transport: asyncio.BaseTransport) -> None:
        """A new connection: make room for it (closing the oldest idle one) or close it."""
        if len(self.open) >= self.cap:
            idle = next((h for h in self.open if h not in self.busy), None)
            if idle is None:
                self.refused += 1
                self._note_flood()
                transport.close()
                return
            self.evicted += 1
            self.open.pop(idle).close()
            self._note_flood()
        self.open[handler] = transport

    def forget(self, handler: object) -> None:
        self.open.pop(handler, None)
        self.busy.discard(handler)

    def _note_flood(self) -> None:
        now = time.monotonic()
        if self._logged_at is not None and now - self._logged_at < FLOOD_LOG_EVERY:
            return
        self._logged_at = now
        log.warning(
            "API connection limit (%d) reached: %d idle connections closed to make room and "
            "%d new ones refused so far (a client opening connections without using them?); "
            "logged at most once a minute",
            self.cap,
            self.evicted,
            self.refused,
        )

    def watch(self, server: Any) -> None:
        """Track the connections of aiohttp's low-level ``web.Server`` (``runner.server``):
        its ``connection_made``/``connection_lost`` are what every connection calls."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: object, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self.admit(handler, transport)

        def connection_lost(handler: object, exc: BaseException | None = None) -> None:
            self.forget(handler)
            lost(handler, exc)

        server.connection_made = connection_made
        server.connection_lost = connection_lost


CONNECTIONS: web.AppKey[Connections] = web.AppKey("connections", Connections)


@web.middleware
async def mark_busy(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A connection serving a request is never closed to make room for another."""
    busy = request.app[CONNECTIONS].busy
    busy.add(request.protocol)
    try:
        return await handler(request)
    finally:
        busy.discard(request.protocol)
