"""``cpvctl.Client``: the daemon's API over HTTP/1.1 on its Unix socket, standard library only.

Training scripts import this (``Client().submit(path, "vision/resnet50")``), and the CLI is a
thin layer over it. One connection per request keeps it simple and fork-safe; a Unix-socket
connect costs microseconds. The API version is checked once, before the first real request, so
a daemon/client skew surfaces as a clear "upgrade X" message rather than a puzzling 404.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack
from urllib.parse import quote, urlencode

from cpvctl import errors
from cpvctl.defaults import default_socket
from cpvctl.errors import (
    ApiMismatch,
    CpvctlError,
    DaemonUnreachable,
    JobFailed,
    NotFound,
    UsageError,
    WaitTimeout,
    validated,
)
from cpvctl.protocol import (
    API_PREFIX,
    API_VERSION,
    CPV_VERSION,
    JOB_FINAL_EVENTS,
    JOB_FINAL_STATES,
    ProtocolError,
    Ref,
    job_id_of,
    parse_ref,
    ref_of,
    validate_job_id,
    validate_name,
    validate_stage,
)
from cpvctl.transport import Json, PathArg, PullOptions

if TYPE_CHECKING:
    from cpvctl.pull import PullResult

EventCallback = Callable[[str, dict[str, Any]], None]

#: How long ``wait`` reads the event stream before re-reading the job anyway (a missed event,
#: or a daemon without keep-alives, costs at most this much).
_EVENT_HEARTBEAT = 5.0
_POLL_INTERVAL = 0.5


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over an AF_UNIX stream socket instead of TCP."""

    def __init__(self, socket_path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        # a Unix socket whose accept queue is full refuses at once (EAGAIN) instead of
        # making the caller wait as TCP would: retry until the timeout, as TCP would wait
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        delay = 0.01
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout)
                sock.connect(self.socket_path)
            except BlockingIOError:
                sock.close()
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            except BaseException:
                sock.close()
                raise
            self.sock = sock
            return


class EventStream:
    """An open ``GET /v1/events`` answer, iterated as ``(event, data)`` pairs.

    Iteration raises ``TimeoutError`` when no line arrived within the read timeout; the stream
    is unusable afterwards (a timed-out socket file cannot be read again), so close it.
    """

    def __init__(
        self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, raw: bool = False
    ) -> None:
        self._conn = conn
        self._resp = resp
        self._parse = _event_envelope if raw else _event_data

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        event, data_lines = "message", list[str]()
        while True:
            raw = self._resp.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                if data_lines:
                    yield event, self._parse("\n".join(data_lines))
                event, data_lines = "message", []
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data_lines.append(value)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _event_envelope(text: str) -> dict[str, Any]:
    """The event as the daemon sent it (``{"id", "type", "time", "data"}``), not unwrapped."""
    try:
        data = json.loads(text)
    except ValueError:
        return {"data": {"raw": text}}
    return data if isinstance(data, dict) else {"data": {"value": data}}


def _event_data(text: str) -> dict[str, Any]:
    """The event's payload; an envelope ``{"id", "type", "time", "data": {...}}`` is unwrapped
    so callers see the same flat payload whichever form the daemon sends."""
    try:
        data = json.loads(text)
    except ValueError:
        return {"raw": text}
    if not isinstance(data, dict):
        return {"value": data}
    inner = data.get("data")
    if isinstance(inner, dict) and "type" in data:
        return inner
    return data


def _name(value: object) -> str:
    return validated(validate_name, value)


def reference(ref: str, version: str | None = None) -> Ref:
    """``ref`` as ``NAME@v1.2``/``NAME@latest``/``NAME#prod``/``NAME``, or (``version``
    given) a bare name plus ``v1.2``, ``latest`` or ``#prod``; a UsageError when invalid."""
    try:
        return parse_ref(ref) if version is None else ref_of(ref, version)
    except ProtocolError as e:
        raise UsageError(e.message, code=e.code) from None


