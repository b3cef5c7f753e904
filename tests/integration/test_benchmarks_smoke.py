"""Keep the benchmark harness from rotting: its smallest pieces, run for real, no timings.

The query registry the harness builds with ``git fast-import`` must be exactly what cpvd
makes, or the query benchmark measures something cpvd never reads; so it is read back here
through cpvd's own engine. The result renderer and target judging run on made-up figures.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import boto3

from benchmarks.cli import add_targets, select
from benchmarks.procs import make_bare_remote, push_count, remote_tags
from benchmarks.querybuild import build_query_registry
from benchmarks.report import Results, judge, ratio, render
from benchmarks.scenarios import COMPLETE_LABEL, PARTS_LABEL, Plan, multipart_split
from cpvd.config.model import Config, DaemonConfig, RegistryConfig, StorageConfig
from cpvd.registry.engine import Engine
from cpvd.registry.index import read_index
from cpvd.registry.repo import RegistryRepo
from cpvd.storage import LocalStorage


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=60
    ).stdout


def test_query_registry_is_read_back_by_cpvd(short_tmp: Path) -> None:
    reg_path, storage = short_tmp / "registry", short_tmp / "storage"
    storage.mkdir()
    build_query_registry(reg_path, "bench/big", 50, str(storage))

    index = read_index(reg_path)
    versions = index.artifact_versions("bench/big")
    assert [v.version for v in versions[:3]] == ["v1.49.0", "v1.48.0", "v1.47.0"]
    assert len(versions) == 50
    assert len({v.commit for v in versions}) == 50  # one version, one commit (GTO's rule)
    assert versions[0].parent == "v1.48.0" and versions[-1].parent is None
    assert index.find_job(versions[10].job_id or "") is versions[10]

    # the daemon opening this registry finds nothing to change, and reads the current version
    cfg = Config(
        daemon=DaemonConfig(state_dir=short_tmp / "state"),
        registry=RegistryConfig(path=reg_path),
        storage=StorageConfig(url=str(storage)),
    )
    head = git(reg_path, "rev-parse", "HEAD")
    storage_backend = LocalStorage(str(storage))
    engine = Engine(
        cfg, storage_backend, RegistryRepo(cfg.registry, storage_backend.dvc_remote_settings())
    )
    engine.open()
    assert git(reg_path, "rev-parse", "HEAD") == head
    assert git(reg_path, "status", "--porcelain") == ""
    shown = engine.versions("bench/big")
    assert shown[0].current and not shown[1].current
    assert engine.registry.pointer("bench/big") is not None
    assert engine.registry.pointer("bench/big").md5 == versions[0].md5  # type: ignore[union-attr]


def test_remote_tags_reads_loose_and_packed_refs(short_tmp: Path) -> None:
    remote = make_bare_remote(short_tmp / "remote.git")
    work = short_tmp / "work"
    git(short_tmp, "clone", "-q", str(remote), str(work))
    git(work, "commit", "-q", "--allow-empty", "-m", "one")
    for tag in ("team/a@v1.0.0", "team/a@v1.1.0", "other@v1.0.0"):
        git(work, "tag", "-a", tag, "-m", "{}")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/main", "team/a@v1.0.0")
    assert push_count(remote) == 1
    git(remote, "pack-refs", "--all")  # now only in packed-refs
    git(work, "push", "-q", "origin", "team/a@v1.1.0", "other@v1.0.0")
    assert push_count(remote) == 2
    assert remote_tags(remote, "team/a@") == {"team/a@v1.0.0", "team/a@v1.1.0"}
    (remote / "refs" / "tags" / "team" / "a@v1.2.0.lock").write_text("")  # a push under way
    assert remote_tags(remote, "team/a@") == {"team/a@v1.0.0", "team/a@v1.1.0"}
    assert len(remote_tags(remote)) == 3


def test_results_render_with_targets() -> None:
    plan = Plan.full(runs=3)
    r = Results()
    label = "1 GiB file"
    r.figure("6. Memory", f"daemon RSS growth while versioning the {label}", "MiB").samples = [30.0]
    r.figure(f"1. End to end: {label}", "daemon: same, minus the quiet period", "s").samples = [
        5.0,
        4.0,
        6.0,
    ]
    r.figure(f"2. Baselines: {label}", "raw upload, best config", "s").samples = [4.0, 4.5, 5.0]
    r.figure(
        f"2. Baselines: {label}",
        "manual route: dvc add, dvc push, git commit, git tag, git push",
        "s",
    ).samples = [20.0, 21.0, 19.0]
    r.figure(
        f"2. Baselines: {label}", "md5 + raw upload (best config), one after the other", "s"
    ).samples = [5.5, 6.0, 6.5]
    r.figure(f"2. Baselines: {label}", PARTS_LABEL, "s").samples = [1.0, 1.0, 2.0]
    r.figure(f"2. Baselines: {label}", COMPLETE_LABEL, "s").samples = [3.0, 4.0, 3.0]
    r.figure("4. Idle cost", "daemon RSS (VmRSS of the daemon process)", "MiB").samples = [80.0]
    add_targets(r, plan)
    by_label = {t.label: t for t in r.targets}
    upload = by_label[f"{label}: end to end / raw boto3 upload alone"]
    assert upload.value == 5.0 / 4.5 and upload.met is False
    assert by_label[f"{label}: manual DVC route / end to end (speed-up)"].met is True
    floor = by_label[f"{label}: least end to end at a short quiet period / raw boto3 upload alone"]
    assert floor.value == (6.0 - plan.settle) / 4.5  # the hash may use the quiet period
    assert floor.met is None  # information, not a target
    share = by_label[f"{label}: share of a raw upload that is moto's CompleteMultipartUpload"]
    assert share.value == 3.0 / (1.0 + 3.0) * 100
    assert by_label["idle RSS"].met is True
    assert by_label[f"RSS growth while versioning the {label}"].met is True
    assert "burst: versions per second" not in by_label  # nothing measured, no row

    text = render(r, [("CPU", "test")], "python -m benchmarks", "title")
    row = "| 1 GiB file: end to end / raw boto3 upload alone | 1.11x | <= 1.1x | **not met** |"
    assert row in text
    assert "| daemon: same, minus the quiet period | 5.00 s | 4.00 - 6.00 s | 3 |" in text
    # sections in issue order, whatever order they were measured in
    assert text.index("### 1. End") < text.index("### 2. Base") < text.index("### 6. Memory")


def test_judge_and_select() -> None:
    assert judge(0.29, "< 0.3 s") is True
    assert judge(31.0, ">= 30/s") is True
    assert judge(1.2, "<= 1.1x") is False
    assert judge(None, "< 1%") is None
    assert judge(3.0, "") is None
    assert ratio(None, None) is None
    names = ["e2e-f256m", "e2e-f1g", "burst", "queries"]
    assert select(names, ["e2e"]) == ["e2e-f256m", "e2e-f1g"]
    assert select(names, []) == names


def test_multipart_split_stores_the_exact_bytes(
    moto_server: str, s3_bucket: str, short_tmp: Path
) -> None:
    """The hand-made multipart upload behind the parts/complete split is a real upload."""
    files = [short_tmp / "a.bin", short_tmp / "b.bin"]
    files[0].write_bytes(os.urandom(8 * 1024 * 1024 + 123))  # two parts, the last one short
    files[1].write_bytes(b"")  # an empty file is still one part
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    sending, completing = multipart_split(s3, s3_bucket, "split", files)
    assert sending > 0 and completing > 0
    for f in files:
        body = s3.get_object(Bucket=s3_bucket, Key=f"split/{f.name}")["Body"].read()
        assert hashlib.md5(body).digest() == hashlib.md5(f.read_bytes()).digest()
    assert s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
