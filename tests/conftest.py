"""Shared fixtures that run the real things: git, a bare remote, moto's S3 server.

Environment is set before anything imports DVC/GTO/boto3 so nothing phones home or probes
the cloud metadata address.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

TEST_ENV = {
    "DVC_NO_ANALYTICS": "1",
    "ITERATIVE_DO_NOT_TRACK": "1",
    "GTO_NO_ANALYTICS": "1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "GIT_AUTHOR_NAME": "cpv-test",
    "GIT_AUTHOR_EMAIL": "cpv-test@example.invalid",
    "GIT_COMMITTER_NAME": "cpv-test",
    "GIT_COMMITTER_EMAIL": "cpv-test@example.invalid",
}
os.environ.update(TEST_ENV)
for _var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "CPV_CONFIG", "CPV_SOCKET"):
    os.environ.pop(_var, None)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path (AF_UNIX socket paths are limited to ~108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="cpv-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's S3 in server mode on 127.0.0.1 and a free port; yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_server: str) -> str:
    """A fresh, empty bucket on the moto server; returns its name."""
    import boto3

    name = f"cpv-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(
        Bucket=name
    )
    return name


@pytest.fixture
def bare_remote(short_tmp: Path) -> Path:
    """An empty bare Git repository, standing in for the team's registry remote."""
    path = short_tmp / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
    return path


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """Fail a test that leaves non-daemon threads running (watchdog observers, executors)."""
    before = set(threading.enumerate())
    yield
    leaked = [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.daemon
    ]
    for t in leaked:
        t.join(timeout=5)
    leaked = [t for t in leaked if t.is_alive()]
    assert not leaked, f"threads leaked: {leaked}"
