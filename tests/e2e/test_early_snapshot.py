"""Snapshots taken during the quiet period (cpvd.pipeline.speculative_snapshot), through the
real daemon.

A checkpoint that arrives whole is copied and hashed while its quiet period runs; one that
is written to after it appeared must not be versioned from that early copy, even when the
write leaves its size and mtime as they were.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import DaemonProcess, Watch, events_of, versions_of, wait_for

ARTIFACT = "vision/early"
SETTLE = 1.5


def leftover_snapshots(d: DaemonProcess) -> list[str]:
    return sorted(os.listdir(d.state_dir / "snapshots"))


def queued_early(d: DaemonProcess, path: Path) -> list[bool]:
    return [e["early_snapshot"] for e in events_of(d.socket, "queued") if e["path"] == str(path)]


def rename_in(short_tmp: Path, data: bytes) -> Path:
    """Write ``data`` in a sibling directory and rename it into the watched one, whole."""
    staging = short_tmp / "staging"
    staging.mkdir(exist_ok=True)
    (staging / "epoch-1.bin").write_bytes(data)
    os.rename(staging / "epoch-1.bin", short_tmp / "ck" / "epoch-1.bin")
    return short_tmp / "ck" / "epoch-1.bin"


def test_a_checkpoint_renamed_in_is_snapshotted_during_its_quiet_period(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, ARTIFACT, settle_seconds=SETTLE)])
    data = os.urandom(3 * 1024 * 1024 + 17)
    with d:
        rename_in(short_tmp, data)
        wait_for(lambda: versions_of(d, ARTIFACT) == ["v1.0.0"], what="v1.0.0")
        assert queued_early(d, ck / "epoch-1.bin") == [True]
        got = d.client().pull(ARTIFACT, "v1.0.0", short_tmp / "out")
        assert Path(got).read_bytes() == data
        wait_for(lambda: leftover_snapshots(d) == [], what="the snapshot released")


def test_a_write_after_the_rename_drops_the_early_snapshot(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    d = daemon_factory(watches=[Watch(short_tmp / "ck", ARTIFACT, settle_seconds=SETTLE)])
    old, new = os.urandom(1024 * 1024), os.urandom(1024 * 1024)
    with d:
        path = rename_in(short_tmp, old)
        time.sleep(0.5)  # the early snapshot of ``old`` is taken by now
        st = path.stat()
        with open(path, "r+b") as f:  # kept open: no close event re-offers it
            f.write(new)
            f.flush()
            # the same size and mtime: only the write's event tells the bytes changed
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
            wait_for(lambda: versions_of(d, ARTIFACT) == ["v1.0.0"], what="v1.0.0")
        assert queued_early(d, path) == [False]
        got = d.client().pull(ARTIFACT, "v1.0.0", short_tmp / "out")
        assert Path(got).read_bytes() == new
        wait_for(lambda: leftover_snapshots(d) == [], what="every snapshot released")
