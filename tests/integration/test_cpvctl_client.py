"""cpvctl against a real Unix socket: a small fake daemon (aiohttp, canned answers) per test.

The fake implements the routes of the API table in ``cpvctl/protocol.py`` just far enough to
exercise the client's transport, error mapping, API handshake, event following, and pull's
all-or-nothing writes; ``python -m cpvctl`` also runs as a real subprocess against it, and
against no daemon at all (missing socket, stale socket) for exit code 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cpvctl import cli
from cpvctl.client import Client
from cpvctl.errors import (
    ApiMismatch,
    Conflict,
    DaemonUnreachable,
    IntegrityError,
    JobFailed,
    NotFound,
    UsageError,
    WaitTimeout,
)
from cpvctl.protocol import API_VERSION, error_body

ART = "vision/resnet50"
FILE_BYTES = os.urandom(300_000)
DIR_FILES = {
    "config.json": b'{"layers": 50}',
    "model/weights.bin": os.urandom(200_000),
    ".metadata": b"dcp",
}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class FakeDaemon:
    """Canned answers on a Unix socket, served from a background thread's event loop.

    Knobs: ``api_version`` (0 = no /v1/version route, like a pre-API daemon), ``corrupt``
    (flip one byte of the nth object served), ``events_enabled``, ``job_outcome``,
    ``slow_status``. ``requests`` records (method, path, query, json body).
    """

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.api_version = API_VERSION
        self.corrupt_object: int | None = None
        self.events_enabled = True
        self.job_outcome = "versioned"
        self.job_delay = 0.2
        self.slow_status = False
        self.manifest_override: dict[str, Any] | None = None
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.objects_served = 0
        self._subscribers: list[asyncio.Queue[tuple[str, dict[str, Any]] | None]] = []
        self._event_id = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-cpvd")
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        app = web.Application()
        app.middlewares.append(self._record)
        r = app.router
        r.add_get("/v1/version", self.version)
        r.add_get("/v1/status", self.status)
        r.add_get("/v1/artifacts", self.artifacts)
        r.add_get("/v1/versions", self.versions)
        r.add_get("/v1/show", self.show)
        r.add_post("/v1/push", self.push)
        r.add_get("/v1/jobs/{job_id}", self.job)
        r.add_post("/v1/jobs/{job_id}/retry", self.retry)
        r.add_get("/v1/pull/manifest", self.manifest)
        r.add_get("/v1/pull/object", self.object)
        r.add_post("/v1/revert", self.echo("reverted"))
        r.add_post("/v1/promote", self.echo("promoted"))
        r.add_post("/v1/pause", self.pause)
        r.add_post("/v1/resume", self.pause)
        r.add_post("/v1/verify", self.verify)
        r.add_get("/v1/events", self.events)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.socket_path)).start()

    def stop(self) -> None:
        async def _stop() -> None:
            for q in self._subscribers:
                q.put_nowait(None)
            for t in list(self._tasks):
                t.cancel()
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # --- helpers ----------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = None
        if request.can_read_body:
            body = await request.json()
        self.requests.append((request.method, request.path, dict(request.query), body))
        return await handler(request)

    def paths(self, method: str = "") -> list[str]:
        return [p for m, p, _, _ in self.requests if not method or m == method]

    def emit(self, event: str, data: dict[str, Any]) -> None:
        for q in self._subscribers:
            q.put_nowait((event, data))

    @staticmethod
    def error(status: int, code: str, message: str) -> web.Response:
        return web.json_response(error_body(code, message), status=status)

    # --- routes -----------------------------------------------------------------------

    async def version(self, request: web.Request) -> web.Response:
        if self.api_version == 0:
            raise web.HTTPNotFound()
        return web.json_response({"api_version": self.api_version, "cpv_version": "9.9.9"})

    async def status(self, request: web.Request) -> web.Response:
        if self.slow_status:
            await asyncio.sleep(5)
        return web.json_response({
            "daemon": {"pid": 1234, "cpv_version": "9.9.9", "api_version": API_VERSION},
            "queue": {"queued": 0, "running": 1, "failed": 0},
            "jobs": [], "watches": [{"path": "/data/runs", "artifact": ART, "kind": "model",
                                     "paused": False}],
            "storage": {"url": "/var/lib/cpv/storage", "reachable": True},
            "registry": {"path": "/var/lib/cpv/registry", "unpushed": 0},
            "waiting": [{"path": "/data/runs/torn.pt", "reason": "torn zip"}],
        })

    async def artifacts(self, request: web.Request) -> web.Response:
        return web.json_response([{"name": ART, "kind": "model", "latest": "v1.1.0", "count": 2}])

    async def versions(self, request: web.Request) -> web.Response:
        if request.query.get("artifact") != ART:
            name = request.query.get("artifact")
            return self.error(404, "unknown_artifact", f"no artifact {name}")
        return web.json_response([
            {"artifact": ART, "version": "v1.1.0", "tag": f"{ART}@v1.1.0", "md5": md5(b"b"),
             "size": 2048, "created_at": "2025-01-02T03:04:05+00:00", "metrics": {"acc": 0.9},
             "stages": ["prod"]},
            {"artifact": ART, "version": "v1.0.0", "tag": f"{ART}@v1.0.0", "md5": md5(b"a"),
             "size": 1024, "created_at": "2025-01-01T03:04:05+00:00", "metrics": {},
             "stages": []},
        ])

    async def show(self, request: web.Request) -> web.Response:
        return web.json_response({"artifact": request.query["artifact"],
                                  "version": request.query["version"], "lineage": {}})

    async def push(self, request: web.Request) -> web.Response:
        body = await request.json()
        job_id = os.urandom(8).hex()
        # shaped like cpvd's job records: "id" and "source"
        job = {"id": job_id, "state": "queued", "artifact": body["artifact"],
               "source": body["path"], "version": None, "error": None}
        self.jobs[job_id] = job
        task = asyncio.get_running_loop().create_task(self._run_job(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response({"job_id": job_id, "state": "queued", "job": job}, status=202)

    async def _run_job(self, job: dict[str, Any]) -> None:
        jid = job["id"]
        await asyncio.sleep(self.job_delay)
        job["state"] = "running"
        if self.job_outcome == "retry":  # a retryable failure: back to queued, then done
            job.update(state="queued", error="remote unreachable")
            self.emit("failed", {"job_id": jid, "error": "remote unreachable",
                                 "will_retry": True})
            await asyncio.sleep(0.1)
            job.update(state="running", error=None)
        for done in (0, 500, 1000):
            self.emit("progress", {"job_id": jid, "bytes": done, "total": 1000})
            await asyncio.sleep(0.01)
        self.emit("progress", {"job_id": "someone-else", "bytes": 1, "total": 2})
        if self.job_outcome == "hang":
            return
        if self.job_outcome == "failed":
            job.update(state="failed", error="storage unreachable")
            self.emit("failed", {"job_id": jid, "error": "storage unreachable"})
        else:
            job.update(state="done", version="v1.2.0")
            self.emit("versioned", {"job_id": jid, "artifact": job["artifact"],
                                    "version": "v1.2.0"})

    async def job(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["job_id"])
        if job is None:
            return self.error(404, "unknown_job", "no such job")
        return web.json_response(job)

    async def retry(self, request: web.Request) -> web.Response:
        return self.error(409, "conflict", "job is not failed")

    def _version_files(self, version: str) -> tuple[str, str, dict[str, bytes]]:
        if version == "v1.0.0":
            return "file", "epoch-3.pt", {"epoch-3.pt": FILE_BYTES}
        return "dir", "checkpoint-500", DIR_FILES

    async def manifest(self, request: web.Request) -> web.Response:
        if self.manifest_override is not None:
            return web.json_response(self.manifest_override)
        version = request.query.get("version", "v1.1.0")  # omitted: the current one
        kind, name, files = self._version_files(version)
        return web.json_response({
            "artifact": request.query["artifact"], "version": version, "kind": kind,
            "name": name, "md5": "x", "size": sum(len(b) for b in files.values()),
            "files": [{"relpath": rp, "md5": md5(b), "size": len(b)} for rp, b in files.items()],
        })

    async def object(self, request: web.Request) -> web.StreamResponse:
        _, _, files = self._version_files(request.query["version"])
        data = files.get(request.query["relpath"])
        if data is None:
            return self.error(404, "not_found", "no such file")
        self.objects_served += 1
        if self.corrupt_object == self.objects_served:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = len(data)
        await resp.prepare(request)
        for i in range(0, len(data), 65536):
            await resp.write(data[i : i + 65536])
        await resp.write_eof()
        return resp

    def echo(self, key: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            body = await request.json()
            return web.json_response({key: [dict(body, path="/data/runs/x.pt",
                                                  tag=f"{body['artifact']}#prod#1")]})

        return handler

    async def pause(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"paused": [body["artifact"]] if body else "all"})

    async def verify(self, request: web.Request) -> web.Response:
        return web.json_response({"checked": 2, "missing": [], "corrupt": [
            {"artifact": ART, "version": "v1.0.0", "relpath": "epoch-3.pt"}]})

    async def events(self, request: web.Request) -> web.StreamResponse:
        if not self.events_enabled:
            raise web.HTTPNotFound()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        q: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self._subscribers.append(q)
        try:
            await resp.write(b": connected\n\n")
            while (item := await q.get()) is not None:
                event, data = item  # framed like cpvd's bus: id line + envelope
                self._event_id += 1
                envelope = {"id": self._event_id, "type": event, "time": time.time(),
                            "data": data}
                await resp.write(
                    f"id: {self._event_id}\nevent: {event}\ndata: {json.dumps(envelope)}\n\n"
                    .encode()
                )
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._subscribers.remove(q)
        return resp


@pytest.fixture
def daemon(short_tmp: Path) -> Iterator[FakeDaemon]:
    fake = FakeDaemon(short_tmp / "cpvd.sock")
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def client(daemon: FakeDaemon) -> Client:
    return Client(str(daemon.socket_path), timeout=10)


def cpvctl(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cpvctl", *argv],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )


# --- transport, handshake, errors ------------------------------------------------------


def test_reads_and_api_check_once(client: Client, daemon: FakeDaemon) -> None:
    assert client.version() == {"api_version": API_VERSION, "cpv_version": "9.9.9"}
    assert client.status()["daemon"]["pid"] == 1234
    assert [v["version"] for v in client.versions(ART)] == ["v1.1.0", "v1.0.0"]
    assert client.show(ART, "v1.1")["version"] == "v1.1.0"
    assert client.artifacts()[0]["name"] == ART
    assert daemon.paths().count("/v1/version") == 2  # the explicit call + one check


def test_daemon_errors_become_typed_exceptions(client: Client) -> None:
    with pytest.raises(NotFound) as e:
        client.versions("nope/none")
    assert (e.value.code, e.value.status) == ("unknown_artifact", 404)
    assert e.value.message == "no artifact nope/none"
    with pytest.raises(UsageError):
        client.versions("bad name")


def test_api_mismatch_daemon_newer(client: Client, daemon: FakeDaemon) -> None:
    daemon.api_version = API_VERSION + 1
    with pytest.raises(ApiMismatch, match="client is older, upgrade cpvctl"):
        client.status()
    assert daemon.paths() == ["/v1/version"]  # nothing else was sent


def test_api_mismatch_daemon_older(client: Client, daemon: FakeDaemon,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    daemon.api_version = 0
    with pytest.raises(ApiMismatch, match=r"daemon is older \(API 0\), upgrade cpvd"):
        client.status()
    assert cli.main(["--socket", str(daemon.socket_path), "versions", ART]) == 1
    assert "daemon is older (API 0), upgrade cpvd" in capsys.readouterr().err


def test_request_timeout(client: Client, daemon: FakeDaemon) -> None:
    daemon.slow_status = True
    slow = Client(client.socket_path, timeout=0.3)
    with pytest.raises(DaemonUnreachable, match="did not answer"):
        slow.status()


def test_posts_send_the_contract_bodies(client: Client, daemon: FakeDaemon,
                                        short_tmp: Path) -> None:
    assert client.revert(ART, "v1.0", with_data=True, to=short_tmp)["reverted"]
    assert client.promote(ART, "v1.1", "prod")["promoted"][0]["tag"] == f"{ART}#prod#1"
    assert client.pause() == {"paused": "all"}
    assert client.resume(ART) == {"paused": [ART]}
    assert client.verify(sample=3)["checked"] == 2
    with pytest.raises(Conflict):
        client.retry("0123456789abcdef")
    bodies = [(p, b) for m, p, _, b in daemon.requests if m == "POST"]
    assert bodies == [
        ("/v1/revert", {"artifact": ART, "version": "v1.0.0", "with_data": True,
                        "to": str(short_tmp)}),
        ("/v1/promote", {"artifact": ART, "version": "v1.1.0", "stage": "prod",
                         "with_data": False}),
        ("/v1/pause", {}),
        ("/v1/resume", {"artifact": ART}),
        ("/v1/verify", {"sample": 3}),
        ("/v1/jobs/0123456789abcdef/retry", None),
    ]


# --- push, wait, events ------------------------------------------------------------------


def test_submit_waits_through_events(client: Client, daemon: FakeDaemon, short_tmp: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (short_tmp / "c.pt").write_bytes(b"x")
    monkeypatch.chdir(short_tmp)
    seen: list[tuple[str, dict[str, Any]]] = []
    job = client.submit("c.pt", ART, metrics={"acc": 0.5}, timeout=10,
                        on_event=lambda e, d: seen.append((e, d)))
    assert job["state"] == "done" and job["version"] == "v1.2.0"
    assert [e for e, _ in seen] == ["progress", "progress", "progress", "versioned"]
    assert seen[-2][1]["bytes"] == 1000
    push = [b for m, p, _, b in daemon.requests if p == "/v1/push"]
    assert push == [{"path": str(short_tmp / "c.pt"), "artifact": ART, "bump": "minor",
                     "metrics": {"acc": 0.5}}]


def test_wait_survives_a_retryable_failure(client: Client, daemon: FakeDaemon,
                                           short_tmp: Path) -> None:
    daemon.job_outcome = "retry"
    seen: list[str] = []
    job = client.submit(short_tmp, ART, timeout=10, on_event=lambda e, d: seen.append(e))
    assert job["state"] == "done" and job["version"] == "v1.2.0"
    assert seen[0] == "failed" and seen[-1] == "versioned"


def test_wait_on_a_finished_job_returns_at_once(client: Client, daemon: FakeDaemon,
                                                short_tmp: Path) -> None:
    daemon.job_delay = 0
    job = client.push(short_tmp, ART)
    time.sleep(0.3)
    assert client.wait(job["job_id"], timeout=5)["state"] == "done"


def test_wait_polls_without_an_event_stream(client: Client, daemon: FakeDaemon,
                                            short_tmp: Path) -> None:
    daemon.events_enabled = False
    job = client.push(short_tmp, ART)
    assert client.wait(job["job_id"], timeout=10)["version"] == "v1.2.0"
    assert daemon.paths().count(f"/v1/jobs/{job['job_id']}") >= 2


def test_submit_failed_job_raises(client: Client, daemon: FakeDaemon, short_tmp: Path) -> None:
    daemon.job_outcome = "failed"
    with pytest.raises(JobFailed, match="storage unreachable") as e:
        client.submit(short_tmp, ART, timeout=10)
    assert e.value.job["state"] == "failed"


def test_wait_timeout(client: Client, daemon: FakeDaemon, short_tmp: Path) -> None:
    daemon.job_outcome = "hang"
    job = client.push(short_tmp, ART)
    with pytest.raises(WaitTimeout):
        client.wait(job["job_id"], timeout=0.6)


def test_cli_push_wait(daemon: FakeDaemon, short_tmp: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    (short_tmp / "c.pt").write_bytes(b"x")
    code = cli.main(["--socket", str(daemon.socket_path), "push", str(short_tmp / "c.pt"),
                     "--artifact", ART, "--metric", "acc=0.9", "--wait"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith(f"{ART}@v1.2.0")
    assert "100%" in err  # progress from the event stream, plain lines off a TTY


def test_events_generator(client: Client, daemon: FakeDaemon, short_tmp: Path) -> None:
    stream = client.events(read_timeout=10)
    client.push(short_tmp, ART)
    names = []
    for event, data in stream:
        names.append(event)
        if event == "versioned":
            assert data["version"] == "v1.2.0"
            break
    stream.close()
    assert names[0] == "progress" and names[-1] == "versioned"


# --- pull ---------------------------------------------------------------------------------


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_pull_file_version(client: Client, daemon: FakeDaemon, short_tmp: Path) -> None:
    out = short_tmp / "out"
    calls: list[tuple[int, int | None]] = []
    path = client.pull(ART, "v1.0", out, progress=lambda d, t: calls.append((d, t)))
    assert path == out / "epoch-3.pt" and path.read_bytes() == FILE_BYTES
    assert sorted(os.listdir(out)) == ["epoch-3.pt"]
    assert calls[-1] == (len(FILE_BYTES), len(FILE_BYTES))
    again = client.pull_detailed(ART, "v1.0.0", out)
    assert again.already_present and daemon.objects_served == 1


def test_pull_dir_version_current(client: Client, daemon: FakeDaemon, short_tmp: Path) -> None:
    result = client.pull_detailed(ART, None, short_tmp)
    assert result.version == "v1.1.0" and result.kind == "dir"
    manifest_query = next(q for _, p, q, _ in daemon.requests if p == "/v1/pull/manifest")
    assert manifest_query == {"artifact": ART}  # the daemon resolves the current version
    root = short_tmp / "checkpoint-500"
    assert result.path == root
    got = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert got == DIR_FILES
    assert leftovers(short_tmp) == []


@pytest.mark.parametrize(("version", "nth"), [("v1.0.0", 1), ("v1.1.0", 2)])
def test_pull_corrupt_byte_leaves_nothing(daemon: FakeDaemon, short_tmp: Path, version: str,
                                          nth: int, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.corrupt_object = nth
    out = short_tmp / "out"
    out.mkdir()
    code = cli.main(["--socket", str(daemon.socket_path), "pull", f"{ART}@{version}",
                     "-o", str(out)])
    assert code == 1
    assert "does not match" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # no target, no temporary


def test_pull_corrupt_into_missing_dir_removes_it(client: Client, daemon: FakeDaemon,
                                                  short_tmp: Path) -> None:
    daemon.corrupt_object = 1
    with pytest.raises(IntegrityError):
        client.pull(ART, "v1.0.0", short_tmp / "a" / "b")
    assert not (short_tmp / "a").exists()


def test_pull_refuses_to_overwrite_a_different_target(client: Client, daemon: FakeDaemon,
                                                      short_tmp: Path) -> None:
    target = short_tmp / "epoch-3.pt"
    target.write_bytes(b"my own work")
    with pytest.raises(Conflict, match="--force"):
        client.pull(ART, "v1.0.0", short_tmp)
    assert target.read_bytes() == b"my own work"
    assert client.pull(ART, "v1.0.0", short_tmp, force=True).read_bytes() == FILE_BYTES
    # a directory version over a different directory, forced
    (short_tmp / "checkpoint-500").mkdir()
    (short_tmp / "checkpoint-500" / "stale.bin").write_bytes(b"old")
    with pytest.raises(Conflict):
        client.pull(ART, "v1.1.0", short_tmp)
    client.pull(ART, "v1.1.0", short_tmp, force=True)
    assert not (short_tmp / "checkpoint-500" / "stale.bin").exists()
    assert leftovers(short_tmp) == []


@pytest.mark.parametrize("relpath", ["../escape.bin", "/etc/evil", "a\\b", "a/../../x"])
def test_pull_refuses_unsafe_manifest(client: Client, daemon: FakeDaemon, short_tmp: Path,
                                      relpath: str) -> None:
    daemon.manifest_override = {"artifact": ART, "version": "v1.1.0", "kind": "dir",
                                "name": "ckpt", "files": [{"relpath": relpath, "md5": md5(b""),
                                                           "size": 0}]}
    out = short_tmp / "out"
    with pytest.raises(Exception, match="unsafe path"):
        client.pull(ART, "v1.1.0", out)
    assert not out.exists() and daemon.objects_served == 0


# --- real subprocesses ---------------------------------------------------------------------


def test_subprocess_status_and_versions(daemon: FakeDaemon) -> None:
    sock = str(daemon.socket_path)
    r = cpvctl("--socket", sock, "status")
    assert r.returncode == 0, r.stderr
    assert "cpvd 9.9.9" in r.stdout and "torn zip" in r.stdout
    r = cpvctl("versions", ART, env={"CPV_SOCKET": sock})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].split()[0] == "v1.1.0"
    r = cpvctl("versions", ART, "--json", env={"CPV_SOCKET": sock})
    assert [v["version"] for v in json.loads(r.stdout)] == ["v1.1.0", "v1.0.0"]
    r = cpvctl("--socket", sock, "versions", "ghost/model")
    assert (r.returncode, r.stderr) == (1, "cpvctl: no artifact ghost/model\n")


def test_subprocess_daemon_not_running(short_tmp: Path) -> None:
    r = cpvctl("--socket", str(short_tmp / "cpvd.sock"), "status")
    assert r.returncode == 3
    assert "not running" in r.stderr and "cpvd run --config" in r.stderr
    assert "Traceback" not in r.stderr


def test_subprocess_stale_socket(short_tmp: Path) -> None:
    path = short_tmp / "cpvd.sock"
    with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)) as s:
        s.bind(str(path))  # the file stays after close: nobody listens, like after a crash
    r = cpvctl("--socket", str(path), "versions", ART)
    assert r.returncode == 3
    assert "connection refused" in r.stderr and "stale socket" in r.stderr


def test_not_a_socket(short_tmp: Path) -> None:
    path = short_tmp / "cpvd.sock"
    path.write_text("")
    with pytest.raises(DaemonUnreachable, match="not a socket"):
        Client(str(path)).status()


def test_version_startup_time() -> None:
    """Measured for the report (not asserted: timing on shared CI machines is noise)."""
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        r = cpvctl("--version")
        runs.append(time.perf_counter() - start)
        assert r.stdout.strip().startswith("cpvctl ")
    print(f"\ncpvctl --version: best {min(runs) * 1000:.0f} ms of {len(runs)} runs")
