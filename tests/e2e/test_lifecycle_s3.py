"""Issue 13's "done when 1" in one run: the real cpvd on moto's S3, a real bare git remote,
the real ``gto``, ``dvc`` and ``cpvctl`` CLIs.

Six checkpoints with an ``eval_loss`` (lifecycle_scenario): ``#best`` moves only on a lower
loss, ``@latest`` is the newest pushed version, ``keep = { last = 2 }`` deregisters exactly
what no rule holds, and a fresh clone and ``gto show`` agree. Then ``cpvctl gc --dry-run``
leaves the bucket as it was, ``cpvctl gc`` deletes exactly the objects the pruned versions'
pointers name (read from the remote, not from the daemon), and every kept version comes
back byte-identical through ``cpvctl pull`` and through ``dvc pull`` in a fresh clone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

from cpvd.registry.dvcfiles import parse_pointer, pointer_file
from cpvd.storage.base import object_key
from tests.e2e.gc_helpers import GcDaemon
from tests.e2e.harness import Watch, cpvctl, git, wait_for
from tests.e2e.lifecycle_scenario import (
    ARTIFACT,
    CHECKPOINTS,
    KEPT,
    LIFECYCLE,
    PRUNED,
    check_remote,
    drop,
    versions,
)

PREFIX = "ck"
DVC = Path(sys.executable).with_name("dvc")


def bucket_keys(endpoint: str, bucket: str) -> set[str]:
    """Every object in the bucket (marker included), with a plain boto3 listing."""
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for p in pages for o in p.get("Contents", [])}


def pointer_md5(remote: Path, version: str) -> str:
    """The object a version's pointer names, as committed on the remote."""
    text = git(remote, "show", f"{ARTIFACT}@{version}^{{commit}}:{pointer_file(ARTIFACT)}")
    return parse_pointer(text).md5


def cli_json(sock: Path, *args: str) -> Any:
    done = cpvctl(sock, "--json", *args, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_lifecycle_on_s3_best_latest_retention_gc(
    short_tmp: Path,
    bare_remote: Path,
    moto_server: str,
    s3_bucket: str,
    gc_daemon: Callable[..., GcDaemon],
) -> None:
    ck = short_tmp / "ck"
    d = gc_daemon(
        watches=[Watch(ck, ARTIFACT, extra=LIFECYCLE)],
        remote=bare_remote,
        storage_url=f"s3://{s3_bucket}/{PREFIX}",
        endpoint_url=moto_server,
        retention={"grace_hours": 0},
    )
    with d:
        data = {f"v1.{n}.0": drop(d, ck, n) for n in range(len(CHECKPOINTS))}
        wait_for(lambda: [v["version"] for v in versions(d)] == KEPT, timeout=90,
                 what="retention done")  # fmt: skip
        assert cli_json(d.socket, "show", f"{ARTIFACT}#best")["version"] == "v1.4.0"
        assert cli_json(d.socket, "show", f"{ARTIFACT}@latest")["version"] == "v1.5.0"
        resumed = cli_json(d.socket, "pull", f"{ARTIFACT}@latest", "-o", str(short_tmp / "r"))
        assert Path(resumed["path"]).read_bytes() == data["v1.5.0"]
        check_remote(short_tmp, bare_remote)  # deregistrations, best, gto show, fresh clone

        pruned = {object_key(pointer_md5(bare_remote, v)) for v in PRUNED}
        expected = {f"{PREFIX}/{k}" for k in pruned}
        kept = {f"{PREFIX}/{object_key(pointer_md5(bare_remote, v))}" for v in KEPT}
        before = bucket_keys(moto_server, s3_bucket)
        assert expected | kept <= before and not expected & kept

        dry = cli_json(d.socket, "gc", "--dry-run")
        assert (dry["objects_to_delete"], dry["objects_deleted"]) == (len(expected), 0)
        assert (dry["versions_kept"], dry["versions_pruned"]) == (len(KEPT), len(PRUNED))
        assert bucket_keys(moto_server, s3_bucket) == before

        report = cli_json(d.socket, "gc")
        assert report["objects_deleted"] == len(expected)
        after = bucket_keys(moto_server, s3_bucket)
        # exactly the pruned versions' objects went; the one thing added is the ownership
        # marker a (real) gc writes at the storage root
        assert after == (before - expected) | {f"{PREFIX}/cpv-registry.json"}

        for v in KEPT:  # back through the daemon and the real cpvctl CLI
            got = cli_json(d.socket, "pull", f"{ARTIFACT}@{v}", "-o", str(short_tmp / v))
            assert Path(got["path"]).read_bytes() == data[v], v
    _dvc_pull_kept(short_tmp / "fresh", bare_remote, data)


def _dvc_pull_kept(work: Path, remote: Path, data: dict[str, bytes]) -> None:
    """A colleague's machine: a fresh clone and plain ``dvc pull`` of every kept version."""
    subprocess.run(["git", "clone", "-q", str(remote), str(work)], check=True, timeout=60)
    out = work / pointer_file(ARTIFACT).removesuffix(".dvc")
    for v in KEPT:
        git(work, "checkout", "-q", "--force", f"{ARTIFACT}@{v}")
        subprocess.run(
            [str(DVC), "pull", "-j", "1", "-q", "--force"],
            cwd=work, check=True, timeout=300, capture_output=True,
        )  # fmt: skip
        assert out.read_bytes() == data[v], f"dvc pull of {v}: bytes differ"
