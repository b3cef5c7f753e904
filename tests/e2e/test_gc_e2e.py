"""gc through the real daemon and the real ``cpvctl`` CLI, on moto's S3 and a git remote."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import boto3

from tests.e2e.gc_helpers import GcDaemon, deregister
from tests.e2e.harness import Watch, cpvctl, events_of, tags, versions_of, wait_for

ART = "team/model"


def s3_keys(endpoint: str, bucket: str) -> set[str]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for p in pages for o in p.get("Contents", []) if "/files/" in o["Key"]}


def key(md5: str) -> str:
    return f"ck/files/md5/{md5[:2]}/{md5[2:]}"


def test_cpvctl_gc_dry_run_then_gc_on_s3(
    short_tmp: Path,
    bare_remote: Path,
    moto_server: str,
    s3_bucket: str,
    gc_daemon: Callable[..., GcDaemon],
) -> None:
    ck = short_tmp / "ck"
    d = gc_daemon(
        watches=[Watch(ck, ART)],
        remote=bare_remote,
        storage_url=f"s3://{s3_bucket}/ck",
        endpoint_url=moto_server,
        retention={"grace_hours": 0},
    )
    data = [os.urandom(4000 + i) for i in range(3)]
    with d:
        for i, blob in enumerate(data):
            (ck / f"epoch-{i}.bin").write_bytes(blob)
            wait_for(lambda i=i: len(versions_of(d, ART)) == i + 1, what=f"version {i}")
        wait_for(lambda: len(tags(bare_remote)) == 3, what="versions pushed")
        deregister(bare_remote, short_tmp / "colleague", ART, "v1.0.0")
        before = s3_keys(moto_server, s3_bucket)
        pruned_key = key(hashlib.md5(data[0]).hexdigest())
        assert pruned_key in before

        dry = cpvctl(d.socket, "--json", "gc", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        report = json.loads(dry.stdout)
        assert (report["objects_to_delete"], report["objects_deleted"]) == (1, 0)
        assert (report["versions_kept"], report["versions_pruned"]) == (2, 1)
        assert s3_keys(moto_server, s3_bucket) == before

        done = cpvctl(d.socket, "gc")
        assert done.returncode == 0, done.stderr
        assert "deleted 1 objects" in done.stdout
        assert "2 kept, 1 pruned" in done.stdout
        assert s3_keys(moto_server, s3_bucket) == before - {pruned_key}
        s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
        marker = json.loads(
            s3.get_object(Bucket=s3_bucket, Key="ck/cpv-registry.json")["Body"].read()
        )
        assert marker["remote"] == str(bare_remote)
        finished = events_of(d.socket, "gc.finished")
        assert [e["objects_deleted"] for e in finished] == [0, 1]
        for version, blob in (("v1.1.0", data[1]), ("v1.2.0", data[2])):
            got = d.client().pull(ART, version, short_tmp / "out" / version)
            assert Path(got).read_bytes() == blob


def test_periodic_gc_runs_by_itself(
    short_tmp: Path, bare_remote: Path, gc_daemon: Callable[..., GcDaemon]
) -> None:
    ck = short_tmp / "ck"
    d = gc_daemon(
        watches=[Watch(ck, ART)],
        remote=bare_remote,
        retention={"grace_hours": 0, "gc_interval": 0.0005},  # every 1.8 s
    )
    storage = d.root / "storage"
    with d:
        (ck / "a.bin").write_bytes(b"a" * 3000)
        wait_for(lambda: len(versions_of(d, ART)) == 1, what="v1.0.0")
        (ck / "b.bin").write_bytes(b"b" * 3000)
        wait_for(lambda: len(tags(bare_remote)) == 2, what="both pushed")
        obj = storage / "files" / "md5" / hashlib.md5(b"a" * 3000).hexdigest()[:2]
        obj = obj / hashlib.md5(b"a" * 3000).hexdigest()[2:]
        assert obj.exists()
        deregister(bare_remote, short_tmp / "colleague", ART, "v1.0.0")
        wait_for(lambda: not obj.exists(), timeout=60, what="periodic gc deleted v1.0.0")
        assert (storage / "cpv-registry.json").is_file()
        got = d.client().pull(ART, "v1.1.0", short_tmp / "out")
        assert Path(got).read_bytes() == b"b" * 3000
