"""Helpers shared by the fault tests: an event recorder and small registry checks."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cpvctl.errors import CpvctlError
from tests.e2e.harness import DaemonProcess, git


class EventLog:
    """Records every event the daemon streams, from a background thread, until ``close``.

    Subscribes before returning, so an action taken afterwards cannot emit unseen events.
    """

    def __init__(self, d: DaemonProcess) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        # the stream itself (not the generator API) so another thread can shut it down
        self._stream = d.client(timeout=10)._open_events(None)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event, data in self._stream:
                with self._lock:
                    self.events.append((event, data))
                if self._closed.is_set():
                    return
        except (CpvctlError, OSError, ValueError, http.client.HTTPException):
            return

    def of(self, *types: str) -> list[dict[str, Any]]:
        with self._lock:
            return [data for event, data in self.events if event in types]

    def wait(
        self, predicate: Callable[[EventLog], Any], timeout: float = 30.0, what: str = "events"
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = predicate(self)
            if got:
                return got
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; got {self.events!r}")

    def close(self) -> None:
        self._closed.set()
        sock = self._stream._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._stream.close()


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def idle(d: DaemonProcess) -> bool:
    """No job queued or running (the watcher may still hold unsettled checkpoints)."""
    return bool(d.client().status()["queue"]["depth"] == 0)


def version_tags(repo: Path, artifact: str) -> list[str]:
    return sorted(git(repo, "tag", "-l", f"{artifact}@v*").split())
