"""Run ``cpvctl ui --no-browser`` as a subprocess against a real daemon, and make versions
with metrics for the page to show (shared by the e2e and the browser tests)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.harness import DaemonProcess

REPO = Path(__file__).resolve().parents[2]  # the checkout whose cpvctl is under test
URL_RE = re.compile(r"http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]+)")
XSS_METRIC = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"


@dataclass
class UiProcess:
    proc: subprocess.Popen[str]
    url: str
    port: int
    token: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def running_ui(socket: Path, port: int = 0) -> Iterator[UiProcess]:
    """``cpvctl ui --no-browser`` until the block ends; yields its printed address."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cpvctl", "--socket", str(socket), "ui", "--no-browser",
         "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = URL_RE.search(line)
        assert m, f"cpvctl ui printed no address: {line!r} {proc.stderr and proc.stderr.read()}"
        yield UiProcess(proc, m.group(0), int(m.group(1)), m.group(2))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def push_versions(
    d: DaemonProcess, artifact: str, metrics: list[dict[str, Any]], where: Path
) -> list[str]:
    """One version per metrics dict (oldest first); returns the versions made."""
    where.mkdir(parents=True, exist_ok=True)
    made = []
    for i, m in enumerate(metrics):
        path = where / f"ckpt-{i}.dat"  # not a unit of an auto layout: only pushed
        path.write_bytes(os.urandom(1000 + i))
        final = d.client(timeout=60).submit(path, artifact, metrics=m, timeout=120)
        made.append(str(final["version"]))
    return made
