"""Storage backends against real targets: a local directory and moto's S3 server, and the
interoperability proof: what we upload, the real ``dvc pull`` gives back byte for byte."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from cpvd.config.model import StorageConfig
from cpvd.errors import InputError, IntegrityError, NotFound, StorageError
from cpvd.storage import (
    DEFAULT_ABANDON_AGE,
    LocalStorage,
    Storage,
    object_key,
    open_storage,
    put_checkpoint,
)
from cpvd.storage.hashing import ContentHash, hash_checkpoint
from cpvd.storage.local import TMP_PREFIX
from cpvd.storage.s3 import S3Storage, abandoned_uploads
from tests.conftest import free_port

DVC = str(Path(sys.executable).with_name("dvc"))


def _s3_cfg(bucket: str, endpoint: str, prefix: str = "team/ckpts") -> StorageConfig:
    # 5 MiB parts so a 12 MiB file is a real 3-part multipart upload
    return StorageConfig(
        url=f"s3://{bucket}/{prefix}", endpoint_url=endpoint, part_size_mb=5, concurrency=4
    )


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, short_tmp: Path) -> Iterator[Storage]:
    if request.param == "local":
        st: Storage = open_storage(StorageConfig(url=str(short_tmp / "remote")))
    else:
        endpoint = request.getfixturevalue("moto_server")
        bucket = request.getfixturevalue("s3_bucket")
        st = open_storage(_s3_cfg(bucket, endpoint))
    try:
        st.check()
        yield st
    finally:
        st.close()


def _raw_s3(endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_object_key_is_dvc_layout() -> None:
    md5 = "0123456789abcdef0123456789abcdef"
    assert object_key(md5) == "files/md5/01/23456789abcdef0123456789abcdef"
    assert object_key(md5 + ".dir") == "files/md5/01/23456789abcdef0123456789abcdef.dir"
    for bad in ("../../etc/passwd", md5.upper(), md5[:-1], md5 + ".txt"):
        with pytest.raises(InputError):
            object_key(bad)


def test_open_storage_picks_backend(short_tmp: Path, moto_server: str) -> None:
    assert isinstance(open_storage(StorageConfig(url=str(short_tmp))), LocalStorage)
    s3 = open_storage(StorageConfig(url="s3://b/p", endpoint_url=moto_server))
    try:
        assert isinstance(s3, S3Storage)
    finally:
        s3.close()


def test_round_trip(storage: Storage, short_tmp: Path) -> None:
    data = os.urandom(12 * 1024 * 1024 + 123)
    src = short_tmp / "big.pt"
    src.write_bytes(data)
    md5 = _md5(data)
    assert not storage.has(md5)
    assert storage.size_of(md5) is None

    seen: list[int] = []
    storage.put_file(md5, src, len(data), seen.append)
    assert sum(seen) == len(data)
    assert storage.has(md5)
    assert storage.size_of(md5) == len(data)
    with storage.open_object(md5) as f:
        assert f.read() == data
    assert storage.verify(md5)

    manifest = b'[{"md5": "%s", "relpath": "big.pt"}]' % md5.encode()
    dir_md5 = _md5(manifest) + ".dir"
    storage.put_bytes(dir_md5, manifest)
    assert storage.size_of(dir_md5) == len(manifest)
    assert storage.verify(dir_md5)
    with storage.open_object(dir_md5) as f:
        assert f.read() == manifest


def test_put_is_idempotent(storage: Storage, short_tmp: Path) -> None:
    data = b"checkpoint bytes" * 1000
    src = short_tmp / "w.pt"
    src.write_bytes(data)
    md5 = _md5(data)
    storage.put_file(md5, src, len(data))
    first = _stamp(storage, md5)
    time.sleep(1.1)  # S3 LastModified has one-second resolution
    calls: list[int] = []
    storage.put_file(md5, src, len(data), calls.append)
    assert calls == []  # nothing transferred
    assert _stamp(storage, md5) == first


def _stamp(storage: Storage, md5: str) -> object:
    """Something that changes when the object is written again."""
    if isinstance(storage, LocalStorage):
        st = storage.path_of(md5).stat()
        return (st.st_ino, st.st_mtime_ns)
    assert isinstance(storage, S3Storage)
    head = storage._client.head_object(Bucket=storage.bucket, Key=storage.key_of(md5))
    return head["LastModified"]


def test_missing_object(storage: Storage) -> None:
    md5 = "f" * 32
    with pytest.raises(NotFound) as exc:
        storage.open_object(md5)
    assert exc.value.code == "not_found"
    assert storage.verify(md5) is False


def test_bad_inputs_are_refused(storage: Storage, short_tmp: Path) -> None:
    src = short_tmp / "f"
    src.write_bytes(b"abc")
    with pytest.raises(IntegrityError):
        storage.put_file(_md5(b"abc"), src, 4)  # size moved since hashing
    with pytest.raises(IntegrityError):
        storage.put_bytes(_md5(b"[]") + ".dir", b"[ ]")
    assert not storage.has(_md5(b"abc"))


def test_corrupted_object_fails_verify(storage: Storage, short_tmp: Path) -> None:
    data = b"good bytes\n" * 100
    src = short_tmp / "g"
    src.write_bytes(data)
    md5 = _md5(data)
    storage.put_file(md5, src, len(data))
    assert storage.verify(md5)
    bad = b"evil" + data[4:]
    if isinstance(storage, LocalStorage):
        storage.path_of(md5).write_bytes(bad)
    else:
        assert isinstance(storage, S3Storage)
        storage._client.put_object(Bucket=storage.bucket, Key=storage.key_of(md5), Body=bad)
    assert storage.verify(md5) is False


def test_abort_incomplete_s3_uploads(moto_server: str, s3_bucket: str) -> None:
    st = S3Storage(_s3_cfg(s3_bucket, moto_server))
    raw = _raw_s3(moto_server)
    try:
        key = st.key_of("a" * 32)
        up = raw.create_multipart_upload(Bucket=s3_bucket, Key=key)
        raw.upload_part(
            Bucket=s3_bucket, Key=key, UploadId=up["UploadId"], PartNumber=1, Body=b"x" * 100
        )
        # outside our prefix: someone else's, never touched
        other = raw.create_multipart_upload(Bucket=s3_bucket, Key="elsewhere/obj")
        assert st.abort_incomplete_uploads(older_than=0) == 1
        left = raw.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
        assert [u["UploadId"] for u in left] == [other["UploadId"]]
        assert not st.has("a" * 32)
    finally:
        st.close()
        raw.close()


def test_abandoned_uploads_keeps_young_ones() -> None:
    """moto reports every upload as initiated in 2010, so the age rule is checked here."""
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    ups: list[dict[str, Any]] = [
        {"Key": "old", "Initiated": now - timedelta(hours=25)},
        {"Key": "young", "Initiated": now - timedelta(minutes=5)},
        {"Key": "unknown"},
    ]
    keys = [u["Key"] for u in abandoned_uploads(ups, now, DEFAULT_ABANDON_AGE)]
    assert keys == ["old", "unknown"]
    assert len(abandoned_uploads(ups, now, 0)) == 3


def test_abort_incomplete_local_uploads(short_tmp: Path) -> None:
    st = LocalStorage(short_tmp / "remote")
    shard = short_tmp / "remote" / "files" / "md5" / "ab"
    shard.mkdir(parents=True)
    stale = shard / f"{TMP_PREFIX}cdef-1"
    fresh = shard / f"{TMP_PREFIX}cdef-2"
    real = shard / ("c" * 30)
    for p in (stale, fresh, real):
        p.write_bytes(b"partial")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    os.utime(real, (old, old))
    assert st.abort_incomplete_uploads(older_than=3600) == 1
    assert not stale.exists() and fresh.exists() and real.exists()


def test_missing_bucket(moto_server: str, short_tmp: Path) -> None:
    st = S3Storage(StorageConfig(url="s3://no-such-bucket-cpv/x", endpoint_url=moto_server))
    src = short_tmp / "f"
    src.write_bytes(b"data")
    try:
        with pytest.raises(StorageError, match="does not exist") as exc:
            st.check()
        assert "no-such-bucket-cpv" in exc.value.message
        with pytest.raises(StorageError, match="does not exist"):
            st.put_file(_md5(b"data"), src, 4)
        with pytest.raises(StorageError, match="does not exist"):
            st.put_bytes(_md5(b"[]") + ".dir", b"[]")
    finally:
        st.close()


def test_check_closed_port_fails_fast(s3_bucket: str) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    st = S3Storage(
        StorageConfig(url=f"s3://{s3_bucket}", endpoint_url=endpoint),
        max_attempts=2,
        check_connect_timeout=1.0,
    )
    try:
        with pytest.raises(StorageError, match="unreachable") as exc:
            st.check()
        assert exc.value.retryable
        with pytest.raises(StorageError, match="unreachable"):
            st.has("a" * 32)
    finally:
        st.close()


def test_local_check_creates_or_refuses(short_tmp: Path) -> None:
    root = short_tmp / "a" / "b" / "storage"
    LocalStorage(root).check()
    assert root.is_dir()
    blocker = short_tmp / "file"
    blocker.write_bytes(b"")
    with pytest.raises(StorageError, match="cannot create"):
        LocalStorage(blocker / "storage").check()


def test_remote_settings_carry_no_secrets(moto_server: str, short_tmp: Path) -> None:
    cfg = StorageConfig(
        url="s3://bkt/some/prefix/", endpoint_url=moto_server, region="eu-west-1", profile="p"
    )
    s3 = S3Storage.__new__(S3Storage)  # settings need no client (profile "p" does not exist)
    s3.cfg, (s3.bucket, s3.prefix) = cfg, cfg.s3_bucket_prefix()
    assert s3.dvc_remote_settings() == {
        "url": "s3://bkt/some/prefix",
        "endpointurl": moto_server,
        "region": "eu-west-1",
        "profile": "p",
    }
    assert LocalStorage(short_tmp).dvc_remote_settings() == {"url": str(short_tmp)}


# -- interoperability: our uploads, the real `dvc pull` ------------------------------------


def _make_checkpoints(base: Path) -> tuple[Path, Path]:
    f = base / "src" / "epoch-3.pt"
    d = base / "src" / "checkpoint-500"
    (d / "sub" / "deep").mkdir(parents=True)
    f.write_bytes(os.urandom(6 * 1024 * 1024 + 7))
    (d / "model.safetensors").write_bytes(os.urandom(300_000))
    (d / "trainer_state.json").write_text('{"step": 500}\r\n')
    (d / "empty").write_bytes(b"")
    (d / ".metadata").write_bytes(b"dcp")
    (d / "sub" / "copy.bin").write_bytes(b"dup")
    (d / "sub" / "deep" / "same.bin").write_bytes(b"dup")
    return f, d


def _dvc_file(content: ContentHash, path: str) -> str:
    """The .dvc text exactly as `dvc add` writes it (field order: md5, size, nfiles, hash,
    path)."""
    lines = ["outs:", f"- md5: {content.md5}", f"  size: {content.size}"]
    if content.is_dir:
        lines.append(f"  nfiles: {content.nfiles}")
    lines += ["  hash: md5", f"  path: {path}"]
    return "\n".join(lines) + "\n"


def _tree_bytes(root: Path) -> dict[str, bytes]:
    if root.is_file():
        return {root.name: root.read_bytes()}
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_dvc_pull_gets_back_our_uploads(storage: Storage, short_tmp: Path) -> None:
    f, d = _make_checkpoints(short_tmp)
    hf, hd = hash_checkpoint(f), hash_checkpoint(d)
    put_checkpoint(storage, f, hf)
    put_checkpoint(storage, d, hd)
    assert storage.verify(hd.md5)
    assert all(storage.verify(e.md5) for e in hd.entries)

    repo = short_tmp / "clone"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=repo, check=True)
    remote = storage.dvc_remote_settings()
    cfg = ["[core]", "    remote = cpv", "    analytics = false", '[remote "cpv"]']
    cfg += [f"    {k} = {v}" for k, v in remote.items()]
    (repo / ".dvc" / "config").write_text("\n".join(cfg) + "\n")
    (repo / "models").mkdir()
    (repo / "models" / "resnet.dvc").write_text(_dvc_file(hf, "resnet"))
    (repo / "models" / "hf.dvc").write_text(_dvc_file(hd, "hf"))

    env = dict(os.environ)
    if "endpointurl" in remote:
        env["AWS_ENDPOINT_URL"] = remote["endpointurl"]
    res = subprocess.run(
        [DVC, "pull", "-j", "1"], cwd=repo, env=env, capture_output=True, text=True, timeout=240
    )
    assert res.returncode == 0, res.stdout + res.stderr

    assert (repo / "models" / "resnet").read_bytes() == f.read_bytes()
    assert _tree_bytes(repo / "models" / "hf") == _tree_bytes(d)
    # and DVC agrees the workspace matches the pointers we wrote
    status = subprocess.run(
        [DVC, "status", "--json"], cwd=repo, capture_output=True, text=True, check=True
    )
    assert status.stdout.strip() in ("{}", "")


def test_s3_small_put_refuses_bytes_that_no_longer_match_their_md5(
    moto_server: str, s3_bucket: str, short_tmp: Path
) -> None:
    """A file below the part size goes up as one PUT whose md5 is checked first (and sent
    as Content-MD5): same size, other bytes -> refused, nothing stored under that md5."""
    st = S3Storage(_s3_cfg(s3_bucket, moto_server))
    try:
        src = short_tmp / "small.pt"
        src.write_bytes(b"A" * 1000)
        md5 = _md5(b"B" * 1000)  # what was hashed before the file changed
        with pytest.raises(IntegrityError):
            st.put_file(md5, src, 1000)
        assert not st.has(md5)
        src.write_bytes(b"B" * 1000)
        seen: list[int] = []
        st.put_file(md5, src, 1000, seen.append)
        assert seen == [1000]
        with st.open_object(md5) as f:
            assert f.read() == b"B" * 1000
    finally:
        st.close()
