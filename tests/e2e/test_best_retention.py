"""Best and retention through the real daemon, a real bare remote and the real ``gto`` CLI.

Six checkpoints with an ``eval_loss`` (one explicitly submitted, one without the metric):
the stage ``best`` moves only on a strictly lower loss, each stage tag sharing its version's
push; ``keep = { last = 2 }`` deregisters exactly the versions no rule or protection holds,
after they were pushed; a fresh clone and ``gto show`` agree, and so does a second daemon.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cpvctl.errors import NotFound
from tests.e2e.harness import DaemonProcess, Watch, cpvctl, events_of, git, wait_for

ARTIFACT = "team/m"
LIFECYCLE = {
    "best": '{ metric = "eval_loss", mode = "min" }',
    "keep": "{ last = 2 }",
}
#: (name, eval_loss or None, explicitly submitted)
CHECKPOINTS = [
    ("epoch-1.bin", 0.9, False),  # v1.0.0: best (first with the metric)
    ("epoch-2.bin", 0.5, False),  # v1.1.0: best
    (".manual-3.bin", 0.7, True),  # v1.2.0: Client.submit -> protected
    ("epoch-4.bin", None, False),  # v1.3.0: no metric, never best
    ("epoch-5.bin", 0.3, False),  # v1.4.0: best
    ("epoch-6.bin", 0.4, False),  # v1.5.0: newest
]
KEPT = ["v1.5.0", "v1.4.0", "v1.2.0"]
PRUNED = ["v1.3.0", "v1.1.0", "v1.0.0"]
GTO = Path(sys.executable).with_name("gto")


def _versions(d: DaemonProcess, every: bool = False) -> list[dict[str, Any]]:
    """Newest first; none while the daemon has not seen the artifact yet."""
    try:
        return d.client().versions(ARTIFACT, all=every)
    except NotFound:
        return []


def _drop(d: DaemonProcess, ck: Path, n: int) -> None:
    """One checkpoint; the explicit one is a dot-file, which the watcher never versions."""
    name, loss, explicit = CHECKPOINTS[n]
    version = f"v1.{n}.0"
    if explicit:
        path = ck / name
        path.write_bytes(os.urandom(4096))
        job = d.client().submit(path, ARTIFACT, metrics={"eval_loss": loss}, timeout=60)
        assert job["version"] == version
    else:
        if loss is not None:
            (ck / f"{name}.metrics.json").write_text(json.dumps({"eval_loss": loss}))
        (ck / name).write_bytes(os.urandom(4096))
    wait_for(lambda: any(v["version"] == version for v in _versions(d, True)), what=version)


def _remote_tags(remote: Path, pattern: str) -> dict[str, str]:
    """tag -> the commit it targets, as a fresh clone of the remote sees them."""
    out = git(remote, "for-each-ref", "--format=%(refname:strip=2) %(*objectname)", "refs/tags")
    pairs = (line.split() for line in out.splitlines())
    import fnmatch

    return {t: c for t, c in pairs if fnmatch.fnmatchcase(t, pattern)}


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
            _drop(d, ck, n)
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
        assert [m["version"] for m in moved] == ["v1.0.0", "v1.1.0", "v1.4.0"]
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

    _check_remote(short_tmp, bare_remote)
    # another machine on the same remote: a fresh registry clone, the same answer
    other = daemon_factory(
        name="other", watches=[Watch(short_tmp / "ck2", ARTIFACT)], remote=bare_remote,
        storage_url=shared,
    )
    with other:
        assert [v["version"] for v in _versions(other)] == KEPT
        assert [v["version"] for v in _versions(other, True) if v["pruned"]] == PRUNED


def _check_remote(short_tmp: Path, remote: Path) -> None:
    versions = _remote_tags(remote, f"{ARTIFACT}@v*")
    deregs = {t: c for t, c in versions.items() if "!#" in t}
    assert sorted(t.split("!")[0].split("@")[1] for t in deregs) == sorted(PRUNED)
    for tag, commit in deregs.items():  # each on its version's own commit
        assert versions[tag.split("!")[0]] == commit
    best = _remote_tags(remote, f"{ARTIFACT}#best#*")
    assert sorted(best.values()) == sorted(
        versions[f"{ARTIFACT}@{v}"] for v in ("v1.0.0", "v1.1.0", "v1.4.0")
    )
    counters = [int(t.rsplit("#", 1)[1]) for t in [*deregs, *best]]
    assert len(set(counters)) == len(counters)  # GTO's one counter per artifact
    if not GTO.exists():
        pytest.skip("no gto CLI beside this python")
    clone = short_tmp / "clone"
    subprocess.run(["git", "clone", "-q", str(remote), str(clone)], check=True, timeout=60)
    env = {**os.environ, "GTO_NO_ANALYTICS": "1", "ITERATIVE_DO_NOT_TRACK": "1"}

    def gto(*args: str) -> Any:
        out = subprocess.run(
            [str(GTO), "show", *args], cwd=clone, capture_output=True, text=True, env=env,
            check=True, timeout=120,
        )  # fmt: skip
        return out.stdout

    shown = json.loads(gto(ARTIFACT, "--json"))
    assert sorted(v["version"] for v in shown) == sorted(KEPT)
    every = json.loads(gto(ARTIFACT, "-d", "--json"))
    assert sorted(v["version"] for v in every if not v["is_active"]) == sorted(PRUNED)
    assert gto(f"{ARTIFACT}#best", "--ref").strip() == f"{ARTIFACT}@v1.4.0"
    shutil.rmtree(clone)


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
        wait_for(lambda: _remote_tags(bare_remote, f"{ARTIFACT}@v1.0.0!#*"), what="pushed")
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
