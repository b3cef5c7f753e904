"""A burst of checkpoints through the real daemon into S3 (moto): every one its own version,
and a fresh clone's ``dvc pull`` gives back each version's exact bytes.

Covers the fast paths: hashing while snapshotting, the next job's upload overlapping the
current commit, one-PUT small objects, multipart for big ones, and batched pushes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import DaemonProcess, Watch, git, tags, wait_for

DVC = str(Path(sys.executable).with_name("dvc"))
ARTIFACT = "team/burst"


def test_burst_of_checkpoints_each_versioned_and_pullable_from_a_fresh_clone(
    short_tmp: Path,
    bare_remote: Path,
    moto_server: str,
    s3_bucket: str,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    ck = short_tmp / "ck"
    staging = short_tmp / "staging"
    staging.mkdir()
    d = daemon_factory(
        watches=[Watch(ck, ARTIFACT, settle_seconds=0.2)],
        remote=bare_remote,
        storage_url=f"s3://{s3_bucket}/dvc",
        endpoint_url=moto_server,
    )
    # small files (one PUT), a multipart one (> 8 MiB parts) and a directory
    payloads: dict[str, bytes | dict[str, bytes]] = {
        f"ck-{i:02d}.bin": os.urandom(100_000 + i) for i in range(10)
    }
    payloads["ck-10-big.bin"] = os.urandom(17 * 1024 * 1024 + 3)
    payloads["ck-11-dir"] = {"model.bin": os.urandom(300_000), "a.json": b"{}", "sub/x": b"x"}
    for name, data in payloads.items():
        if isinstance(data, bytes):
            (staging / name).write_bytes(data)
        else:
            for rel, blob in data.items():
                (staging / name / rel).parent.mkdir(parents=True, exist_ok=True)
                (staging / name / rel).write_bytes(blob)
    with d:
        ck.mkdir(exist_ok=True)
        for name in payloads:  # rename-in, all at once
            os.rename(staging / name, ck / name)
        try:
            wait_for(lambda: len(tags(bare_remote)) == len(payloads), timeout=60, what="tags")
        except AssertionError:
            raise AssertionError(f"{tags(bare_remote)}\n{d.client().status()}\n{d.log()}") from None
        versions = d.client().versions(ARTIFACT)
    assert len(versions) == len(payloads)
    by_name = {v["name"]: v for v in versions}
    assert set(by_name) == set(payloads)
    # one version, one commit (GTO), and nothing left unpushed
    assert int(git(bare_remote, "rev-list", "--count", "main")) >= len(payloads)
    assert git(bare_remote, "rev-parse", "main") == git(d.registry, "rev-parse", "HEAD")

    clone = short_tmp / "clone"
    subprocess.run(["git", "clone", "-q", str(bare_remote), str(clone)], check=True)
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_server}
    out = clone / f"artifacts/{ARTIFACT}/checkpoint"
    for name in ("ck-00.bin", "ck-09.bin", "ck-10-big.bin", "ck-11-dir"):
        subprocess.run(["git", "checkout", "-q", by_name[name]["tag"]], cwd=clone, check=True)
        res = subprocess.run(
            [DVC, "pull", "-j", "1", "-f"], cwd=clone, env=env, capture_output=True, text=True,
            timeout=240,
        )  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        want = payloads[name]
        if isinstance(want, bytes):
            assert out.read_bytes() == want, name
        else:
            got = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
                   if p.is_file()}  # fmt: skip
            assert got == want
