"""The processes a benchmark runs and how it watches them.

Every process is started in its own session (so its whole group can be stopped) and
registered with an ``ExitStack`` by the caller, so Ctrl-C or a failure stops everything.
moto runs in a child process rather than a thread of the harness: the raw boto3 baseline
would otherwise share one GIL with the server it uploads to (the daemon never does), and the
child's memory goes back to the OS when it is stopped between big runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cpvctl.client import Client
from cpvctl.errors import CpvctlError

BENCH_ENV = {
    "DVC_NO_ANALYTICS": "1",
    "ITERATIVE_DO_NOT_TRACK": "1",
    "GTO_NO_ANALYTICS": "1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "GIT_AUTHOR_NAME": "cpv-bench",
    "GIT_AUTHOR_EMAIL": "cpv-bench@example.invalid",
    "GIT_COMMITTER_NAME": "cpv-bench",
    "GIT_COMMITTER_EMAIL": "cpv-bench@example.invalid",
    "GIT_TERMINAL_PROMPT": "0",
}
_DROP_ENV = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "CPV_CONFIG", "CPV_SOCKET")

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


def prepare_environment() -> None:
    """Pin the harness's own environment (inherited by every child) before boto3 loads."""
    os.environ.update(BENCH_ENV)
    for var in _DROP_ENV:
        os.environ.pop(var, None)


def run(
    argv: Sequence[str | Path],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 900.0,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command, raising with its output when it fails."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        timeout=timeout,
        input=input,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n"
            f"{proc.stdout.decode(errors='replace')[-3000:]}"
            f"{proc.stderr.decode(errors='replace')[-3000:]}"
        )
    return proc


