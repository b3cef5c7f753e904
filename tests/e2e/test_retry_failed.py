"""``cpvctl retry`` of a failed job can succeed (issue 15 #10), through the real daemon.

A failed job's snapshot is released; a retry takes a new snapshot of its checkpoint as it is
now. Only when the checkpoint is gone too does the job end ``skipped``, saying so.

The storage is made to refuse every write (a file where its ``files/`` directory belongs),
so each job fails for good after its attempts; then it is repaired and the jobs retried.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import DaemonProcess, Watch, cpvctl, versions_of, wait_for


def jobs(d: DaemonProcess, state: str) -> list[dict[str, object]]:
    return [j for j in d.client().status()["jobs"] if j["state"] == state]


def test_a_retried_failed_job_snapshots_its_checkpoint_again(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, "r/a")], extra_daemon={"retry_max_seconds": 0.05})
    with d:
        blocker = d.root / "storage" / "files"
        if blocker.is_dir():
            shutil.rmtree(blocker)
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_bytes(b"not a directory")
        kept, gone = os.urandom(6000), os.urandom(7000)
        (ck / "kept.bin").write_bytes(kept)
        wait_for(lambda: len(jobs(d, "failed")) == 1, timeout=60, what="the first job failed")
        (ck / "gone.bin").write_bytes(gone)
        wait_for(lambda: len(jobs(d, "failed")) == 2, timeout=60, what="both jobs failed")
        by_source = {str(j["source"]): str(j["id"]) for j in jobs(d, "failed")}
        (ck / "gone.bin").unlink()
        blocker.unlink()

        res = cpvctl(d.socket, "retry", by_source[str(ck / "kept.bin")])
        assert res.returncode == 0, res.stderr
        wait_for(lambda: versions_of(d, "r/a") == ["v1.0.0"], timeout=60, what="r/a v1.0.0")
        info = d.client().show("r/a", "v1.0.0")
        assert info["md5"] == hashlib.md5(kept).hexdigest() and info["size"] == len(kept)
        out = short_tmp / "out"
        res = cpvctl(d.socket, "pull", "r/a@v1.0.0", "-o", str(out))
        assert res.returncode == 0, res.stderr
        assert (out / "kept.bin").read_bytes() == kept

        res = cpvctl(d.socket, "retry", by_source[str(ck / "gone.bin")])
        assert res.returncode == 0, res.stderr
        job_id = by_source[str(ck / "gone.bin")]
        wait_for(
            lambda: d.client().job(job_id)["state"] == "skipped", timeout=60, what="skipped"
        )
        assert d.client().job(job_id)["result"]["reason"] == "snapshot and source both gone"
        assert versions_of(d, "r/a") == ["v1.0.0"]
