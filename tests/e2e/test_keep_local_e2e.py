"""keep_local through the real daemon: old checkpoints go once versioned and pushed; the
newest, a staged one and a planted symlink stay; each deletion is an event."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.e2e.gc_helpers import GcDaemon
from tests.e2e.harness import Watch, events_of, tags, versions_of, wait_for

ART = "team/model"


def test_keep_local_deletes_old_pushed_checkpoints_only(
    short_tmp: Path, bare_remote: Path, gc_daemon: Callable[..., GcDaemon]
) -> None:
    ck, outside = short_tmp / "ck", short_tmp / "outside"
    ck.mkdir()
    outside.mkdir()
    (outside / "precious.bin").write_bytes(b"not the daemon's")
    os.symlink(outside / "precious.bin", ck / "aaa-link.bin")
    d = gc_daemon(watches=[Watch(ck, ART)], remote=bare_remote, keep_local={ART: 1})
    blobs = {name: os.urandom(2000 + i) for i, name in enumerate(["a.bin", "b.bin", "c.bin"])}
    with d:
        (ck / "a.bin").write_bytes(blobs["a.bin"])
        wait_for(lambda: len(tags(bare_remote)) == 1, what="v1.0.0 pushed")
        d.client().promote(ART, "v1.0.0", "prod")  # a staged version's checkpoint stays
        for n, name in ((2, "b.bin"), (3, "c.bin")):
            (ck / name).write_bytes(blobs[name])
            wait_for(lambda n=n: len(tags(bare_remote)) == n, what=f"{name} pushed")
        wait_for(lambda: not (ck / "b.bin").exists(), what="b.bin deleted")
        assert (ck / "a.bin").read_bytes() == blobs["a.bin"]  # staged
        assert (ck / "c.bin").read_bytes() == blobs["c.bin"]  # the newest
        assert (ck / "aaa-link.bin").is_symlink()
        assert (outside / "precious.bin").read_bytes() == b"not the daemon's"
        deleted = events_of(d.socket, "local.deleted")
        assert [(e["path"], e["version"]) for e in deleted] == [(str(ck / "b.bin"), "v1.1.0")]
        assert "keep_local: deleted" in d.log_path.read_text()
        # the deleted checkpoint is still a version, and is not versioned again
        got = d.client().pull(ART, "v1.1.0", short_tmp / "out")
        assert Path(got).read_bytes() == blobs["b.bin"]
        assert len(versions_of(d, ART)) == 3
