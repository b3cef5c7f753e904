"""The HTTP API over the daemon's Unix socket (aiohttp).

The handlers live in :mod:`cpvd.api.handlers`; this module owns the socket and the guard in
front of every handler. The socket is bound by us under a umask so it is never briefly open
to others, and every connection's peer uid (SO_PEERCRED) is checked before a request is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from cpvctl.protocol import ERROR_STATUS, MAX_BODY, ProtocolError, error_body
from cpvd.api.handlers import SERVICES, Services, add_routes
from cpvd.api.limits import (
    ACCEPT_BURST,
    CONNECTIONS,
    LISTEN_BACKLOG,
    REQUEST_TIMEOUT,
    Connections,
    mark_busy,
)
from cpvd.config.model import DaemonConfig
from cpvd.errors import CpvError

log = logging.getLogger(__name__)


class Peers:
    """The uids the API answers: computed at start and again on every SIGHUP (a changed
    ``allow_uids``, ``allow_group``, or a user added to that group), never per request."""

    def __init__(self, allow_uids: tuple[int, ...], allow_group: str | None) -> None:
        self.set(allow_uids, allow_group)

    def set(self, allow_uids: tuple[int, ...], allow_group: str | None) -> None:
        self.uids = allowed_uids(allow_uids, allow_group)


ALLOWED: web.AppKey[Peers] = web.AppKey("allowed_peers", Peers)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SSE_KEEPALIVE = 15.0


def error_response(code: str, message: str) -> web.Response:
    return web.json_response(error_body(code, message), status=ERROR_STATUS.get(code, 400))


def peer_uid(request: web.Request) -> int | None:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None:
        return None
    if sys.platform.startswith("linux"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return int(uid)
    try:  # macOS/BSD
        return int(os.getpeereid(sock.fileno())[0])
    except (AttributeError, OSError):
        return None


def allowed_uids(allow_uids: tuple[int, ...], allow_group: str | None) -> frozenset[int]:
    uids = {os.getuid(), 0, *allow_uids}
    if allow_group:
        try:
            group = grp.getgrnam(allow_group)
        except KeyError:
            log.warning("allow_group %r does not exist; ignoring it", allow_group)
        else:
            for member in group.gr_mem:
                with contextlib.suppress(KeyError):
                    uids.add(pwd.getpwnam(member).pw_uid)
            uids.update(p.pw_uid for p in pwd.getpwall() if p.pw_gid == group.gr_gid)
    return frozenset(uids)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    uid = peer_uid(request)
    if uid is None or uid not in request.app[ALLOWED].uids:
        log.warning("refused API request from uid %s", uid)
        return error_response(
            "forbidden", f"uid {uid} may not use this daemon (see allow_uids / allow_group)"
        )
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return error_response("body_too_large", f"request body over {MAX_BODY} bytes")
    except web.HTTPMethodNotAllowed as exc:
        return error_response(
            "method_not_allowed",
            f"{request.method} not allowed; use {', '.join(sorted(exc.allowed_methods))}",
        )
    except web.HTTPNotFound:
        return error_response("not_found", f"no route {request.method} {request.path}")
    except ProtocolError as exc:
        return error_response(exc.code, exc.message)
    except CpvError as exc:
        return error_response(exc.code if exc.code in ERROR_STATUS else "bad_request", exc.message)
    except web.HTTPException:
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as exc:  # a bug: answer 500 with the type, log the traceback, keep serving
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response("internal", f"internal error: {type(exc).__name__}")


def build_app(
    services: Services,
    allow_uids: tuple[int, ...],
    allow_group: str | None,
    connections: Connections,
) -> web.Application:
    app = web.Application(middlewares=[mark_busy, guard], client_max_size=MAX_BODY)
    app[SERVICES] = services
    app[ALLOWED] = Peers(allow_uids, allow_group)
    app[CONNECTIONS] = connections
    add_routes(app)
    return app


def bind_socket(path: Path, group: str | None = None) -> socket.socket:
    """Bind the API socket under a umask so it is never briefly open to others; never TCP.

    Mode 0600; with ``allow_group`` 0660 and owned by that group, because connecting to a
    Unix socket needs write permission on it (the peer uid is still checked per request).
    """
    mode, gid = _socket_access(group)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
        if gid is not None:
            os.chown(path, -1, gid)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    os.chmod(path, mode)
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


def _socket_access(group: str | None) -> tuple[int, int | None]:
    """The socket's mode and group: 0600, or 0660 owned by ``allow_group`` when it exists."""
    if group:
        try:
            return 0o660, grp.getgrnam(group).gr_gid
        except KeyError:
            log.warning("allow_group %r does not exist; the socket stays 0600", group)
    return 0o600, None


class ApiServer:
    """The API on its Unix socket: started after the pipeline, stopped before it."""

    def __init__(self, services: Services, daemon: DaemonConfig, max_connections: int) -> None:
        self.connections = Connections(max_connections)
        self.app = build_app(services, daemon.allow_uids, daemon.allow_group, self.connections)
        self.services = services
        self.path = daemon.socket
        self.group = daemon.allow_group
        self.runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=2.0,
            keepalive_timeout=REQUEST_TIMEOUT,  # also bounds the wait for a first request
        )

    async def start(self) -> None:
        await self.runner.setup()
        assert self.runner.server is not None
        self.connections.watch(self.runner.server)
        sock = bind_socket(self.path, self.group)
        # asyncio accepts up to ``backlog`` connections per wake-up before any of them is
        # admitted (or another closed to make room): a small one bounds that burst of
        # descriptors. It also listen()s with it; a second listen() gives clients the usual
        # kernel queue back (a full one refuses a non-blocking connect at once).
        site = web.SockSite(self.runner, sock, backlog=ACCEPT_BURST)
        await site.start()
        sock.listen(LISTEN_BACKLOG)

    def reconfigure(self, allow_uids: tuple[int, ...], allow_group: str | None) -> None:
        """SIGHUP: answer the uids the reloaded config allows, and give the socket the
        matching group and mode (tightened first when access is taken away)."""
        self.app[ALLOWED].set(allow_uids, allow_group)
        self.group = allow_group
        mode, gid = _socket_access(allow_group)
        try:
            os.chmod(self.path, 0o600)
            os.chown(self.path, -1, os.getgid() if gid is None else gid)
            os.chmod(self.path, mode)
        except OSError as exc:
            log.error("SIGHUP: cannot set the socket's group and mode: %s", exc)

    async def stop(self) -> None:
        self.services.bus.close()
        await self.runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
