"""Case 10: an event flood. Many tiny checkpoints created as fast as Python can write them
(20,000 in the soak run: far past inotify's queue, so events are lost and only the rescan
finds the rest). Every checkpoint has distinct bytes, so the expected number of versions is
the number of files; each content must be versioned exactly once.

The default run uses fewer files (the daemon makes one Git commit and tag per version, so a
flood is bounded by that throughput); ``-m soak`` runs the full size.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.faults2.helpers import idle, version_tags
from tests.e2e.harness import DaemonProcess, Watch, wait_for

ARTIFACT = "team/flood"
DEFAULT_FILES = int(os.environ.get("CPV_FLOOD_FILES", "200"))
SOAK_FILES = 20_000
DEFAULT_DETECT_FILES = int(os.environ.get("CPV_FLOOD_DETECT_FILES", "2000"))


def flood(ck: Path, n: int, salt: str) -> set[str]:
    """Create ``n`` tiny files with distinct contents; returns their md5s."""
    md5s = set()
    for i in range(n):
        data = f"{salt}-{i}\n".encode()
        md5s.add(hashlib.md5(data).hexdigest())
        # a name with no known format: versioned after the quiet period, no validation
        with open(ck / f"f-{i:05d}.dat", "wb") as f:
            f.write(data)
    return md5s


def run_flood(d: DaemonProcess, ck: Path, n: int, per_version_budget: float) -> None:
    with d:
        t0 = time.monotonic()
        expected = flood(ck, n, salt=os.urandom(4).hex())
        created = time.monotonic() - t0

        def count() -> int:
            return len(d.client(timeout=120).versions(ARTIFACT))

        wait_for(
            lambda: count() >= n,
            timeout=30 + n * per_version_budget,
            interval=1.0,
            what=f"{n} versions",
        )
        wait_for(lambda: idle(d), timeout=60, what="idle")
        elapsed = time.monotonic() - t0
        time.sleep(2.5)  # a rescan more: nothing further may be versioned
        wait_for(lambda: idle(d), timeout=60, what="idle")
        versions = d.client(timeout=120).versions(ARTIFACT)
        status = d.client().status()
    md5s = Counter(v["md5"] for v in versions)
    dupes = {m: c for m, c in md5s.items() if c > 1}
    assert not dupes, f"contents versioned more than once: {list(dupes.items())[:5]}"
    assert set(md5s) == expected
    tags = version_tags(d.registry, ARTIFACT)
    assert len(tags) == len(set(tags)) == n
    assert status["queue"]["failed"] == 0
    overflow = d.log().count("event queue overflowed")
    print(
        f"flood: {n} files created in {created:.1f}s, {len(versions)} versions in "
        f"{elapsed:.1f}s ({n / elapsed:.1f} versions/s), watcher overflows: {overflow}"
    )


def test_event_flood_every_checkpoint_versioned_once(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, ARTIFACT, settle_seconds=0.3)])
    run_flood(d, ck, DEFAULT_FILES, per_version_budget=0.5)


@pytest.mark.soak
@pytest.mark.timeout(6 * 3600)
def test_event_flood_20000_files(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, ARTIFACT, settle_seconds=0.3)])
    run_flood(d, ck, SOAK_FILES, per_version_budget=1.0)


def run_detection_flood(d: DaemonProcess, ck: Path, n: int, budget: float) -> None:
    """The worker paused: every file must be detected, snapshotted and queued exactly once
    (the watcher's side of a flood, without the one-commit-per-version bound)."""
    with d:
        d.client().pause(None)
        t0 = time.monotonic()
        flood(ck, n, salt=os.urandom(4).hex())
        created = time.monotonic() - t0

        def queued() -> int:
            return int(d.client(timeout=120).status()["queue"]["queued"])

        wait_for(lambda: queued() >= n, timeout=budget, interval=1.0, what=f"{n} queued")
        elapsed = time.monotonic() - t0
        time.sleep(2.5)  # another rescan: nothing is queued twice
        assert queued() == n
        overflow = d.log().count("event queue overflowed")
        assert [v for v in d.client().versions(ARTIFACT)] == []
    print(
        f"detection flood: {n} files created in {created:.1f}s, all {n} queued after "
        f"{elapsed:.1f}s ({n / elapsed:.0f}/s), watcher overflows: {overflow}"
    )


def test_event_flood_every_file_detected_and_queued_once(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, ARTIFACT, settle_seconds=0.3)])
    run_detection_flood(d, ck, DEFAULT_DETECT_FILES, budget=120)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_event_flood_20000_files_detected_and_queued_once(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, ARTIFACT, settle_seconds=0.3)])
    run_detection_flood(d, ck, SOAK_FILES, budget=3000)
