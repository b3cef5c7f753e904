"""Case 1: ``kill -9`` the daemon at random moments while checkpoints keep arriving.

The promise under test: a crash loses nothing and tags nothing twice. Every distinct
checkpoint ends as exactly one version, pushed, and pulls back byte-identical.

Default run: 10 kills over a stream of 30 checkpoints. Soak (``pytest -m soak``): 200 kills
over 200 checkpoints (a kill roughly every checkpoint).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.faults.checks import assert_registry_sound
from tests.e2e.faults.conftest import (
    Dropper,
    S3Target,
    clear_remote_locks,
    s3_daemon_kw,
    settled,
)
from tests.e2e.harness import DaemonProcess, Watch, wait_for

ARTIFACT = "vision/resnet50"


def diagnose(d: DaemonProcess, expected: dict[str, str]) -> str:
    """What a stuck end state looks like: status, the checkpoints missing, the daemon log."""
    st = d.client().status()
    have = {v["md5"]: v["version"] for v in d.client().versions(ARTIFACT)}
    missing = sorted(m for m in expected if m not in have)
    return (
        f"queue: {st['queue']}\njobs: {st['jobs']}\nwaiting: {st['waiting']}\n"
        f"registry: {st['registry']}\nmissing: {missing}\n--- log ---\n{d.log()}"
    )


def kill_loop(
    short_tmp: Path,
    bare_remote: Path,
    s3: S3Target,
    daemon_factory: Callable[..., DaemonProcess],
    dropper_factory: Callable[..., Dropper],
    *,
    rounds: int,
    checkpoints: int,
    seed: int,
) -> dict[str, int]:
    rng = random.Random(seed)
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, ARTIFACT)], remote=bare_remote, **s3_daemon_kw(s3))
    d.start()
    # spread the drops over the kill rounds (~1.3 s per round on average)
    per = max(0.02, 1.3 * rounds / checkpoints)
    drop = dropper_factory(ck, ARTIFACT, checkpoints, pause=(per * 0.3, per * 1.7), seed=seed)
    drop.start()
    kills = 0
    remote_locks = 0  # locks a killed receive-pack left in the (local) remote
    for i in range(rounds):
        time.sleep(rng.uniform(0.1, 1.5))
        d.kill()
        kills += 1
        remote_locks += len(clear_remote_locks(bare_remote))
        # a third of the rounds kill during start-up (recovery itself must survive a kill)
        if i % 3 == 2:
            d.start(wait=False)
            time.sleep(rng.uniform(0.2, 1.5))
            d.kill()
            kills += 1
            remote_locks += len(clear_remote_locks(bare_remote))
        d.start()
    drop.join()
    try:
        wait_for(
            lambda: settled(d, bare_remote, drop.written),
            timeout=120,
            interval=0.5,
            what="all versioned",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnose(d, drop.written)}") from None
    versions = d.client().versions(ARTIFACT)
    assert d.stop() == 0
    report = assert_registry_sound(bare_remote, drop.written, local_clones=(d.registry,))
    assert len(versions) == checkpoints == len(report.versions)
    return {
        "kills": kills,
        "checkpoints": checkpoints,
        "pulled": report.pulled,
        "remote_locks_cleared": remote_locks,
    }


def test_kill_loop(
    short_tmp: Path,
    bare_remote: Path,
    s3: S3Target,
    daemon_factory: Callable[..., DaemonProcess],
    dropper_factory: Callable[..., Dropper],
) -> None:
    figures = kill_loop(
        short_tmp, bare_remote, s3, daemon_factory, dropper_factory,
        rounds=10, checkpoints=30, seed=1,
    )  # fmt: skip
    print("kill loop:", figures)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_kill_loop_soak(
    short_tmp: Path,
    bare_remote: Path,
    s3: S3Target,
    daemon_factory: Callable[..., DaemonProcess],
    dropper_factory: Callable[..., Dropper],
) -> None:
    figures = kill_loop(
        short_tmp, bare_remote, s3, daemon_factory, dropper_factory,
        rounds=200, checkpoints=200, seed=2,
    )  # fmt: skip
    print("kill loop soak:", figures)
