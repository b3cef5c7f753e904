"""Case 6: three machines (daemons with their own state and registry clones) share one Git
remote and one bucket, and version checkpoints of a shared artifact and of their own at the
same time. The remote must end with every checkpoint exactly once, no tag taken twice, no
commit lost, a linear history.

Default run: 10 checkpoints per machine (5 shared artifact, 5 own). Soak: 30 per machine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.faults.checks import assert_registry_sound
from tests.e2e.faults.conftest import Dropper, S3Target, s3_daemon_kw, settled
from tests.e2e.harness import DaemonProcess, Watch, wait_for

SHARED = "team/shared-model"


def several_machines(
    short_tmp: Path,
    bare_remote: Path,
    s3: S3Target,
    daemon_factory: Callable[..., DaemonProcess],
    dropper_factory: Callable[..., Dropper],
    per_machine: int,
) -> dict[str, int]:
    machines = []
    for name in ("m1", "m2", "m3"):
        shared_dir, own_dir = short_tmp / name / "shared", short_tmp / name / "own"
        own = f"{name}/model"
        d = daemon_factory(
            name=name,
            watches=[Watch(shared_dir, SHARED), Watch(own_dir, own)],
            remote=bare_remote,
            **s3_daemon_kw(s3),
        )
        machines.append((d, shared_dir, own_dir, own))
    for d, *_ in machines:
        d.start()
    droppers = []
    half = per_machine // 2
    for i, (_d, shared_dir, own_dir, own) in enumerate(machines):
        droppers.append(
            dropper_factory(shared_dir, SHARED, half, seed=10 + i, prefix=f"s{i}", pause=(0, 0.2))
        )
        droppers.append(
            dropper_factory(
                own_dir, own, per_machine - half, seed=20 + i, prefix=f"o{i}", pause=(0, 0.2)
            )
        )
    for dr in droppers:
        dr.start()
    for dr in droppers:
        dr.join()
    expected: dict[str, str] = {}
    for dr in droppers:
        expected.update(dr.written)
    for k, (d, *_) in enumerate(machines):
        mine = {**droppers[2 * k].written, **droppers[2 * k + 1].written}
        # a machine's own view: its versions exist (renumbered or not) and are pushed
        wait_for(lambda d=d, mine=mine: settled(d, bare_remote, mine), timeout=180,
                 interval=0.5, what=f"{d.root.name} idle and pushed")  # fmt: skip
    for d, *_ in machines:
        assert d.stop() == 0
    report = assert_registry_sound(
        bare_remote, expected, local_clones=tuple(d.registry for d, *_ in machines)
    )
    assert len(report.versions) == len(expected) == 3 * per_machine
    return {"machines": 3, "versions": len(report.versions), "commits": report.commits}


def test_three_machines_one_registry(
    short_tmp: Path,
    bare_remote: Path,
    s3: S3Target,
    daemon_factory: Callable[..., DaemonProcess],
    dropper_factory: Callable[..., Dropper],
) -> None:
    figures = several_machines(
        short_tmp, bare_remote, s3, daemon_factory, dropper_factory, per_machine=10
    )
    print("several machines:", figures)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_three_machines_one_registry_soak(
    short_tmp: Path,
    bare_remote: Path,
    s3: S3Target,
    daemon_factory: Callable[..., DaemonProcess],
    dropper_factory: Callable[..., Dropper],
) -> None:
    figures = several_machines(
        short_tmp, bare_remote, s3, daemon_factory, dropper_factory, per_machine=30
    )
    print("several machines soak:", figures)
