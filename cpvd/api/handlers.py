"""The API's request handlers: each parses and validates its request, calls one method of
the intake, the queries or the operations, and returns JSON. No business logic here."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from aiohttp import StreamReader, web

from cpvctl.protocol import (
    API_PREFIX,
    API_VERSION,
    CPV_VERSION,
    MAX_BODY,
    ProtocolError,
    validate_job_id,
    validate_stage,
)
from cpvd.api.direct_pull import direct_url, pull_entry
from cpvd.api.events import EventBus, format_sse
from cpvd.api.history import history_answer
from cpvd.api.limits import REQUEST_TIMEOUT
from cpvd.api.metrics import CONTENT_TYPE, DaemonMetrics
from cpvd.api.operations import Operations
from cpvd.api.queries import Queries, Status
from cpvd.api.version_pages import parse_page
from cpvd.hooks.service import HookService
from cpvd.lifecycle.collector import Collector
from cpvd.pipeline.intake import Intake

SSE_KEEPALIVE = 15.0


@dataclass(frozen=True)
class Services:
    """What the handlers call, wired in the composition root (cpvd.daemon)."""

    intake: Intake
    queries: Queries
    status: Status
    operations: Operations
    bus: EventBus
    metrics: DaemonMetrics
    collector: Collector
    hooks: HookService | None = None


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


async def read_body(content: StreamReader, limit: int) -> bytes:
    """The whole body, or its first ``limit`` bytes. Why a loop: ``read(n)`` returns what has
    arrived so far, so a body sent in two segments was cut at the first one."""
    raw = b""
    while len(raw) < limit and (chunk := await content.read(limit - len(raw))):
        raw += chunk
    return raw


async def body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ProtocolError("body_too_large", f"request body over {MAX_BODY} bytes")
    try:
        raw = await asyncio.wait_for(read_body(request.content, MAX_BODY + 1), REQUEST_TIMEOUT)
    except TimeoutError:
        raise ProtocolError(
            "bad_request", f"request body not received within {REQUEST_TIMEOUT:.0f}s"
        ) from None
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
    """A query parameter, decoded losslessly: percent-escaped bytes that are not UTF-8 (a
    file name that is not text) come back as the surrogate escapes ``os.fsdecode`` gives."""
    raw = parse_qs(
        request.rel_url.raw_query_string,
        keep_blank_values=True,
        encoding="utf-8",
        errors="surrogateescape",
    )
    value = raw[name][-1] if name in raw else None
    if value is None and required:
        raise ProtocolError("bad_request", f"missing query parameter {name!r}")
    return value


async def version(request: web.Request) -> web.Response:
    return web.json_response({"api_version": API_VERSION, "cpv_version": CPV_VERSION})


async def status(request: web.Request) -> web.Response:
    report, hooks = services(request).status.report(), services(request).hooks
    if request.query.get("ignored") in ("1", "true"):
        report["ignored"] = await services(request).status.ignored_report()
    if hooks is not None:  # pending deliveries and failing hooks (cpvd.hooks)
        report["hooks"] = hooks.summary()
    return web.json_response(report)


async def artifacts(request: web.Request) -> web.Response:
    return web.json_response(await services(request).queries.artifacts())


async def versions(request: web.Request) -> web.Response:
    every = query(request, "all", required=False) in ("1", "true")  # pruned ones too
    keys = ("offset", "limit", "sort", "order", "fields")
    req = parse_page(*(query(request, k, False) for k in keys))
    if req is not None:
        artifact = query(request, "artifact") or ""
        rows, total = await services(request).queries.versions_page(artifact, req)
        return web.Response(
            body=rows, content_type="application/json", headers={"X-Cpv-Total": str(total)}
        )
    body = await services(request).queries.versions_json(query(request, "artifact") or "", every)
    return web.Response(body=body, content_type="application/json")


async def show(request: web.Request) -> web.Response:
    name = query(request, "artifact") or ""
    return web.json_response(
        await services(request).queries.show(name, query(request, "version", False))
    )


async def push(request: web.Request) -> web.Response:
    data = await body(request)
    metrics = field(data, "metrics", dict, required=False)
    if metrics is not None and len(json.dumps(metrics)) > 16384:
        raise ProtocolError("bad_request", "metrics too large (16 KiB max)")
    job = await services(request).intake.submit(
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
    return web.json_response(
        services(request).queries.job(validate_job_id(request.match_info["id"]))
    )


async def retry(request: web.Request) -> web.Response:
    return web.json_response(
        services(request).operations.retry(validate_job_id(request.match_info["id"]))
    )


async def revert(request: web.Request) -> web.Response:
    data = await body(request)
    return web.json_response(
        await services(request).operations.revert(
            field(data, "artifact", str),
            field(data, "version", str),
            bool(field(data, "with_data", bool, required=False)),
            field(data, "to", str, required=False),
            bool(field(data, "include_pruned", bool, required=False)),
        )
    )


async def promote(request: web.Request) -> web.Response:
    data = await body(request)
    return web.json_response(
        await services(request).operations.promote(
            field(data, "artifact", str),
            field(data, "version", str, required=False),  # absent: the current version
            validate_stage(field(data, "stage", str)),
            bool(field(data, "with_data", bool, required=False)),
        )
    )


async def pause(request: web.Request) -> web.Response:
    data = await body(request)
    return web.json_response(
        services(request).operations.pause(field(data, "artifact", str, required=False))
    )


async def resume(request: web.Request) -> web.Response:
    data = await body(request)
    return web.json_response(
        services(request).operations.resume(field(data, "artifact", str, required=False))
    )


async def verify(request: web.Request) -> web.Response:
    data = await body(request)
    return web.json_response(
        await services(request).operations.verify(
            field(data, "sample", int, required=False), field(data, "artifact", str, required=False)
        )
    )


async def gc(request: web.Request) -> web.Response:
    data = await body(request)
    dry_run = bool(field(data, "dry_run", bool, required=False))
    return web.json_response(await services(request).collector.run(dry_run))


async def pull_manifest(request: web.Request) -> web.Response:
    name = query(request, "artifact") or ""
    return web.json_response(
        await services(request).queries.manifest(
            name, query(request, "version", False), _include_pruned(request)
        )
    )


def _include_pruned(request: web.Request) -> bool:
    """``include_pruned=1``: restore a pruned version anyway (cpvd.registry.pruned)."""
    return query(request, "include_pruned", required=False) in ("1", "true")


async def pull_object(request: web.Request) -> web.StreamResponse:
    queries = services(request).queries
    entry = await _pull_entry(request)
    stream = await queries.open_object(entry["md5"])
    resp = web.StreamResponse(
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Length": str(entry["size"]),
            "X-Cpv-Md5": entry["md5"],
        }
    )
    await resp.prepare(request)
    try:
        while chunk := await queries.read(stream, 1 << 20):
            await resp.write(chunk)
    finally:
        await queries.close(stream)
    await resp.write_eof()
    return resp


async def pull_url(request: web.Request) -> web.Response:
    entry = await _pull_entry(request)
    owner = services(request).queries.of(query(request, "artifact") or "")  # its storage signs
    return web.json_response(await direct_url(owner, entry))


async def _pull_entry(request: web.Request) -> Any:
    name, relpath = query(request, "artifact") or "", query(request, "relpath") or ""
    version = query(request, "version", False)
    queries = services(request).queries
    return await pull_entry(queries, name, version, relpath, _include_pruned(request))


async def events(request: web.Request) -> web.StreamResponse:
    bus = services(request).bus
    types = request.query.get("types")
    wanted = set(types.split(",")) if types else None
    last = request.headers.get("Last-Event-ID")
    after = int(last) if last and last.isdigit() else None
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    async with bus.subscribe(wanted, after_id=after) as sub:
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


async def events_recent(request: web.Request) -> web.Response:
    return web.json_response(history_answer(services(request).bus, request.query))


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=services(request).metrics.render(),
        headers={"Content-Type": CONTENT_TYPE},
    )


def _hooks(request: web.Request) -> HookService:
    hooks = services(request).hooks
    if hooks is None:
        raise ProtocolError("not_found", "this daemon runs no hooks")
    return hooks


async def hooks_list(request: web.Request) -> web.Response:
    return web.json_response(_hooks(request).list())


async def hooks_test(request: web.Request) -> web.Response:
    data = await body(request)
    return web.json_response(await _hooks(request).test(field(data, "name", str)))


def add_routes(app: web.Application) -> None:
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
    app.router.add_post(f"{p}/gc", gc)
    app.router.add_get(f"{p}/hooks", hooks_list)
    app.router.add_post(f"{p}/hooks/test", hooks_test)
    app.router.add_get(f"{p}/pull/manifest", pull_manifest)
    app.router.add_get(f"{p}/pull/object", pull_object)
    app.router.add_get(f"{p}/pull/url", pull_url)
    app.router.add_get(f"{p}/events", events)
    app.router.add_get(f"{p}/events/recent", events_recent)
    app.router.add_get("/metrics", metrics)
