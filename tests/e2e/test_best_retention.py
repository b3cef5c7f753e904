"""Best and retention through the real daemon, a real bare remote and the real ``gto`` CLI.

Six checkpoints with an ``eval_loss`` (one explicitly submitted, one without the metric):
the stage ``best`` moves only on a strictly lower loss, each stage tag sharing its version's
push; ``keep = { last = 2 }`` deregisters exactly the versions no rule or protection holds,
after they were pushed; a fresh clone and ``gto show`` agree, and so does a second daemon.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import DaemonProcess, Watch, cpvctl, events_of, wait_for
from tests.e2e.lifecycle_scenario import (
    ARTIFACT,
    BEST_MOVES,
    CHECKPOINTS,
    KEPT,
    LIFECYCLE,
    PRUNED,
    check_remote,
    drop,
    remote_tags,
)
from tests.e2e.lifecycle_scenario import versions as _versions


def test_best_moves_and_retention_prunes_what_no_rule_keeps(
    short_tmp: Path, bare_remote: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    ck = short_tmp / "ck"
    shared = str(short_tmp / "storage")  # machines on one registry share its storage
    d = daemon_factory(
        watches=[Watch(ck, ARTIFACT, extra=LIFECYCLE)], remote=bare_remote, storage_url=shared
    )
    with d:
        for n in range(len(CHECKPOINTS)):
            drop(d, ck, n)
        wait_for(
            lambda: [v["version"] for v in _versions(d)] == KEPT,
            timeout=60,
            what="retention done",
        )
        every = {v["version"]: v for v in _versions(d, every=True)}
        assert [v for v, i in every.items() if i["pruned"]] == PRUNED
        assert every["v1.4.0"]["stages"] == ["best"]
        # best moved 0.9 -> 0.5 -> 0.3 (never to 0.7, 0.4, nor the version without a loss)
        moved = wait_for(lambda: events_of(d.socket, "stage.moved"), what="stage events")
        assert [m["version"] for m in moved] == BEST_MOVES
        pruned = events_of(d.socket, "version.pruned")
        assert sorted(p["version"] for p in pruned) == sorted(PRUNED)
        status = d.client().status()["artifacts"]
        assert status == [
            {
                "artifact": ARTIFACT, "latest": "v1.5.0", "best": "v1.4.0",
                "metric": "eval_loss", "kept": 3, "pruned": 3, "bytes": 3 * 4096,
                "without_metric": ["v1.3.0"], "without_metric_count": 1,
            }
        ]  # fmt: skip
        text = cpvctl(d.socket, "versions", ARTIFACT, "--all", check=True).stdout
        assert "v1.3.0 (pruned)" in text and "v1.5.0 (pruned)" not in text
        assert "(pruned)" not in cpvctl(d.socket, "versions", ARTIFACT, check=True).stdout
        assert "v1.3.0" in cpvctl(d.socket, "status", check=True).stdout  # without metric

    check_remote(short_tmp, bare_remote)
    # another machine on the same remote: a fresh registry clone, the same answer
    other = daemon_factory(
        name="other", watches=[Watch(short_tmp / "ck2", ARTIFACT)], remote=bare_remote,
        storage_url=shared,
    )
    with other:
        assert [v["version"] for v in _versions(other)] == KEPT
        assert [v["version"] for v in _versions(other, True) if v["pruned"]] == PRUNED


def test_a_version_pruned_on_one_machine_is_pruned_on_another_after_its_fetch(
    short_tmp: Path, bare_remote: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    a_ck, b_ck = short_tmp / "a", short_tmp / "b"
    shared = str(short_tmp / "storage")  # machines on one registry share its storage
    a = daemon_factory(
        name="ma", watches=[Watch(a_ck, ARTIFACT, extra={"keep": "{ last = 1 }"})],
        remote=bare_remote, storage_url=shared,
    )  # fmt: skip
    b = daemon_factory(
        name="mb", watches=[Watch(b_ck, "team/other")], remote=bare_remote, storage_url=shared
    )
    with a, b:
        (a_ck / "one.bin").write_bytes(os.urandom(2048))
        wait_for(lambda: [v["version"] for v in _versions(a)] == ["v1.0.0"], what="A v1.0.0")
        (b_ck / "x.bin").write_bytes(os.urandom(2048))  # B pushes, so fetches A's v1.0.0
        wait_for(lambda: [v["version"] for v in _versions(b)] == ["v1.0.0"], what="B sees A")
        (a_ck / "two.bin").write_bytes(os.urandom(2048))
        wait_for(lambda: [v["version"] for v in _versions(a)] == ["v1.1.0"], what="A prunes")
        wait_for(lambda: remote_tags(bare_remote, f"{ARTIFACT}@v1.0.0!#*"), what="pushed")
        (b_ck / "y.bin").write_bytes(os.urandom(2048))  # B's next push fetches the tags
        wait_for(
            lambda: (
                [(v["version"], v["pruned"]) for v in _versions(b, every=True)]
                == [("v1.1.0", False), ("v1.0.0", True)]
            ),
            timeout=60,
            what="B sees the deregistration",
        )
        assert [v["version"] for v in _versions(b)] == ["v1.1.0"]
