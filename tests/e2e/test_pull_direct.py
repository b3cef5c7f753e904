"""``cpvctl pull`` reads S3 objects straight from the storage with a URL the daemon signs
(issue 18, target 4), through the real daemon and moto: identical bytes, a corrupted
object refused with nothing left behind, and the relay through the daemon's socket when
the URL cannot be read from here or the storage has none (a local directory)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from cpvctl.client import Client
from cpvctl.errors import IntegrityError
from tests.e2e.harness import DaemonProcess, Watch, cpvctl, versions_of, wait_for

A = "team/pull"
BIG = 17 * 1024 * 1024 + 3  # several multipart parts on the way up


class Recording(Client):
    """The real client, noting every path it asks the daemon for; ``url`` replaces the
    signed URL the daemon gives (to make it unreadable)."""

    def __init__(self, socket: Path, url: str | None = None) -> None:
        super().__init__(str(socket), timeout=30)
        self.paths: list[str] = []
        self.url = url

    def request(self, method: str, path: str, query: dict[str, Any] | None = None,
                body: Any = None) -> Any:  # fmt: skip
        answer = super().request(method, path, query, body)  # open() notes the path
        if path == "/pull/url" and self.url is not None:
            answer["url"] = self.url
        return answer

    def open(self, method: str, path: str, *args: Any, **kw: Any) -> Any:
        self.paths.append(path)
        return super().open(method, path, *args, **kw)


def s3_daemon(factory: Callable[..., DaemonProcess], short_tmp: Path, moto: str,
              bucket: str) -> DaemonProcess:  # fmt: skip
    return factory(watches=[Watch(short_tmp / "ck", A, settle_seconds=0.2)],
                   storage_url=f"s3://{bucket}/dvc", endpoint_url=moto)  # fmt: skip


def version_of(d: DaemonProcess, short_tmp: Path, name: str, data: bytes) -> None:
    staging = short_tmp / "staging"
    staging.mkdir(exist_ok=True)
    (staging / name).write_bytes(data)
    (short_tmp / "ck").mkdir(exist_ok=True)
    os.rename(staging / name, short_tmp / "ck" / name)
    wait_for(lambda: len(versions_of(d, A)) >= 1, timeout=60, what="the version")


def test_pull_reads_the_object_straight_from_s3(
    short_tmp: Path, moto_server: str, s3_bucket: str,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:  # fmt: skip
    data = os.urandom(BIG)
    d = s3_daemon(daemon_factory, short_tmp, moto_server, s3_bucket)
    with d:
        version_of(d, short_tmp, "model.bin", data)
        client = Recording(d.socket)
        got = client.pull(f"{A}@v1.0.0", short_tmp / "out")
        assert got.read_bytes() == data
        assert "/pull/url" in client.paths and "/pull/object" not in client.paths
        res = cpvctl(d.socket, "pull", f"{A}@v1.0.0", "-o", str(short_tmp / "cli"))
        assert res.returncode == 0, res.stderr
        assert (short_tmp / "cli" / "model.bin").read_bytes() == data
    assert sorted(os.listdir(short_tmp / "out")) == ["model.bin"], "no temporary left"


def test_a_corrupted_object_is_refused_and_nothing_is_left(
    short_tmp: Path, moto_server: str, s3_bucket: str,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:  # fmt: skip
    data = os.urandom(BIG)
    d = s3_daemon(daemon_factory, short_tmp, moto_server, s3_bucket)
    with d:
        version_of(d, short_tmp, "model.bin", data)
        md5 = hashlib.md5(data).hexdigest()
        bad = bytearray(data)
        bad[BIG // 2] ^= 0xFF  # one flipped byte, same size
        s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
        s3.put_object(Bucket=s3_bucket, Key=f"dvc/files/md5/{md5[:2]}/{md5[2:]}", Body=bytes(bad))
        client = Recording(d.socket)
        with pytest.raises(IntegrityError, match="does not match"):
            client.pull(f"{A}@v1.0.0", short_tmp / "out")
        assert "/pull/object" not in client.paths, "the corrupt bytes came the direct way"
    assert not (short_tmp / "out").exists(), "the directory pull created is gone again"


def test_an_unreadable_url_falls_back_to_the_daemon(
    short_tmp: Path, moto_server: str, s3_bucket: str,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:  # fmt: skip
    data = os.urandom(BIG)
    d = s3_daemon(daemon_factory, short_tmp, moto_server, s3_bucket)
    with d:
        version_of(d, short_tmp, "model.bin", data)
        # no route from this machine to the storage: a closed port
        client = Recording(d.socket, url="http://127.0.0.1:9/nothing-listens-here")
        assert client.pull(f"{A}@v1.0.0", short_tmp / "out").read_bytes() == data
        assert client.paths.count("/pull/url") == 1, "tried once, then the relay"
        assert client.paths.count("/pull/object") == 1
    assert sorted(os.listdir(short_tmp / "out")) == ["model.bin"]


def test_local_storage_pulls_through_the_daemon(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    data = os.urandom(300_000)
    d = daemon_factory(watches=[Watch(short_tmp / "ck", A, settle_seconds=0.2)])
    with d:
        version_of(d, short_tmp, "model.bin", data)
        client = Recording(d.socket)
        assert client.pull(f"{A}@v1.0.0", short_tmp / "out").read_bytes() == data
        assert "/pull/url" in client.paths, "asked, and told there is none"
        assert "/pull/object" in client.paths
