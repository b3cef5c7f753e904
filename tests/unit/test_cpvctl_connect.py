"""cpvctl waits for a daemon whose accept queue is full, as TCP would, instead of failing at
once with EAGAIN (a Unix socket refuses immediately when its backlog is full)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from cpvctl.client import UnixHTTPConnection


def _full_listener(path: Path) -> tuple[socket.socket, list[socket.socket]]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(0)
    fillers: list[socket.socket] = []
    for _ in range(16):  # fill the backlog until the kernel refuses
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(str(path))
        except BlockingIOError:
            s.close()
            return server, fillers
        fillers.append(s)
    pytest.skip("this kernel never refused a connection to a full backlog")


def test_connect_waits_for_room_in_a_full_backlog(short_tmp: Path) -> None:
    path = short_tmp / "s.sock"
    server, fillers = _full_listener(path)
    accepted: list[socket.socket] = []

    def make_room() -> None:
        for _ in range(len(fillers)):  # the client then fits in the backlog, unaccepted
            conn, _ = server.accept()
            accepted.append(conn)

    timer = threading.Timer(0.3, make_room)
    timer.start()
    conn = UnixHTTPConnection(str(path), timeout=10.0)
    try:
        conn.connect()
        assert conn.sock is not None
    finally:
        timer.join()
        conn.close()
        for s in [*fillers, *accepted, server]:
            s.close()


def test_connect_gives_up_at_its_timeout(short_tmp: Path) -> None:
    path = short_tmp / "s.sock"
    server, fillers = _full_listener(path)
    conn = UnixHTTPConnection(str(path), timeout=0.3)
    try:
        with pytest.raises(BlockingIOError):
            conn.connect()
    finally:
        for s in [*fillers, server]:
            s.close()
