"""The product's main promise, through the real daemon: drop a checkpoint, get a version."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import DaemonProcess, Watch, git, tags, wait_for


def current_versions(d: DaemonProcess, artifact: str) -> list[str]:
    return [v["version"] for v in d.client().versions(artifact)]


def test_drop_files_get_versions_and_revert_and_pull(
    short_tmp: Path, bare_remote: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, "vision/resnet50")], remote=bare_remote)
    with d:
        (ck / "epoch-1.bin").write_bytes(b"one" * 1000)
        wait_for(lambda: current_versions(d, "vision/resnet50") == ["v1.0.0"], what="v1.0.0")
        (ck / "epoch-2.bin").write_bytes(b"two" * 1000)
        wait_for(
            lambda: current_versions(d, "vision/resnet50") == ["v1.1.0", "v1.0.0"], what="v1.1.0"
        )
        # the same bytes again under another name: no new version
        (ck / "copy.bin").write_bytes(b"two" * 1000)

        def settled_unchanged() -> bool:
            q = d.client().status()["queue"]
            return bool(q["depth"] == 0 and q.get("unchanged", 0) + q.get("skipped", 0) >= 1)

        wait_for(settled_unchanged, what="unchanged job")
        assert current_versions(d, "vision/resnet50") == ["v1.1.0", "v1.0.0"]
        # pushed to the remote promptly
        wait_for(lambda: len(tags(bare_remote)) == 2, what="tags on the remote")
        # revert v1.0.0: the file comes back and is not versioned again
        (ck / "epoch-1.bin").unlink()
        out = d.client().revert("vision/resnet50", "v1.0.0")
        assert out["reverted"][0]["path"] == str(ck / "epoch-1.bin")
        assert (ck / "epoch-1.bin").read_bytes() == b"one" * 1000
        shown = d.client().show("vision/resnet50", "v1.0.0")
        assert shown["current"] is True
        # pull gives back the exact bytes
        got = d.client().pull("vision/resnet50", "v1.1.0", short_tmp / "out")
        assert Path(got).read_bytes() == b"two" * 1000
        # the next checkpoint continues the numbering, parent = the reverted-to version
        (ck / "epoch-3.bin").write_bytes(os.urandom(5000))
        wait_for(lambda: current_versions(d, "vision/resnet50")[0] == "v1.2.0", what="v1.2.0")
        assert d.client().show("vision/resnet50", "v1.2.0")["parent"] == "v1.0.0"
        assert len(current_versions(d, "vision/resnet50")) == 3
    # a restart versions nothing twice
    with d:
        d.client().status()
        import time

        time.sleep(2.5)  # > settle + one rescan period
        assert current_versions(d, "vision/resnet50") == ["v1.2.0", "v1.1.0", "v1.0.0"]
    assert git(bare_remote, "rev-parse", "main") == git(d.registry, "rev-parse", "HEAD")
