"""Case 2: ``kill -9`` the daemon in the middle of a large multipart upload to S3 (moto).

After the restart the upload is resumed, not started over: the daemon lists the parts S3
holds and sends only the others (an ``upload.resumed`` event says how many bytes it spared
and how many it sends a second time: at most the parts in flight at the kill). Then: one
version, bytes identical, and no multipart upload left behind. The storage is reached
through a TCP proxy that counts the bytes going up, so what the event claims is checked
against the wire.

Default run: 256 MiB (moto keeps every object, and every part, in memory). Soak: 1 GiB.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from cpvd.state.queue import JobQueue
from tests.e2e.faults.checks import assert_registry_sound
from tests.e2e.faults.conftest import S3Target, s3_daemon_kw, settled
from tests.e2e.faults.proxy import FaultProxy
from tests.e2e.harness import DaemonProcess, Watch, wait_for

ARTIFACT = "llm/big"
MIB = 1024 * 1024
PART_MB, CONCURRENCY = 5, 4


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


def resumed_events(d: DaemonProcess) -> list[dict[str, Any]]:
    events = d.client().recent_events(count=1000)["events"]
    return [e["data"] for e in events if e["type"] == "upload.resumed"]


def kill_mid_upload(
    short_tmp: Path,
    bare_remote: Path,
    s3: S3Target,
    daemon_factory: Callable[..., DaemonProcess],
    size: int,
) -> None:
    u = urlparse(s3.endpoint)
    # the registry's DVC remote names the proxy as its endpoint: open until the last check
    proxy = FaultProxy(u.hostname or "127.0.0.1", int(u.port or 80)).start()
    try:
        _kill_mid_upload(short_tmp, bare_remote, s3, daemon_factory, size, proxy)
    finally:
        proxy.close()


def _kill_mid_upload(
    short_tmp: Path,
    bare_remote: Path,
    s3: S3Target,
    daemon_factory: Callable[..., DaemonProcess],
    size: int,
    proxy: FaultProxy,
) -> None:
    ck = short_tmp / "ck"
    ck.mkdir()
    d = daemon_factory(
        watches=[Watch(ck, ARTIFACT)], remote=bare_remote,
        extra_storage={"part_size_mb": PART_MB, "concurrency": CONCURRENCY},
        **s3_daemon_kw(s3, proxy.url),
    )  # fmt: skip
    d.start()
    tmp = short_tmp / "staging.bin"
    md5 = write_random(tmp, size)
    os.replace(tmp, ck / "model.bin")  # complete when it appears, like Lightning's move
    wait_for(lambda: parts_uploaded(s3) >= 8, timeout=300, interval=0.05, what="parts uploaded")
    d.kill()
    held = parts_uploaded(s3)
    assert uploads(s3), "the kill should have interrupted a multipart upload"
    proxy.bytes_up = 0
    d.start()
    expected = {md5: ARTIFACT}
    wait_for(lambda: settled(d, bare_remote, expected), timeout=600, interval=0.5,
             what="the version after the restart")  # fmt: skip
    sent_after_restart = proxy.bytes_up
    part = PART_MB * MIB
    resumed = resumed_events(d)
    assert len(resumed) == 1, resumed
    r = resumed[0]
    assert r["md5"] == md5 and r["size"] == size
    assert r["bytes_confirmed"] >= held * part  # every part S3 held at the kill was spared
    assert r["bytes_confirmed"] + r["bytes_to_send"] == size
    assert r["bytes_resent"] <= CONCURRENCY * part, r  # at most the parts in flight
    # the wire agrees: after the restart only the parts S3 lacked went up (+ request headers
    # and the small objects: the registry marker, no .dir here)
    assert sent_after_restart < size - held * part + 2 * MIB, (sent_after_restart, r)
    assert [v["version"] for v in d.client().versions(ARTIFACT)] == ["v1.0.0"]
    assert uploads(s3) == [], "multipart uploads left behind"
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
