"""``pull`` and ``revert`` of a pruned version, through the real daemon, the real ``cpvctl``
CLI and ``cpvctl.Client``: refused (exit 1) with when and why it was pruned; with
``--include-pruned`` they work while its objects exist, and fail naming the missing objects
once gc has deleted them, writing nothing.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cpvctl.errors import Conflict, NotFound
from tests.e2e.gc_helpers import GcDaemon
from tests.e2e.harness import Watch, cpvctl, tags, wait_for

ART = "team/pr"


def _pruned(d: GcDaemon) -> list[str]:
    return [v["version"] for v in d.client().versions(ART, all=True) if v["pruned"]]


def test_pull_and_revert_of_a_pruned_version(
    short_tmp: Path, bare_remote: Path, gc_daemon: Callable[..., GcDaemon]
) -> None:
    ck, out = short_tmp / "ck", short_tmp / "out"
    d = gc_daemon(
        watches=[Watch(ck, ART, extra={"keep": "{ last = 1 }"})],
        remote=bare_remote,
        retention={"grace_hours": 0},
    )
    data = {name: os.urandom(3000 + i) for i, name in enumerate(("a.bin", "b.bin", "c.bin"))}
    with d:
        for i, (name, blob) in enumerate(data.items()):
            (ck / name).write_bytes(blob)
            wait_for(lambda i=i: len(tags(bare_remote, f"{ART}@v*")) > i, what=name)
        wait_for(lambda: _pruned(d) == ["v1.1.0", "v1.0.0"], timeout=60, what="pruned")
        today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")

        # refused, whatever the route, and nothing written
        refused = cpvctl(d.socket, "pull", f"{ART}@v1.0.0", "-o", str(out))
        assert refused.returncode == 1, refused.stderr
        assert f"{ART}@v1.0.0 was pruned on " in refused.stderr
        assert f"(tag {ART}@v1.0.0!#" in refused.stderr and "--include-pruned" in refused.stderr
        assert f"pruned on {today}" in refused.stderr
        assert not out.exists()
        refused = cpvctl(d.socket, "revert", f"{ART}@v1.1.0")
        assert refused.returncode == 1 and "--include-pruned" in refused.stderr
        with pytest.raises(Conflict) as exc:
            d.client().pull(f"{ART}@v1.0.0", out)
        assert exc.value.code == "pruned_version"
        assert cpvctl(d.socket, "show", f"{ART}@v1.0.0").returncode == 0  # metadata stays

        # asked for by name: restored while the objects exist
        ok = cpvctl(d.socket, "pull", f"{ART}@v1.0.0", "-o", str(out), "--include-pruned")
        assert ok.returncode == 0, ok.stderr
        assert (out / "a.bin").read_bytes() == data["a.bin"]
        (ck / "b.bin").unlink()
        ok = cpvctl(d.socket, "revert", f"{ART}@v1.1.0", "--include-pruned")
        assert ok.returncode == 0, ok.stderr
        assert (ck / "b.bin").read_bytes() == data["b.bin"]  # now current: gc keeps it

        done = cpvctl(d.socket, "gc")
        assert done.returncode == 0 and "deleted 1 objects" in done.stdout, done.stdout
        gone = hashlib.md5(data["a.bin"]).hexdigest()
        again = cpvctl(d.socket, "pull", f"{ART}@v1.0.0", "-o", str(short_tmp / "o2"),
                       "--include-pruned")  # fmt: skip
        assert again.returncode == 1
        assert "no longer in" in again.stderr and gone in again.stderr, again.stderr
        assert not (short_tmp / "o2").exists()
        with pytest.raises(NotFound) as missing:
            d.client().revert(f"{ART}@v1.0.0", include_pruned=True)
        assert missing.value.code == "objects_missing" and gone in missing.value.message
        assert (ck / "b.bin").read_bytes() == data["b.bin"]  # the refused revert wrote nothing
