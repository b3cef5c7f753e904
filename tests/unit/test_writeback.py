"""Writeback: big snapshot files flushed on one short-lived background thread."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from cpvd.pipeline.writeback import Writeback


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def writeback_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "cpvd-writeback"]


def no_writeback_thread_soon() -> bool:
    deadline = time.monotonic() + 2
    while writeback_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not writeback_threads()


class GatedSync:
    """A stand-in flush that records the inode it was given, once ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.synced: list[int] = []

    def __call__(self, fd: int) -> None:
        self.gate.wait(5)
        self.synced.append(os.fstat(fd).st_ino)


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    out = []
    for i in range(4):
        p = tmp_path / f"f{i}"
        p.write_bytes(os.urandom(4096))
        out.append(p)
    return out


def test_files_from_the_threshold_up_are_flushed_and_their_duplicates_closed(
    files: list[Path],
) -> None:
    synced: list[int] = []  # inode numbers, read on the writeback thread
    wb = Writeback(min_bytes=100, sync=lambda fd: synced.append(os.fstat(fd).st_ino))
    before = open_fds()
    fds = [os.open(p, os.O_RDONLY) for p in files]
    try:
        assert wb.start(fds[0], 99) is False  # below the threshold: left to the kernel
        assert [wb.start(fd, 100) for fd in fds[1:]] == [True, True, True]
        assert wb.wait_idle(5)
    finally:
        for fd in fds:
            os.close(fd)
    assert synced == [p.stat().st_ino for p in files[1:]]  # in order, the small one not
    assert open_fds() == before  # every duplicate closed; the caller's fds stay the caller's
    assert no_writeback_thread_soon()


def test_a_failed_flush_is_logged_and_the_next_ones_still_run(
    files: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    synced: list[int] = []

    def sync(fd: int) -> None:
        if not synced:
            synced.append(-1)
            raise OSError(5, "Input/output error")
        synced.append(os.fstat(fd).st_ino)

    wb = Writeback(min_bytes=1, sync=sync)
    before = open_fds()
    caplog.set_level(logging.DEBUG, logger="cpvd.pipeline.writeback")
    for p in files[:3]:
        fd = os.open(p, os.O_RDONLY)
        wb.start(fd, 10)
        os.close(fd)  # the caller may close its own fd at once
    assert wb.wait_idle(5)
    assert synced == [-1, files[1].stat().st_ino, files[2].stat().st_ino]
    assert "Input/output error" in caplog.text
    assert open_fds() == before
    assert no_writeback_thread_soon()


def test_the_thread_starts_again_after_going_idle(files: list[Path]) -> None:
    sync = GatedSync()
    gate, synced = sync.gate, sync.synced
    wb = Writeback(min_bytes=1, sync=sync)
    fds = [os.open(p, os.O_RDONLY) for p in files[:3]]
    try:
        wb.start(fds[0], 1)
        wb.start(fds[1], 1)  # queued behind the first, on the same thread
        assert len(writeback_threads()) == 1
        assert not wb.wait_idle(0.05)  # still flushing
        gate.set()
        assert wb.wait_idle(5) and len(synced) == 2
        assert no_writeback_thread_soon()
        wb.start(fds[2], 1)  # idle, the thread gone: a new one takes it
        assert wb.wait_idle(5) and len(synced) == 3
    finally:
        for fd in fds:
            os.close(fd)
    assert synced == [p.stat().st_ino for p in files[:3]]
    assert no_writeback_thread_soon()


def test_a_growing_file_asked_for_again_while_waiting_is_flushed_once(
    files: list[Path],
) -> None:
    """The snapshot asks again every 128 MiB copied: requests that pile up behind a slow
    flush collapse into one, which then covers everything written so far."""
    sync = GatedSync()
    gate, synced = sync.gate, sync.synced
    wb = Writeback(min_bytes=1, sync=sync)
    before = open_fds()
    busy = os.open(files[0], os.O_RDONLY)
    growing = os.open(files[1], os.O_RDONLY)
    try:
        wb.start(busy, 1)
        deadline = time.monotonic() + 5
        while wb._queued and time.monotonic() < deadline:  # the first one is taken
            time.sleep(0.005)
        assert [wb.start(growing, 1) for _ in range(5)] == [True] * 5
        gate.set()
        assert wb.wait_idle(5)
        wb.start(growing, 1)  # after its flush ran: flushed again (new pages may be dirty)
        assert wb.wait_idle(5)
    finally:
        os.close(busy)
        os.close(growing)
    ino = files[1].stat().st_ino
    assert synced == [files[0].stat().st_ino, ino, ino]
    assert open_fds() == before


def test_the_real_flush_leaves_the_file_whole(tmp_path: Path) -> None:
    """The default sync (fdatasync) on a real file: nothing changes but the page state."""
    p = tmp_path / "big"
    data = os.urandom(2 * 1024 * 1024)
    p.write_bytes(data)
    wb = Writeback(min_bytes=1)
    fd = os.open(p, os.O_RDONLY)
    try:
        assert wb.start(fd, len(data))
        assert wb.wait_idle(30)
    finally:
        os.close(fd)
    assert p.read_bytes() == data
