"""Case 8: the state directory's filesystem is full.

The state dir is a small tmpfs (root only; skipped otherwise). A checkpoint larger than the
free space must give a clear error (events, status, log), leave the source intact, and be
versioned by itself once space returns (a bigger mount, or a filler file deleted).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.faults2.helpers import EventLog, idle
from tests.e2e.harness import DaemonProcess, Watch, wait_for

ARTIFACT = "team/diskfull"


def _mount(cmd: list[str]) -> bool:
    return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0


@pytest.fixture
def small_state(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> Iterator[DaemonProcess]:
    """A daemon whose state dir is an 8 MiB tmpfs; unmounted after the daemon is gone."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    d = daemon_factory(watches=[Watch(short_tmp / "ck", ARTIFACT, settle_seconds=0.2)])
    d.state_dir.mkdir(parents=True)
    if not _mount(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(d.state_dir)]):
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield d
    finally:
        with contextlib.suppress(Exception):
            d.kill()
        if not _mount(["umount", str(d.state_dir)]):
            _mount(["umount", "-l", str(d.state_dir)])


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def versioned(events: EventLog, path: Path) -> list[dict[str, object]]:
    return [e for e in events.of("versioned") if e.get("path") == str(path)]


def check_full_reported(d: DaemonProcess, events: EventLog, path: Path) -> None:
    failed = events.wait(
        lambda ev: [e for e in ev.of("failed") if e.get("path") == str(path)],
        what=f"a failed event naming {path}",
    )
    msg = str(failed[0].get("error"))
    assert "no space left" in msg.lower() and str(d.state_dir) in msg, failed
    waiting = wait_for(
        lambda: [w for w in d.client().status()["waiting"] if w["path"] == str(path)],
        what="status listing the checkpoint as waiting",
    )
    assert "no space left" in waiting[0]["reason"].lower(), waiting
    assert "no space left" in d.log().lower()


def test_checkpoint_bigger_than_free_space_resumes_after_remount(
    small_state: DaemonProcess, short_tmp: Path
) -> None:
    d = small_state
    ck = short_tmp / "ck"
    with d:
        events = EventLog(d)
        try:
            (ck / "small.bin").write_bytes(os.urandom(100_000))
            events.wait(lambda ev: versioned(ev, ck / "small.bin"), what="small.bin versioned")
            big = ck / "big.bin"
            data = os.urandom(12 << 20)
            assert len(data) > free_bytes(d.state_dir)
            big.write_bytes(data)
            check_full_reported(d, events, big)
            assert hashlib.md5(big.read_bytes()).hexdigest() == hashlib.md5(data).hexdigest()
            assert d.proc is not None and d.proc.poll() is None
            # the failed copy left nothing behind: the small filesystem is not kept full
            assert free_bytes(d.state_dir) > 6 << 20
            assert _mount(["mount", "-o", "remount,size=64m", str(d.state_dir)])
            got = events.wait(
                lambda ev: versioned(ev, big), timeout=60, what="big.bin versioned after remount"
            )
            assert got[0]["md5"] == hashlib.md5(data).hexdigest()
            wait_for(lambda: idle(d), what="idle")
            assert not [w for w in d.client().status()["waiting"] if w["path"] == str(big)]
            assert big.read_bytes() == data
        finally:
            events.close()


def test_full_disk_from_a_filler_resumes_when_the_filler_is_deleted(
    small_state: DaemonProcess, short_tmp: Path
) -> None:
    d = small_state
    ck = short_tmp / "ck"
    with d:
        events = EventLog(d)
        try:
            (ck / "first.bin").write_bytes(os.urandom(50_000))
            events.wait(lambda ev: versioned(ev, ck / "first.bin"), what="first.bin versioned")
            filler = d.state_dir / "filler"
            with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * (64 << 10))
            assert free_bytes(d.state_dir) < 64 << 10
            second = ck / "second.bin"
            data = os.urandom(1 << 20)
            second.write_bytes(data)
            check_full_reported(d, events, second)
            assert d.proc is not None and d.proc.poll() is None
            filler.unlink()
            events.wait(lambda ev: versioned(ev, second), timeout=60, what="versioned after")
            wait_for(lambda: idle(d), what="idle")
            assert second.read_bytes() == data
            # and the daemon keeps working normally
            (ck / "third.bin").write_bytes(os.urandom(50_000))
            events.wait(lambda ev: versioned(ev, ck / "third.bin"), what="third.bin versioned")
        finally:
            events.close()
        assert [v["version"] for v in d.client().versions(ARTIFACT)] == [
            "v1.2.0",
            "v1.1.0",
            "v1.0.0",
        ]


def test_disk_filling_up_under_queued_work_does_not_stop_the_worker(
    small_state: DaemonProcess, short_tmp: Path
) -> None:
    """The snapshot is taken, then the disk fills before the worker runs the job: the queue
    database's own writes may fail; the job must still be versioned once there is room."""
    d = small_state
    ck = short_tmp / "ck"
    with d:
        events = EventLog(d)
        try:
            d.client().pause(None)
            queued = ck / "queued.bin"
            data = os.urandom(200_000)
            queued.write_bytes(data)
            events.wait(lambda ev: ev.of("queued"), what="queued")
            filler = d.state_dir / "filler"
            with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 4096)
            d.client().resume(None)
            failed = events.wait(lambda ev: ev.of("failed"), what="the failure published")
            assert "free space" in str(failed[0]["error"]).lower(), failed
            assert str(d.state_dir) in str(failed[0]["error"]), failed
            time.sleep(2)  # a retry or two while still full
            assert d.proc is not None and d.proc.poll() is None
            filler.unlink()
            events.wait(lambda ev: versioned(ev, queued), timeout=60, what="versioned after")
            (ck / "next.bin").write_bytes(os.urandom(50_000))
            events.wait(lambda ev: versioned(ev, ck / "next.bin"), what="next.bin versioned")
        finally:
            events.close()
