"""Issue 4: the systemd notification protocol, seen by a datagram socket the test owns.

READY=1 only once the API answers, WATCHDOG=1 at about half of WATCHDOG_USEC, STATUS= with
the queue depth, STOPPING=1 on SIGTERM. No tight timing: counts within generous windows.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import DaemonProcess, Watch, raw_request


@pytest.fixture
def notify_socket(short_tmp: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = short_tmp / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    try:
        yield s, path
    finally:
        s.close()


def receive(s: socket.socket, until: float) -> Iterator[tuple[float, list[str]]]:
    """Datagrams (arrival time, KEY=VALUE lines) until the monotonic deadline."""
    while (left := until - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            data = s.recv(4096)
        except TimeoutError:
            return
        yield time.monotonic(), data.decode().splitlines()


def test_ready_after_api_watchdog_status_and_stopping(
    short_tmp: Path,
    notify_socket: tuple[socket.socket, Path],
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    s, path = notify_socket
    d = daemon_factory(
        watches=[Watch(short_tmp / "ck", "svc/model")],
        env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"},
    )
    d.start(wait=False)
    assert d.proc is not None
    ready_at = None
    for at, lines in receive(s, time.monotonic() + 60):
        assert "STOPPING=1" not in lines
        if "READY=1" in lines:
            ready_at = at
            # the API must already answer when READY arrives
            r = raw_request(d.socket, "GET", "/v1/version")
            assert r.status == 200 and r.json()["api_version"] == 1
            break
    assert ready_at is not None, f"no READY=1 within 60 s:\n{d.log()}"
    watchdogs, statuses = 0, []
    for _, lines in receive(s, time.monotonic() + 2.2):
        watchdogs += lines.count("WATCHDOG=1")
        statuses += [line for line in lines if line.startswith("STATUS=")]
    # half of the 1 s watchdog timeout: ~4 in 2.2 s; >= 2 leaves room for a loaded machine
    assert watchdogs >= 2, (watchdogs, statuses)
    assert statuses and all("queue: 0" in st for st in statuses), statuses
    d.proc.send_signal(15)
    stopping = False
    for _, lines in receive(s, time.monotonic() + 30):
        if "STOPPING=1" in lines:
            stopping = True
            break
    assert stopping, d.log()
    assert d.proc.wait(30) == 0
    d.proc = None


def test_no_notify_socket_no_datagrams_and_normal_start(
    short_tmp: Path,
    notify_socket: tuple[socket.socket, Path],
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    """Without NOTIFY_SOCKET (a terminal, launchd) the daemon starts normally and sends
    nothing, even when WATCHDOG_USEC is set."""
    s, _ = notify_socket
    d = daemon_factory(
        watches=[Watch(short_tmp / "ck", "svc/model")], env={"WATCHDOG_USEC": "1000000"}
    )
    with d:
        assert list(receive(s, time.monotonic() + 1.2)) == []
    assert d.proc is None