def stop_group(proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """SIGTERM the process's group, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


# --- /proc readings --------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """``pid`` and every live descendant (from ``/proc/<pid>/task/*/children``)."""
    out = [pid]
    i = 0
    while i < len(out):
        p = out[i]
        i += 1
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    out += [int(c) for c in f.read().split()]
            except OSError:
                continue
    return out


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """CPU seconds used by ``pid``, its reaped children and its live descendants.

    utime+stime of every live process in the tree, plus the root's cutime+cstime (the
    children that already exited and were waited for, e.g. each ``git`` the daemon ran).
    """
    total = 0
    for i, p in enumerate(descendants(pid)):
        f = _stat_fields(p)
        if f is None:
            continue
        # fields after "(comm) ": state=0 ... utime=11 stime=12 cutime=13 cstime=14
        total += int(f[11]) + int(f[12])
        if i == 0:
            total += int(f[13]) + int(f[14])
    return total / CLK_TCK


def status_kib(pid: int, key: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of ``/proc/<pid>/status`` in KiB (0 if gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes(pid: int) -> int:
    """VmRSS of one process, what ``ps`` and ``top`` show."""
    return status_kib(pid, "VmRSS") * 1024


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pss_bytes(pid: int) -> int:
    """Proportional set size of the process and its descendants.

    Not a sum of RSS: a ``git`` the daemon forks shares all of the daemon's pages until it
    execs, and summing RSS would count them twice.
    """
    return sum(pss_kib(p) for p in descendants(pid)) * 1024


class RssSampler:
    """Samples a process's RSS (and its tree's PSS) every ``interval`` s on a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_tree = 0
        self.peak_main = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_main = max(self.peak_main, rss_bytes(self.pid))
            self.peak_tree = max(self.peak_tree, tree_pss_bytes(self.pid))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# --- moto ----------------------------------------------------------------------------------


class MotoServer:
    """moto's ``ThreadedMotoServer`` on 127.0.0.1 and a free port, in a child process."""

    def __init__(self, prefill: Path | None = None) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = ""
        #: objects to put into moto's backend before it serves (see benchmarks.gcbuild)
        self.prefill = prefill

    def start(self) -> MotoServer:
        extra = ["--prefill", str(self.prefill)] if self.prefill is not None else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.moto_child", *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if not line.isdigit():
            self.stop()
            raise RuntimeError(f"moto child did not report a port (got {line!r})")
        self.endpoint = f"http://127.0.0.1:{line}"
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss(self) -> int:
        return rss_bytes(self.pid) if self.proc is not None else 0

    def client(self, sign_payload: bool | None = None) -> Any:
        """A boto3 client; ``sign_payload`` False is cpvd's setting on http endpoints."""
        import boto3
        import botocore.config

        s3 = None if sign_payload is None else {"payload_signing_enabled": sign_payload}
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            config=botocore.config.Config(max_pool_connections=32, s3=s3),
        )

    def new_bucket(self) -> str:
        name = f"cpv-bench-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.stdin is not None:
            proc.stdin.close()  # the child stops the server at EOF
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            stop_group(proc)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> MotoServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def empty_bucket(s3: Any, bucket: str) -> None:
    """Delete every object (and abort every upload) so moto can free the memory."""
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        for i in range(0, len(keys), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[i : i + 1000]})
    for up in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])


# --- git remote --------------------------------------------------------------------------------

POST_RECEIVE = """#!/bin/sh
# one line per push: how many refs it updated
n=$(wc -l)
echo "$n" >> pushes.log
"""


def make_bare_remote(path: Path) -> Path:
    """An empty bare repository on branch main that logs every push to ``pushes.log``."""
    run(["git", "init", "-q", "--bare", "-b", "main", path])
    hook = path / "hooks" / "post-receive"
    hook.write_text(POST_RECEIVE)
    hook.chmod(0o755)
    return path


def push_count(remote: Path) -> int:
    try:
        return len((remote / "pushes.log").read_text().split())
    except FileNotFoundError:
        return 0


def remote_tags(remote: Path, prefix: str = "") -> set[str]:
    """Tag names in a local bare repository, read from its ref files (no process spawned).

    Loose refs plus ``packed-refs``: with git's files backend that is every ref, and a
    ``stat``/``listdir`` costs nothing next to the daemon being measured, where a ``git``
    process per poll would compete with it for the two cores.
    """
    root = remote / "refs" / "tags"
    found: set[str] = set()
    for dirpath, _dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for f in files:
            if f.endswith(".lock"):  # a push in progress: git renames it into place when done
                continue
            name = f if rel == "." else f"{rel}/{f}"
            if name.startswith(prefix):
                found.add(name)
    try:
        with open(remote / "packed-refs") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 2 and parts[1].startswith("refs/tags/"):
                    name = parts[1][len("refs/tags/") :]
                    if name.startswith(prefix):
                        found.add(name)
    except FileNotFoundError:
        pass
    return found


def ls_remote_tags(remote: Path) -> set[str]:
    """The same, through git itself (used to confirm, outside the timed section)."""
    out = run(["git", "ls-remote", "--tags", remote]).stdout.decode()
    return {
        line.split("\t")[1].removeprefix("refs/tags/").removesuffix("^{}")
        for line in out.splitlines()
        if "\t" in line
    }


# --- the daemon ----------------------------------------------------------------------------------


@dataclass
class Watch:
    path: Path
    artifact: str
    settle_seconds: float = 0.2


def toml_str(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Daemon:
    """The real ``python -m cpvd run --config`` in its own process group.

    Only what a user would configure is written: storage, registry, remote and watches; the
    daemon's own defaults (rescan period, part size, concurrency) are whatever the code under
    test says, so a re-run after a change measures the change.
    """

    root: Path  # short: socket paths are limited to ~108 bytes
    watches: list[Watch]
    storage_url: str
    endpoint_url: str | None = None
    remote: Path | None = None
    registry_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: TOML appended to the config as written (the hooks group's ``[[hook]]`` tables)
    extra_toml: str = ""

    @property
    def socket(self) -> Path:
        return self.root / "run" / "cpvd.sock"

    @property
    def registry(self) -> Path:
        return self.registry_path or self.root / "registry"

    @property
    def config_path(self) -> Path:
        return self.root / "cpvd.toml"

    @property
    def log_path(self) -> Path:
        return self.root / "cpvd.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def write_config(self) -> None:
        lines = [
            "[daemon]",
            f"socket = {toml_str(self.socket)}",
            f"state_dir = {toml_str(self.root / 'state')}",
            "[registry]",
            f"path = {toml_str(self.registry)}",
        ]
        if self.remote is not None:
            lines.append(f"remote = {toml_str(self.remote)}")
        lines += ["[storage]", f"url = {toml_str(self.storage_url)}"]
        if self.endpoint_url:
            lines += [f"endpoint_url = {toml_str(self.endpoint_url)}", 'region = "us-east-1"']
        for w in self.watches:
            lines += [
                "[[watch]]",
                f"path = {toml_str(w.path)}",
                f"artifact = {toml_str(w.artifact)}",
                f"settle_seconds = {w.settle_seconds!r}",
                # every top-level file or directory (shard-NN.bin dirs included) is one
                # checkpoint, as the scenarios measure it, whatever its name
                'layout = "entries"',
            ]
        if self.extra_toml:
            lines.append(self.extra_toml)
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 120.0) -> Daemon:
        self.root.mkdir(parents=True, exist_ok=True)
        for w in self.watches:
            w.path.mkdir(parents=True, exist_ok=True)
        self.write_config()
        env = dict(os.environ)
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        env.update(self.env)
        log: IO[bytes] = open(self.log_path, "ab")  # noqa: SIM115 -- the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cpvd", "run", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cpvd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.client(timeout=5).version()
                return self
            except CpvctlError:
                time.sleep(0.05)
        raise RuntimeError(f"cpvd did not answer within {timeout}s:\n{self.log()}")

    def client(self, timeout: float = 60.0) -> Client:
        return Client(str(self.socket), timeout=timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            proc, self.proc = self.proc, None
            stop_group(proc, timeout=60)

    def __enter__(self) -> Daemon:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
