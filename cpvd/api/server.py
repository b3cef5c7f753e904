"""The HTTP API over the daemon's Unix socket (aiohttp).

Handlers parse and validate, call one Controller method, and return JSON: no business logic
here. The socket is bound by us under a umask so it is never briefly open to others, and
every connection's peer uid (SO_PEERCRED) is checked before a request is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import pwd
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from cpvctl.protocol import (
    API_PREFIX,
    API_VERSION,
    CPV_VERSION,
    ERROR_STATUS,
    MAX_BODY,
    ProtocolError,
    error_body,
    validate_job_id,
    validate_stage,
)
from cpvd.api.events import format_sse
from cpvd.errors import CpvError
from cpvd.pipeline.controller import Controller

log = logging.getLogger(__name__)

CTL: web.AppKey[Controller] = web.AppKey("controller", Controller)


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


async def body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ProtocolError("body_too_large", f"request body over {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ProtocolError("body_too_large", f"request body over {MAX_BODY} bytes")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("invalid_json", f"request body is not JSON: {exc}") from exc
    except RecursionError:  # "[[[[..." nested deeper than the parser's stack
        raise ProtocolError("invalid_json", "request body nests too deeply") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_json", "request body must be a JSON object")
    return data


def field(
    data: dict[str, Any], name: str, kind: type | tuple[type, ...], required: bool = True
) -> Any:
    value = data.get(name)
    if value is None:
        if required:
            raise ProtocolError("bad_request", f"missing field {name!r}")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError("bad_request", f"field {name!r} has the wrong type")
    return value


def query(request: web.Request, name: str, required: bool = True) -> str | None:
    value = request.query.get(name)
    if value is None and required:
        raise ProtocolError("bad_request", f"missing query parameter {name!r}")
    return value


def ctl(request: web.Request) -> Controller:
    return request.app[CTL]


async def version(request: web.Request) -> web.Response:
    return web.json_response({"api_version": API_VERSION, "cpv_version": CPV_VERSION})


async def status(request: web.Request) -> web.Response:
    return web.json_response(await ctl(request).status())


async def artifacts(request: web.Request) -> web.Response:
    return web.json_response(await ctl(request).artifacts())


async def versions(request: web.Request) -> web.Response:
    body = await ctl(request).versions_json(query(request, "artifact") or "")
    return web.Response(body=body, content_type="application/json")


async def show(request: web.Request) -> web.Response:
    name = query(request, "artifact") or ""
    return web.json_response(await ctl(request).show(name, query(request, "version", False)))


async def push(request: web.Request) -> web.Response:
    data = await body(request)
    metrics = field(data, "metrics", dict, required=False)
    if metrics is not None and len(json.dumps(metrics)) > 16384:
        raise ProtocolError("bad_request", "metrics too large (16 KiB max)")
    job = await ctl(request).submit(
        field(data, "path", str),
        field(data, "artifact", str),
        metrics,
        field(data, "bump", str, required=False) or "minor",
    )
    if job is None:
        raise ProtocolError("not_found", "the checkpoint vanished before it could be snapshotted")
    return web.json_response(
        {"job_id": job.id, "state": job.state, "job": job.to_dict()}, status=202
    )


async def job(request: web.Request) -> web.Response:
    return web.json_response(ctl(request).job(validate_job_id(request.match_info["id"])))


async def retry(request: web.Request) -> web.Response:
    return web.json_response(ctl(request).retry(validate_job_id(request.match_info["id"])))


async def revert(request: web.Request) -> web.Response:
    data = await body(request)
    return web.json_response(
        await ctl(request).revert(
            field(data, "artifact", str),
            field(data, "version", str),
            bool(field(data, "with_data", bool, required=False)),
            field(data, "to", str, required=False),
        )
    )


async def promote(request: web.Request) -> web.Response:
    data = await body(request)
    return web.json_response(
        await ctl(request).promote(
            field(data, "artifact", str),
            field(data, "version", str),
            validate_stage(field(data, "stage", str)),
            bool(field(data, "with_data", bool, required=False)),
        )
    )


async def pause(request: web.Request) -> web.Response:
    data = await body(request)
    return web.json_response(ctl(request).pause(field(data, "artifact", str, required=False)))


async def resume(request: web.Request) -> web.Response:
    data = await body(request)
    return web.json_response(ctl(request).resume(field(data, "artifact", str, required=False)))


async def verify(request: web.Request) -> web.Response:
    data = await body(request)
    return web.json_response(
        await ctl(request).verify(
            field(data, "sample", int, required=False), field(data, "artifact", str, required=False)
        )
    )


async def pull_manifest(request: web.Request) -> web.Response:
    name = query(request, "artifact") or ""
    return web.json_response(await ctl(request).manifest(name, query(request, "version", False)))


async def pull_object(request: web.Request) -> web.StreamResponse:
    c = ctl(request)
    name = query(request, "artifact") or ""
    relpath = query(request, "relpath") or ""
    manifest = await c.manifest(name, query(request, "version", False))
    entry = next((f for f in manifest["files"] if f["relpath"] == relpath), None)
    if entry is None:
        raise ProtocolError("not_found", f"{name}@{manifest['version']} has no file {relpath!r}")
    stream = await c.on_io(c.engine.storage.open_object, entry["md5"])
    resp = web.StreamResponse(
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Length": str(entry["size"]),
            "X-Cpv-Md5": entry["md5"],
        }
    )
    await resp.prepare(request)
    try:
        while chunk := await c.on_io(stream.read, 1 << 20):
            await resp.write(chunk)
    finally:
        await c.on_io(stream.close)
    await resp.write_eof()
    return resp


async def events(request: web.Request) -> web.StreamResponse:
    c = ctl(request)
    types = request.query.get("types")
    wanted = set(types.split(",")) if types else None
    last = request.headers.get("Last-Event-ID")
    after = int(last) if last and last.isdigit() else None
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    async with c.bus.subscribe(wanted, after_id=after) as sub:
        try:
            while True:
                event = await sub.get(timeout=SSE_KEEPALIVE)
                if event is None:
                    if sub.closed:
                        break
                    await resp.write(b": keep-alive\n\n")
                    continue
                await resp.write(format_sse(event))
        except ConnectionResetError:
            pass  # the client went away: end quietly
    return resp


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        text=ctl(request).metrics.render(),
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Prometheus-Format": "0.0.4"},
    )


def build_app(controller: Controller) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[CTL] = controller
    d = controller.config.daemon
    app[ALLOWED] = Peers(d.allow_uids, d.allow_group)
    p = API_PREFIX
    app.router.add_get(f"{p}/version", version)
    app.router.add_get(f"{p}/status", status)
    app.router.add_get(f"{p}/artifacts", artifacts)
    app.router.add_get(f"{p}/versions", versions)
    app.router.add_get(f"{p}/show", show)
    app.router.add_post(f"{p}/push", push)
    app.router.add_get(f"{p}/jobs/{{id}}", job)
    app.router.add_post(f"{p}/jobs/{{id}}/retry", retry)
    app.router.add_post(f"{p}/revert", revert)
    app.router.add_post(f"{p}/promote", promote)
    app.router.add_post(f"{p}/pause", pause)
    app.router.add_post(f"{p}/resume", resume)
    app.router.add_post(f"{p}/verify", verify)
    app.router.add_get(f"{p}/pull/manifest", pull_manifest)
    app.router.add_get(f"{p}/pull/object", pull_object)
    app.router.add_get(f"{p}/events", events)
    app.router.add_get("/metrics", metrics)
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
    sock.listen(128)
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
    def __init__(self, controller: Controller, socket_path: Path) -> None:
        self.app = build_app(controller)
        self.path = socket_path
        self.runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, shutdown_timeout=2.0
        )

    async def start(self) -> None:
        await self.runner.setup()
        sock = bind_socket(self.path, self.app[CTL].config.daemon.allow_group)
        site = web.SockSite(self.runner, sock)
        await site.start()

    def reconfigure(self, allow_uids: tuple[int, ...], allow_group: str | None) -> None:
        """SIGHUP: answer the uids the reloaded config allows, and give the socket the
        matching group and mode (tightened first when access is taken away)."""
        self.app[ALLOWED].set(allow_uids, allow_group)
        mode, gid = _socket_access(allow_group)
        try:
            os.chmod(self.path, 0o600)
            os.chown(self.path, -1, os.getgid() if gid is None else gid)
            os.chmod(self.path, mode)
        except OSError as exc:
            log.error("SIGHUP: cannot set the socket's group and mode: %s", exc)

    async def stop(self) -> None:
        self.app[CTL].bus.close()
        await self.runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
