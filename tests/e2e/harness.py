"""Run the real ``cpvd`` process for end-to-end tests.

``DaemonProcess`` writes a config, starts ``python -m cpvd run`` in its own process group
(so a test can ``kill -9`` the whole group like a crash), waits until the API answers, and
stops it with SIGTERM. ``Client`` is the real ``cpvctl.Client``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cpvctl.client import Client
from cpvctl.errors import CpvctlError


@dataclass
class Watch:
    path: Path
    artifact: str
    kind: str = "model"
    data: Sequence[str] = ()
    settle_seconds: float = 0.3
    poll: bool = False
    #: what becomes a version: "entries" (every top-level entry, what these tests were
    #: written for, whatever its name) unless a test says otherwise; None = the daemon's
    #: default for the kind (auto for a model)
    layout: str | None = "entries"
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    #: more keys of this [[watch]], values as raw TOML (``{"keep": "{ last = 2 }"}``)
    extra: dict[str, str] = field(default_factory=dict)


def toml_str(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_str(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class DaemonProcess:
    root: Path  # a short directory (socket paths are limited to ~108 bytes)
    watches: list[Watch]
    storage_url: str | None = None
    endpoint_url: str | None = None
    remote: Path | str | None = None
    extra_daemon: dict[str, Any] = field(default_factory=dict)
    extra_storage: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    #: TOML appended to the config as written (``[[hook]]`` tables, say)
    extra_toml: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.root / "run" / "cpvd.sock"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def config_path(self) -> Path:
        return self.root / "cpvd.toml"

    @property
    def log_path(self) -> Path:
        return self.root / "cpvd.log"

    def write_config(self) -> None:
        lines = [
            "[daemon]",
            f"socket = {toml_str(self.socket)}",
            f"state_dir = {toml_str(self.state_dir)}",
            "rescan_seconds = 2",
            *(f"{k} = {toml_str(v)}" for k, v in self.extra_daemon.items()),
            "[registry]",
            f"path = {toml_str(self.registry)}",
        ]
        if self.remote:
            lines.append(f"remote = {toml_str(self.remote)}")
        lines += ["[storage]", f"url = {toml_str(self.storage_url or self.root / 'storage')}"]
        if self.endpoint_url:
            lines += [f"endpoint_url = {toml_str(self.endpoint_url)}", 'region = "us-east-1"']
        lines += [f"{k} = {toml_str(v)}" for k, v in self.extra_storage.items()]
        if self.extra_toml:  # its own tables ([[hook]]), so before the watches
            lines.append(self.extra_toml)
        for w in self.watches:
            lines += [
                "[[watch]]",
                f"path = {toml_str(w.path)}",
                f"artifact = {toml_str(w.artifact)}",
                f"kind = {toml_str(w.kind)}",
                f"settle_seconds = {w.settle_seconds}",
                f"poll = {toml_str(w.poll)}",
            ]
            if w.data:
                lines.append(f"data = {toml_str(list(w.data))}")
            if w.layout is not None:
                lines.append(f"layout = {toml_str(w.layout)}")
            for key in ("include", "exclude"):
                if getattr(w, key):
                    lines.append(f"{key} = {toml_str(list(getattr(w, key)))}")
            lines += [f"{k} = {v}" for k, v in w.extra.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, wait: bool = True, extra_args: Sequence[str] = ()) -> DaemonProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        for w in self.watches:
            w.path.mkdir(parents=True, exist_ok=True)
        self.write_config()
        env = dict(os.environ)
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        env.update(self.env)
        log = open(self.log_path, "ab")  # noqa: SIM115 -- the child owns it from here
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cpvd",
                "run",
                "--config",
                str(self.config_path),
                "--log-level",
                "DEBUG",
                *extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"cpvd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.client(timeout=2).version()
                return
            except CpvctlError:
                time.sleep(0.1)
        raise AssertionError(f"cpvd did not answer within {timeout}s:\n{self.log()}")

    def client(self, timeout: float = 30.0) -> Client:
        return Client(str(self.socket), timeout=timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait; returns the exit status (kills the group if it hangs)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"cpvd ignored SIGTERM for {timeout}s:\n{self.log()}"
                ) from None
        rc = self.proc.returncode
        self.proc = None
        return rc

    def kill(self) -> None:
        """``kill -9`` the daemon's whole process group, like a crash or OOM kill."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.proc = None

    def __enter__(self) -> DaemonProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.stop()


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=60
    ).stdout


def tags(repo: Path, pattern: str = "*@v*") -> list[str]:
    return sorted(git(repo, "tag", "-l", pattern).split())


# -- helpers shared by the e2e tests that talk to the daemon at the HTTP level ----------------


def versions_of(d: DaemonProcess, artifact: str) -> list[str]:
    """The artifact's versions, newest first (an unknown artifact counts as none)."""
    try:
        return [v["version"] for v in d.client().versions(artifact)]
    except CpvctlError as exc:
        if getattr(exc, "code", None) == "unknown_artifact":
            return []
        raise


def queue_depth(d: DaemonProcess) -> int:
    return int(d.client().status()["queue"]["depth"])


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_code(self) -> str | None:
        try:
            data = self.json()
        except ValueError:
            return None
        err = data.get("error") if isinstance(data, dict) else None
        return err.get("code") if isinstance(err, dict) else None


def raw_request(
    sock: Path,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15.0,
) -> RawResponse:
    """One HTTP request over the Unix socket, exactly as given (no client-side validation)."""
    conn = _UnixConnection(sock, timeout)
    try:
        payload = body.encode() if isinstance(body, str) else body
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=payload, headers=hdrs)
        resp = conn.getresponse()
        return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def event_history(sock: Path, quiet: float = 0.5, limit: float = 10.0) -> list[dict[str, Any]]:
    """Every event the daemon still remembers (SSE replay from id 0), oldest first.

    Reads until the stream has been quiet for ``quiet`` seconds: the replay comes at once,
    and live events keep arriving only while the daemon is busy.
    """
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(quiet)
    buf = b""
    deadline = time.monotonic() + limit
    try:
        s.connect(str(sock))
        s.sendall(b"GET /v1/events HTTP/1.1\r\nHost: localhost\r\nLast-Event-ID: 0\r\n\r\n")
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    events = []
    for line in buf.decode(errors="replace").splitlines():
        if line.startswith("data: "):
            with contextlib.suppress(ValueError):
                events.append(json.loads(line[len("data: ") :]))
    return events


def events_of(sock: Path, type_: str) -> list[dict[str, Any]]:
    """The payloads of remembered events of one type."""
    return [e["data"] for e in event_history(sock) if e.get("type") == type_]


def cpvctl(
    sock: Path, *args: str, timeout: float = 60.0, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the real ``python -m cpvctl`` CLI as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "cpvctl", "--socket", str(sock), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


D = TypeVar("D", bound=DaemonProcess)


def daemons_of(cls: type[D], short_tmp: Path) -> Iterator[Callable[..., D]]:
    """A fixture's body: make ``cls`` daemons under short_tmp; kill those still running."""
    made: list[D] = []

    def make(*, name: str = "d", **kw: Any) -> D:
        d = cls(root=short_tmp / name, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        if d.proc is not None:
            d.kill()
