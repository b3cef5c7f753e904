"""``kill -9`` the daemon at random moments of ``cpvctl gc``: afterwards every kept version
is still whole in the storage and pulls back byte-identical, and a rerun of gc finishes.

Default run: 6 kills; soak (``pytest -m soak``): 40. Each round adds orphan objects, so
every gc has thousands of deletions to be killed in the middle of.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.gc_helpers import GcDaemon, deregister
from tests.e2e.harness import Watch, cpvctl, tags, versions_of, wait_for

ART = "team/model"


def add_orphans(storage: Path, n: int, rng: random.Random) -> None:
    """Objects no version references, older than any grace period."""
    old = time.time() - 7 * 86400
    for _ in range(n):
        data = rng.randbytes(64)
        md5 = hashlib.md5(data).hexdigest()
        path = storage / "files" / "md5" / md5[:2] / md5[2:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (old, old))


def assert_kept_whole(storage: Path, kept: dict[str, bytes]) -> None:
    for name, blob in kept.items():
        md5 = hashlib.md5(blob).hexdigest()
        path = storage / "files" / "md5" / md5[:2] / md5[2:]
        assert path.read_bytes() == blob, f"{name}'s object is damaged or gone"


def count_objects(storage: Path) -> int:
    return sum(1 for p in (storage / "files" / "md5").rglob("*") if p.is_file())


def kill_loop(
    short_tmp: Path, bare_remote: Path, make: Callable[..., GcDaemon], rounds: int, seed: int
) -> dict[str, int]:
    """Returns how many kills landed before, during and after a gc's deletions."""
    rng = random.Random(seed)
    ck = short_tmp / "ck"
    d = make(watches=[Watch(ck, ART)], remote=bare_remote, retention={"grace_hours": 0})
    storage = d.root / "storage"
    blobs = [rng.randbytes(3000 + i) for i in range(5)]
    with d:
        for i, blob in enumerate(blobs):
            (ck / f"e{i}.bin").write_bytes(blob)
            wait_for(lambda i=i: len(versions_of(d, ART)) == i + 1, what=f"version {i}")
        wait_for(lambda: len(tags(bare_remote)) == len(blobs), what="all pushed")
    deregister(bare_remote, short_tmp / "colleague", ART, "v1.0.0", "v1.2.0")
    kept = {f"v1.{i}.0": blobs[i] for i in (1, 3, 4)}
    landed = {"before": 0, "during": 0, "after": 0}
    for _ in range(rounds):
        add_orphans(storage, 3000, rng)
        before = count_objects(storage)
        d.start()
        gc = subprocess.Popen(
            [sys.executable, "-m", "cpvctl", "--socket", str(d.socket), "gc"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, 1.5))
        d.kill()
        gc.wait(30)
        assert_kept_whole(storage, kept)
        left = count_objects(storage)
        landed["before" if left == before else "after" if left == len(kept) else "during"] += 1
    with d:
        first = cpvctl(d.socket, "--json", "gc", timeout=120)
        assert first.returncode == 0, first.stderr
        again = json.loads(cpvctl(d.socket, "--json", "gc", timeout=120).stdout)
        assert again["objects_to_delete"] == 0  # the first rerun finished the job
        remaining = {p.name for p in (storage / "files" / "md5").rglob("*") if p.is_file()}
        assert len(remaining) == len(kept)  # only the kept versions' objects are left
        for version, blob in kept.items():
            got = d.client().pull(ART, version, short_tmp / "out" / version)
            assert Path(got).read_bytes() == blob
    return landed


def test_kill_during_gc(
    short_tmp: Path, bare_remote: Path, gc_daemon: Callable[..., GcDaemon]
) -> None:
    print("kills:", kill_loop(short_tmp, bare_remote, gc_daemon, rounds=6, seed=13))


@pytest.mark.soak
def test_kill_during_gc_soak(
    short_tmp: Path, bare_remote: Path, gc_daemon: Callable[..., GcDaemon]
) -> None:
    print("kills:", kill_loop(short_tmp, bare_remote, gc_daemon, rounds=40, seed=1313))
