"""sd_notify against a real AF_UNIX datagram socket the test owns (what systemd does)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpvd.service import sdnotify
from cpvd.service.sdnotify import Notifier


@pytest.fixture
def listener(short_tmp: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd's notify socket."""
    path = str(short_tmp / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield sock, path
    finally:
        sock.close()


def _recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode("utf-8")


def test_disabled_without_notify_socket() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    assert n.status("queue: 1") is False
    assert n.watchdog_interval() is None


def test_each_message_is_one_datagram(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready() is True
    assert _recv(sock) == "READY=1"
    assert n.status("queue: 3")
    assert _recv(sock) == "STATUS=queue: 3"
    assert n.watchdog()
    assert _recv(sock) == "WATCHDOG=1"
    assert n.extend_timeout(90)
    assert _recv(sock) == "EXTEND_TIMEOUT_USEC=90000000"
    assert n.stopping()
    assert _recv(sock) == "STOPPING=1"
    assert n.notify("READY=1", "STATUS=up")
    assert _recv(sock) == "READY=1\nSTATUS=up"


def test_status_never_injects_extra_assignments(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    Notifier({"NOTIFY_SOCKET": path}).status("queue: 2\nREADY=1")
    assert _recv(sock) == "STATUS=queue: 2 READY=1"
    with pytest.raises(ValueError):
        Notifier({"NOTIFY_SOCKET": path}).notify("READY=1\nSTOPPING=1")


def test_abstract_namespace_address() -> None:
    name = f"cpv-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert _recv(sock) == "READY=1"


def test_unreachable_socket_is_logged_not_raised(
    short_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(short_tmp / "gone.sock")})
    assert n.enabled
    assert n.ready() is False
    assert "sd_notify READY failed" in caplog.text


def test_full_receiver_does_not_block_forever(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd busy (its queue full) must cost a bounded wait, not a stalled daemon."""
    monkeypatch.setattr(sdnotify, "SEND_TIMEOUT", 0.05)
    _, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.watchdog() is True
    sent = 1
    while n.watchdog() and sent < 100_000:  # the kernel queues a few hundred, then refuses
        sent += 1
    assert sent < 100_000


def test_not_a_unix_address_disables() -> None:
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled
    assert not Notifier({"NOTIFY_SOCKET": ""}).enabled


@pytest.mark.parametrize(
    ("env", "timeout"),
    [
        ({"WATCHDOG_USEC": "10000000"}, 10.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}, 10.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "nope"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "ten"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout(env: dict[str, str], timeout: float | None) -> None:
    n = Notifier({"NOTIFY_SOCKET": "/run/systemd/notify", **env})
    assert n.watchdog_timeout() == timeout
    assert n.watchdog_interval() == (None if timeout is None else timeout / 2)


def test_watchdog_needs_notify_socket() -> None:
    assert Notifier({"WATCHDOG_USEC": "10000000"}).watchdog_interval() is None


def test_unset_environment_hides_it_from_children(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    n = Notifier(env, unset_environment=True)
    assert env == {}
    assert n.watchdog_interval() == 2.0
    assert n.watchdog()
    assert _recv(sock) == "WATCHDOG=1"