class Client:
    """The daemon's API. Every method raises a ``cpvctl.errors.CpvctlError`` subclass."""

    def __init__(self, socket_path: str | None = None, timeout: float = 30) -> None:
        self.socket_path = str(socket_path) if socket_path else default_socket()
        self.timeout = float(timeout)
        self._api_checked = False

    # --- transport ---------------------------------------------------------------------

    def _url(self, path: str, query: dict[str, Any] | None) -> str:
        url = path if path.startswith("/metrics") else API_PREFIX + path
        if query:
            clean = {k: v for k, v in query.items() if v is not None}
            if clean:
                # surrogateescape: a file name that is not UTF-8 travels as its raw bytes
                url += "?" + urlencode(clean, encoding="utf-8", errors="surrogateescape")
        return url

    def _unreachable(self, error: OSError) -> DaemonUnreachable:
        if isinstance(error, ConnectionRefusedError):
            try:
                mode = os.stat(self.socket_path).st_mode
            except OSError:
                mode = stat.S_IFSOCK
            if not stat.S_ISSOCK(mode):
                return DaemonUnreachable(
                    f"{self.socket_path} is not a socket: is --socket/CPV_SOCKET right?",
                    code="not_a_socket",
                )
        return errors.unreachable(self.socket_path, error, self.timeout)

    def open(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Json = None,
        read_timeout: float | None = -1.0,
        headers: dict[str, str] | None = None,
    ) -> tuple[UnixHTTPConnection, http.client.HTTPResponse]:
        """Send a request and return the open connection and response (status < 400).

        ``read_timeout`` replaces the socket timeout once the headers are in (``None`` blocks
        forever, for event streams); the default keeps ``self.timeout``. The caller closes.
        """
        conn = UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            conn.connect()
        except (OSError, TimeoutError) as e:
            conn.close()
            raise self._unreachable(e) from None
        accept = "text/event-stream" if path == "/events" else "application/json"
        headers = {"Accept": accept, "User-Agent": f"cpvctl/{CPV_VERSION}", **(headers or {})}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, self._url(path, query), body=payload, headers=headers)
            resp = conn.getresponse()
            if resp.status >= 400:
                raise errors.from_response(resp.status, resp.read(), resp.reason)
        except TimeoutError as e:
            conn.close()
            raise errors.unreachable(self.socket_path, e, self.timeout) from None
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise _lost(e) from None
        except BaseException:
            conn.close()
            raise
        if read_timeout != -1.0 and conn.sock is not None:
            conn.sock.settimeout(read_timeout)
        return conn, resp

    def request(
        self, method: str, path: str, query: dict[str, Any] | None = None, body: Json = None
    ) -> Json:
        """One JSON round trip (after the one-time API check)."""
        if not self._api_checked:
            self.check_api()
        return self._request(method, path, query, body)

    def _request(
        self, method: str, path: str, query: dict[str, Any] | None = None, body: Json = None
    ) -> Json:
        conn, resp = self.open(method, path, query, body)
        try:
            data = resp.read()
        except TimeoutError as e:
            raise errors.unreachable(self.socket_path, e, self.timeout) from None
        except (OSError, http.client.HTTPException) as e:
            raise _lost(e) from None
        finally:
            conn.close()
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            raise CpvctlError(
                f"cpvd sent a non-JSON answer to {method} {path}", code="bad_answer"
            ) from None

    # --- handshake ---------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        """``{"api_version", "cpv_version"}`` of the daemon (no API check: this *is* it)."""
        answer = self._request("GET", "/version")
        if not isinstance(answer, dict):
            raise ApiMismatch("cpvd answered /v1/version with something that is not an object")
        return answer

    def check_api(self) -> dict[str, Any]:
        """Fail with an "upgrade cpvd" / "upgrade cpvctl" message unless the APIs match."""
        try:
            info = self.version()
        except NotFound:
            raise ApiMismatch(
                f"daemon is older (API 0), upgrade cpvd: cpvctl {CPV_VERSION} needs API "
                f"{API_VERSION} and the daemon has no /v1/version",
                code="api_mismatch",
            ) from None
        api = info.get("api_version")
        cpv = info.get("cpv_version", "?")
        if not isinstance(api, int):
            raise ApiMismatch(f"cpvd sent no API version (got {api!r})", code="api_mismatch")
        if api < API_VERSION:
            raise ApiMismatch(
                f"daemon is older (API {api}), upgrade cpvd: cpvd {cpv} speaks API {api}, "
                f"cpvctl {CPV_VERSION} needs API {API_VERSION}",
                code="api_mismatch",
            )
        if api > API_VERSION:
            raise ApiMismatch(
                f"client is older, upgrade cpvctl: cpvd {cpv} speaks API {api}, "
                f"cpvctl {CPV_VERSION} speaks API {API_VERSION}",
                code="api_mismatch",
            )
        self._api_checked = True
        return info

    # --- reading -----------------------------------------------------------------------

    def status(self, ignored: bool = False) -> dict[str, Any]:
        """``ignored``: also list, per watch, the files that are in no checkpoint unit."""
        return dict(self.request("GET", "/status?ignored=1" if ignored else "/status"))

    def artifacts(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/artifacts"))

    def versions(self, name: str, all: bool = False) -> list[dict[str, Any]]:
        """Newest first; pruned (deregistered) versions only with ``all``."""
        query = {"artifact": _name(name), **({"all": "1"} if all else {})}
        return list(self.request("GET", "/versions", query))

    def show(self, ref: str, version: str | None = None) -> dict[str, Any]:
        """One version: ``show("vision/r50@latest")``, ``show("vision/r50#prod")``,
        ``show("vision/r50", "v1.2")``; a bare name shows the current version."""
        r = reference(ref, version)
        return dict(self.request("GET", "/show", {"artifact": r.name, "version": r.selector}))

    def metrics(self) -> str:
        """The daemon's Prometheus text (``GET /metrics``)."""
        conn, resp = self.open("GET", "/metrics")
        try:
            return resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    # --- jobs --------------------------------------------------------------------------

    def push(
        self,
        path: str | os.PathLike[str],
        artifact: str,
        metrics: dict[str, Any] | None = None,
        bump: str = "minor",
    ) -> dict[str, Any]:
        """Queue ``path`` (made absolute: the daemon has its own working directory)."""
        if bump not in ("minor", "major"):
            raise UsageError(f"bump must be 'minor' or 'major', not {bump!r}")
        if metrics is not None and not isinstance(metrics, dict):
            raise UsageError("metrics must be a dict of name -> number or string")
        body: dict[str, Any] = {
            "path": os.path.abspath(os.fspath(path)),
            "artifact": _name(artifact),
            "bump": bump,
        }
        if metrics:
            body["metrics"] = metrics
        return dict(self.request("POST", "/push", body=body))

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/jobs/{quote(validated(validate_job_id, job_id))}"))

    def retry(self, job_id: str) -> dict[str, Any]:
        jid = quote(validated(validate_job_id, job_id))
        return dict(self.request("POST", f"/jobs/{jid}/retry"))

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        on_event: EventCallback | None = None,
    ) -> dict[str, Any]:
        """Block until the job is final (done, unchanged, failed) and return the job object.

        Follows ``/v1/events`` (``on_event`` sees this job's events, e.g. ``progress``), reading
        the job after subscribing so an already-finished job returns at once; falls back to
        polling ``/v1/jobs/<id>`` when the daemon has no event stream. Raises ``WaitTimeout``
        after ``timeout`` seconds (the job itself goes on). A failed job is returned, not
        raised: callers decide (``submit`` raises ``JobFailed``).
        """
        job_id = validated(validate_job_id, job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        use_events = True
        while True:
            remaining = _remaining(deadline, job_id)
            stream: EventStream | None = None
            if use_events:
                try:
                    stream = self._open_events(min(_EVENT_HEARTBEAT, remaining))
                except (NotFound, errors.BadRequest):
                    use_events = False
            try:
                job = self.job(job_id)
                if job.get("state") in JOB_FINAL_STATES:
                    return job
                if stream is None:
                    time.sleep(min(_POLL_INTERVAL, _remaining(deadline, job_id)))
                    continue
                ended = self._follow(stream, job_id, on_event, deadline)
                if ended:
                    job = self.job(job_id)
                    if job.get("state") in JOB_FINAL_STATES:
                        return job
                else:
                    time.sleep(min(_POLL_INTERVAL, _remaining(deadline, job_id)))
            except TimeoutError:
                pass  # no event for a heartbeat: re-read the job on a fresh stream
            except (OSError, http.client.HTTPException):
                # The stream broke; the next job read says whether the daemon is still there.
                time.sleep(min(_POLL_INTERVAL, _remaining(deadline, job_id)))
            finally:
                if stream is not None:
                    stream.close()

    def _follow(
        self,
        stream: EventStream,
        job_id: str,
        on_event: EventCallback | None,
        deadline: float | None,
    ) -> bool:
        """Read until this job's final event (True) or the stream ends (False)."""
        for event, data in stream:
            _remaining(deadline, job_id)  # also when only other jobs' events arrive
            if data.get("job_id") != job_id:
                continue
            if on_event is not None:
                on_event(event, data)
            if event in JOB_FINAL_EVENTS:
                return True
        return False

    def submit(
        self,
        path: str | os.PathLike[str],
        artifact: str,
        metrics: dict[str, Any] | None = None,
        wait: bool = True,
        timeout: float | None = None,
        bump: str = "minor",
        on_event: EventCallback | None = None,
    ) -> dict[str, Any]:
        """Push a checkpoint from a training script and (by default) wait for its version.

        Returns the final job (``job["version"]`` is the new or unchanged version); raises
        ``JobFailed`` when the daemon could not version it, so a script never silently
        continues without its checkpoint stored.
        """
        job = self.push(path, artifact, metrics=metrics, bump=bump)
        if not wait:
            return job
        job_id = job_id_of(job)
        if job_id is None:
            raise CpvctlError(f"cpvd answered the push without a job id: {job!r}", "bad_answer")
        final = self.wait(job_id, timeout=timeout, on_event=on_event)
        if final.get("state") in ("failed", "skipped"):
            reason = final.get("error") or (final.get("result") or {}).get("reason")
            raise JobFailed(f"job {job_id} {final.get('state')}: {reason}", final)
        return final

    # --- data --------------------------------------------------------------------------

    def pull(
        self,
        ref: str,
        version_or_dir: str | os.PathLike[str] | None = None,
        out_dir: PathArg | None = None,
        **options: Unpack[PullOptions],
    ) -> Path:
        """Download a version into a directory and return the restored checkpoint's path,
        every byte md5-checked: ``pull("vision/r50@latest", DIR)`` (what a preempted
        training job resumes from), ``pull("vision/r50#prod", DIR)``, ``pull(NAME, DIR)``
        (the current version), or the older ``pull(NAME, "v1.2", DIR)``.

        ``progress`` (a ``ProgressCallback``) follows the bytes; ``force`` replaces a
        different copy already there."""
        return self.pull_detailed(ref, version_or_dir, out_dir, **options).path

    def pull_detailed(
        self,
        ref: str,
        version_or_dir: str | os.PathLike[str] | None = None,
        out_dir: PathArg | None = None,
        **options: Unpack[PullOptions],
    ) -> PullResult:
        """Like ``pull`` but returns a ``PullResult`` (path, artifact, version, kind)."""
        if out_dir is None:  # pull(REF, DIR)
            if version_or_dir is None:
                raise UsageError("pull needs the directory to write into")
            r, out_dir = reference(ref), version_or_dir
        else:  # pull(NAME, VERSION, DIR)
            r = reference(ref, None if version_or_dir is None else os.fspath(version_or_dir))
        from cpvctl.pull import pull  # here: hashlib, the sink's threads; most calls never pull

        return pull(self, r, out_dir, **options)

    def revert(
        self,
        ref: str,
        version: str | None = None,
        with_data: bool = False,
        to: str | os.PathLike[str] | None = None,
        include_pruned: bool = False,
    ) -> dict[str, Any]:
        """Make a version current again: ``revert("vision/r50@v1.2")``,
        ``revert("vision/r50#prod")`` or ``revert("vision/r50", "v1.2")``. A pruned version
        is refused (``Conflict``) unless ``include_pruned``."""
        r = reference(ref, version)
        if r.is_current:
            raise UsageError(
                f"name the version to revert to, e.g. {r.name}@v1.2 or {r.name}#prod",
                code="bad_request",
            )
        body: dict[str, Any] = {
            "artifact": r.name,
            "version": r.selector,
            "with_data": bool(with_data),
        }
        if to is not None:
            body["to"] = os.path.abspath(os.fspath(to))
        if include_pruned:
            body["include_pruned"] = True
        return dict(self.request("POST", "/revert", body=body))

    def promote(
        self,
        ref: str,
        version_or_stage: str | None,
        stage: str | None = None,
        with_data: bool = False,
    ) -> dict[str, Any]:
        """Move ``stage`` to a version: ``promote("vision/r50@latest", "prod")``, or the
        older ``promote(NAME, "v1.2", "prod")``; a bare name promotes the current version."""
        if stage is None:  # promote(REF, STAGE)
            r, stage = reference(ref), validated(validate_stage, version_or_stage)
        else:
            r = reference(ref, version_or_stage)
        body = {
            "artifact": r.name,
            "version": r.selector,
            "stage": validated(validate_stage, stage),
            "with_data": bool(with_data),
        }
        return dict(self.request("POST", "/promote", body=body))

    def pause(self, name: str | None = None) -> dict[str, Any]:
        body = {} if name is None else {"artifact": _name(name)}
        return dict(self.request("POST", "/pause", body=body))

    def resume(self, name: str | None = None) -> dict[str, Any]:
        body = {} if name is None else {"artifact": _name(name)}
        return dict(self.request("POST", "/resume", body=body))

    def verify(self, sample: int | None = None, artifact: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if sample is not None:
            if not isinstance(sample, int) or sample < 1:
                raise UsageError(f"sample must be a positive integer, not {sample!r}")
            body["sample"] = sample
        if artifact is not None:
            body["artifact"] = _name(artifact)
        return dict(self.request("POST", "/verify", body=body))

    def hooks(self) -> dict[str, Any]:
        """Hooks with their pending count, failures and last deliveries."""
        return dict(self.request("GET", "/hooks"))

    def hook_test(self, name: str) -> dict[str, Any]:
        """Send a sample ``hook.test`` event to hook ``name`` now; the attempt's outcome."""
        if not isinstance(name, str) or not name:
            raise UsageError("hook name must be a non-empty string")
        return dict(self.request("POST", "/hooks/test", body={"name": name}))

    # --- events ------------------------------------------------------------------------

    def gc(self, dry_run: bool = False, timeout: float = 3600.0) -> dict[str, Any]:
        """Delete the storage objects no kept version references (``dry_run``: only count
        them). The daemon answers when gc is done, so this waits up to ``timeout`` seconds."""
        saved = self.timeout
        self.timeout = max(saved, float(timeout))
        try:
            return dict(self.request("POST", "/gc", body={"dry_run": bool(dry_run)}))
        finally:
            self.timeout = saved

    def _open_events(
        self, read_timeout: float | None, after_id: int | None = None, raw: bool = False
    ) -> EventStream:
        if not self._api_checked:
            self.check_api()
        extra = {"Last-Event-ID": str(after_id)} if after_id is not None else None
        conn, resp = self.open("GET", "/events", read_timeout=read_timeout, headers=extra)
        return EventStream(conn, resp, raw=raw)

    def recent_events(self, since: float | None = None, count: int | None = None) -> dict[str, Any]:
        """Remembered events, oldest first: ``{"events": [{"id", "type", "time", "data"}],
        "last_id"}``; ``since`` is a Unix time, ``count`` the newest N (daemon default 20)."""
        query = {"since": None if since is None else f"{since:.3f}", "count": count}
        return dict(self.request("GET", "/events/recent", query))

    def events(
        self, read_timeout: float | None = None, after_id: int | None = None, raw: bool = False
    ) -> Generator[tuple[str, dict[str, Any]], None, None]:
        """Subscribe now; the returned iterator yields ``(event, data)`` until the daemon closes.

        Subscribing before iterating means an action taken after this call (a push) cannot
        emit its events unseen. ``read_timeout`` (seconds without a byte; keep-alives count)
        raises ``TimeoutError``; ``None`` waits forever. Closing the iterator (or leaving a
        ``for`` loop and letting it go) closes the connection. ``after_id`` first replays the
        remembered events newer than that id; ``raw`` yields the whole envelope
        (``{"id", "type", "time", "data"}``) instead of the payload.
        """
        stream = self._open_events(read_timeout, after_id, raw)

        def iterate() -> Generator[tuple[str, dict[str, Any]], None, None]:
            try:
                yield from stream
            except TimeoutError:
                raise
            except (OSError, http.client.HTTPException) as e:
                raise _lost(e) from None
            finally:
                stream.close()

        return iterate()


def _remaining(deadline: float | None, job_id: str) -> float:
    """Seconds left before ``deadline`` (a day when there is none); raise once it passed."""
    if deadline is None:
        return 86400.0
    left = deadline - time.monotonic()
    if left <= 0:
        raise WaitTimeout(
            f"job {job_id} is not finished yet; it goes on in the daemon (cpvctl job {job_id})",
            code="timeout",
        )
    return left


def _lost(error: BaseException) -> CpvctlError:
    return CpvctlError(
        f"connection to cpvd lost: {error or type(error).__name__} "
        "(the daemon may have stopped; see its log)",
        code="connection_lost",
    )
