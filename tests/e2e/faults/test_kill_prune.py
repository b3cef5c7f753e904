"""``kill -9`` while retention prunes: no kept version is ever lost, and a restart finishes.

Thirty versions are made with retention off; then ``keep = { last = 3 }`` is switched on
and, with four new checkpoints before each start, the daemon is killed either at a random
moment after it answers (versioning, pushing, pruning) or as soon as its deregistration
tags exist locally (made, maybe not pushed). Afterwards a clean run
must converge: exactly the versions no rule keeps are deregistered (once each, on their own
commits, with distinct GTO counters), every version tag is still on the remote, and every
kept version pulls back byte-identical.

Default run: 6 kills. Soak (``pytest -m soak``): 40 kills.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.faults.conftest import clear_remote_locks
from tests.e2e.harness import DaemonProcess, Watch, git, wait_for

ARTIFACT = "team/kill"
KEEP = {"keep": "{ last = 3 }"}
PER_ROUND = 4  # new checkpoints before each start: versions to push and prune each round


def _drop(ck: Path, n: int, written: dict[str, bytes]) -> None:
    data = os.urandom(3000 + n)
    (ck / f"ckpt-{n:03d}.bin").write_bytes(data)
    written[hashlib.md5(data).hexdigest()] = data


def _all_versions(d: DaemonProcess) -> list[dict[str, object]]:
    return d.client().versions(ARTIFACT, all=True)


def _local_deregs(d: DaemonProcess) -> list[str]:
    return git(d.registry, "tag", "-l", f"{ARTIFACT}@*!#*").split()


def _remote_deregs(remote: Path) -> int:
    return sum("!#" in t for t in _remote_version_tags(remote))


def _remote_version_tags(remote: Path) -> dict[str, str]:
    out = git(remote, "for-each-ref", "--format=%(refname:strip=2) %(*objectname)", "refs/tags")
    return dict(line.split() for line in out.splitlines() if line.startswith(f"{ARTIFACT}@"))


def prune_kill_loop(
    short_tmp: Path,
    bare_remote: Path,
    daemon_factory: Callable[..., DaemonProcess],
    *,
    versions: int,
    rounds: int,
    seed: int,
) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    figures: list[tuple[int, int]] = []  # after each kill: deregistrations (local, remote)
    ck = short_tmp / "ck"
    watch = Watch(ck, ARTIFACT)
    d = daemon_factory(watches=[watch], remote=bare_remote)
    written: dict[str, bytes] = {}
    with d:
        for n in range(versions):
            _drop(ck, n, written)
        wait_for(lambda: len(_all_versions(d)) == versions, timeout=120, what="versions")
        wait_for(lambda: d.client().status()["registry"]["unpushed"] == 0, what="pushed")
    watch.extra = KEEP
    for r in range(rounds):
        for k in range(PER_ROUND):
            _drop(ck, versions + r * PER_ROUND + k, written)
        before = len(_local_deregs(d))
        d.start()
        if r % 2:  # as soon as the deregistration tags exist locally (maybe not pushed)
            wait_for(lambda b=before: len(_local_deregs(d)) > b, interval=0.005, timeout=60)
        else:  # anywhere in versioning, pushing and pruning
            time.sleep(rng.uniform(0.0, 3.0))
        d.kill()
        clear_remote_locks(bare_remote)
        figures.append((len(_local_deregs(d)), _remote_deregs(bare_remote)))
    total = versions + rounds * PER_ROUND
    with d:
        wait_for(lambda: len(_all_versions(d)) == total, timeout=120, what="every version")

        def converged() -> bool:
            vs = _all_versions(d)
            return [v["version"] for v in vs if not v["pruned"]] == [
                v["version"] for v in vs[:3]
            ] and d.client().status()["registry"]["unpushed"] == 0

        wait_for(converged, timeout=120, what="pruning finished")
        kept = [v for v in _all_versions(d) if not v["pruned"]]
        wait_for(lambda: _remote_deregs(bare_remote) == total - 3, what="remote deregistrations")
        for v in kept:  # every kept version pulls back exactly
            got = d.client().pull(
                ARTIFACT, str(v["version"]), short_tmp / "out" / str(v["version"])
            )
            assert Path(got).read_bytes() == written[str(v["md5"])]
    tags = _remote_version_tags(bare_remote)
    version_tags = {t: c for t, c in tags.items() if "!#" not in t}
    deregs = {t: c for t, c in tags.items() if "!#" in t}
    assert len(version_tags) == total  # nothing lost, nothing made twice
    pruned = [t.split("!")[0] for t in deregs]
    assert len(set(pruned)) == len(pruned)  # each version deregistered once
    assert all(version_tags[t.split("!")[0]] == c for t, c in deregs.items())
    counters = [int(t.rsplit("#", 1)[1]) for t in deregs]
    assert len(set(counters)) == len(counters)
    return figures


def test_kill_during_pruning(
    short_tmp: Path, bare_remote: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    figures = prune_kill_loop(
        short_tmp, bare_remote, daemon_factory, versions=30, rounds=6, seed=13
    )
    print("deregistrations after each kill (local, remote):", figures)


@pytest.mark.soak
def test_kill_during_pruning_soak(
    short_tmp: Path, bare_remote: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    figures = prune_kill_loop(
        short_tmp, bare_remote, daemon_factory, versions=60, rounds=40, seed=31
    )
    print("deregistrations after each kill (local, remote):", figures)
