"""Case 2: ``kill -9`` the daemon in the middle of a large multipart upload to S3 (moto).

After the restart: one version, bytes identical, and no multipart upload left behind (the
daemon aborts its own interrupted uploads from its journal at start-up).

Default run: 256 MiB (moto keeps every object, and every part, in memory). Soak: 1 GiB.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cpvd.state.queue import JobQueue
from tests.e2e.faults.checks import assert_registry_sound
from tests.e2e.faults.conftest import S3Target, s3_daemon_kw, settled
from tests.e2e.harness import DaemonProcess, Watch, wait_for

ARTIFACT = "llm/big"
MIB = 1024 * 1024


def write_random(path: Path, size: int) -> str:
    h = hashlib.md5()
    with open(path, "wb") as fh:
        for _ in range(size // (16 * MIB)):
            chunk = os.urandom(16 * MIB)
            h.update(chunk)
            fh.write(chunk)
    return h.hexdigest()


def parts_uploaded(s3: S3Target) -> int:
    c = s3.client()
    try:
        ups = c.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
        return sum(
            len(
                c.list_parts(Bucket=s3.bucket, Key=u["Key"], UploadId=u["UploadId"]).get(
                    "Parts", []
                )
            )
            for u in ups
        )
    finally:
        c.close()


def uploads(s3: S3Target) -> list[dict[str, object]]:
    c = s3.client()
    try:
        return list(c.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []))
    finally:
        c.close()


def kill_mid_upload(
    short_tmp: Path,
    bare_remote: Path,
    s3: S3Target,
    daemon_factory: Callable[..., DaemonProcess],
    size: int,
) -> None:
    ck = short_tmp / "ck"
    ck.mkdir()
    d = daemon_factory(watches=[Watch(ck, ARTIFACT)], remote=bare_remote, **s3_daemon_kw(s3))
    d.start()
    tmp = short_tmp / "staging.bin"
    md5 = write_random(tmp, size)
    os.replace(tmp, ck / "model.bin")  # complete when it appears, like Lightning's move
    wait_for(lambda: parts_uploaded(s3) >= 2, timeout=120, interval=0.05, what="parts uploaded")
    d.kill()
    left = uploads(s3)
    assert left, "the kill should have interrupted a multipart upload"
    d.start()
    expected = {md5: ARTIFACT}
    wait_for(lambda: settled(d, bare_remote, expected), timeout=300, interval=0.5,
             what="the version after the restart")  # fmt: skip
    assert [v["version"] for v in d.client().versions(ARTIFACT)] == ["v1.0.0"]
    assert uploads(s3) == [], "multipart uploads left behind"
    assert "aborted 1 incomplete uploads" in d.log_path.read_text()
    assert d.stop() == 0
    assert not list((d.state_dir / "uploads").glob("*.json"))
    # the start-up rescan offers model.bin again while its job resumes: not queued twice
    # (a second job's snapshot would have uploaded the same 256 MiB a second time)
    with JobQueue(d.state_dir / "queue.db") as q:
        assert [j.state for j in q.list(source=str(ck / "model.bin"))] == ["done"]
    assert_registry_sound(bare_remote, expected, local_clones=(d.registry,))


def test_kill_during_a_large_upload(
    short_tmp: Path, bare_remote: Path, s3: S3Target, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    kill_mid_upload(short_tmp, bare_remote, s3, daemon_factory, 256 * MIB)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_kill_during_a_1gib_upload(
    short_tmp: Path, bare_remote: Path, s3: S3Target, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    kill_mid_upload(short_tmp, bare_remote, s3, daemon_factory, 1024 * MIB)
