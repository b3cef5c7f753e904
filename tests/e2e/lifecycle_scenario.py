"""The six-checkpoint lifecycle scenario the e2e tests share (local storage in
test_best_retention, moto S3 plus gc in test_lifecycle_s3): what is dropped, what retention
must keep and prune, and how a fresh clone of the remote and the real ``gto`` CLI see it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cpvctl.errors import NotFound
from tests.e2e.harness import DaemonProcess, git, wait_for

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
BEST_MOVES = ["v1.0.0", "v1.1.0", "v1.4.0"]
GTO = Path(sys.executable).with_name("gto")


def versions(d: DaemonProcess, every: bool = False) -> list[dict[str, Any]]:
    """Newest first; none while the daemon has not seen the artifact yet."""
    try:
        return d.client().versions(ARTIFACT, all=every)
    except NotFound:
        return []


def drop(d: DaemonProcess, ck: Path, n: int) -> bytes:
    """Checkpoint ``n`` (its bytes returned); the explicit one is a dot-file, which the
    watcher never versions, submitted with the Client."""
    name, loss, explicit = CHECKPOINTS[n]
    version = f"v1.{n}.0"
    data = os.urandom(4096)
    if explicit:
        path = ck / name
        path.write_bytes(data)
        job = d.client().submit(path, ARTIFACT, metrics={"eval_loss": loss}, timeout=60)
        assert job["version"] == version
    else:
        if loss is not None:
            (ck / f"{name}.metrics.json").write_text(json.dumps({"eval_loss": loss}))
        (ck / name).write_bytes(data)
    wait_for(lambda: any(v["version"] == version for v in versions(d, True)), what=version)
    return data


def remote_tags(remote: Path, pattern: str) -> dict[str, str]:
    """tag -> the commit it targets, as a fresh clone of the remote sees them."""
    out = git(remote, "for-each-ref", "--format=%(refname:strip=2) %(*objectname)", "refs/tags")
    pairs = (line.split() for line in out.splitlines())
    return {t: c for t, c in pairs if fnmatch.fnmatchcase(t, pattern)}


def check_remote(short_tmp: Path, remote: Path) -> None:
    """Deregistration and ``best`` tags on the remote, as GTO and a fresh clone read them."""
    tagged = remote_tags(remote, f"{ARTIFACT}@v*")
    deregs = {t: c for t, c in tagged.items() if "!#" in t}
    assert sorted(t.split("!")[0].split("@")[1] for t in deregs) == sorted(PRUNED)
    for tag, commit in deregs.items():  # each on its version's own commit
        assert tagged[tag.split("!")[0]] == commit
    best = remote_tags(remote, f"{ARTIFACT}#best#*")
    assert sorted(best.values()) == sorted(tagged[f"{ARTIFACT}@{v}"] for v in BEST_MOVES)
    counters = [int(t.rsplit("#", 1)[1]) for t in [*deregs, *best]]
    assert len(set(counters)) == len(counters)  # GTO's one counter per artifact
    if not GTO.exists():
        pytest.skip("no gto CLI beside this python")
    clone = short_tmp / "clone"
    subprocess.run(["git", "clone", "-q", str(remote), str(clone)], check=True, timeout=60)
    assert sorted(git(clone, "tag", "-l", f"{ARTIFACT}@*!#*").split()) == sorted(deregs)
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
    assert gto(f"{ARTIFACT}@latest", "--ref").strip() == f"{ARTIFACT}@v1.5.0"
    shutil.rmtree(clone)
