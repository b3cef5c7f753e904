"""Fixtures for the fault-injection suite: an S3 bucket on moto, a checkpoint dropper."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.harness import DaemonProcess


@dataclass(frozen=True)
class S3Target:
    endpoint: str
    bucket: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/cpv"

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")


@pytest.fixture
def s3(moto_server: str, s3_bucket: str) -> S3Target:
    return S3Target(moto_server, s3_bucket)


def s3_daemon_kw(target: S3Target, endpoint: str | None = None) -> dict[str, str]:
    return {"storage_url": target.url, "endpoint_url": endpoint or target.endpoint}


@dataclass
class Dropper:
    """A thread writing distinct checkpoints into a watched directory, like a trainer.

    Half are written in place (``torch.save``), half to a temp name then renamed (Lightning);
    ``written`` maps each one's md5 to its artifact once it is complete on disk.
    """

    directory: Path
    artifact: str
    count: int
    pause: tuple[float, float] = (0.02, 0.3)
    size: tuple[int, int] = (2_000, 60_000)
    seed: int = 0
    prefix: str = "epoch"
    written: dict[str, str] = field(default_factory=dict)
    error: BaseException | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Dropper:
        self._thread = threading.Thread(target=self._run, name=f"dropper-{self.prefix}")
        self._thread.start()
        return self

    def _run(self) -> None:
        rng = random.Random(self.seed)
        try:
            for i in range(self.count):
                data = f"{self.prefix}-{i}-{self.seed}:".encode() + rng.randbytes(
                    rng.randint(*self.size)
                )
                name = f"{self.prefix}-{i:03d}.bin"
                if i % 2:
                    tmp = self.directory / f".{name}.tmp"
                    tmp.write_bytes(data)
                    os.replace(tmp, self.directory / name)
                else:
                    with open(self.directory / name, "wb") as fh:
                        half = len(data) // 2
                        fh.write(data[:half])
                        fh.flush()
                        time.sleep(0.01)
                        fh.write(data[half:])
                self.written[hashlib.md5(data).hexdigest()] = self.artifact
                time.sleep(rng.uniform(*self.pause))
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 120) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "dropper did not finish"
        if self.error is not None:
            raise self.error


@pytest.fixture
def dropper_factory() -> Iterator[Callable[..., Dropper]]:
    made: list[Dropper] = []

    def make(*args: object, **kw: object) -> Dropper:
        d = Dropper(*args, **kw)  # type: ignore[arg-type]
        made.append(d)
        return d

    yield make
    for d in made:
        if d._thread is not None:
            d._thread.join(60)


def settled(
    d: DaemonProcess, remote: Path | None = None, expected: Mapping[str, str] | None = None
) -> bool:
    """Every ``expected`` md5 is a version of its artifact, nothing is queued, running or
    waiting, no job failed for good, and (with a remote) everything is pushed."""
    c = d.client()
    st = c.status()
    failed = [j for j in st["jobs"] if j["state"] == "failed"]
    assert not failed, f"jobs failed for good: {failed}"
    if st["queue"]["depth"] != 0 or st["waiting"]:
        return False
    if expected:
        have = {v["md5"] for a in set(expected.values()) for v in c.versions(a)}
        if not set(expected) <= have:
            return False
    if remote is None:
        return True
    return pushed(d.registry, remote)


def pushed(registry: Path, remote: Path) -> bool:
    """The registry's HEAD is on the remote's branch (other machines may have added more)."""
    local = head(registry, "HEAD")
    if not local:
        return False
    proc = subprocess.run(
        ["git", "merge-base", "--is-ancestor", local, "main"], cwd=remote, capture_output=True
    )
    return proc.returncode == 0


def clear_remote_locks(remote: Path) -> list[Path]:
    """Remove lock files a killed ``git receive-pack`` left in the bare remote.

    The remote is a local path here, so ``kill -9`` of the daemon's process group also kills
    the receive-pack serving its push, which a real Git server (SSH/HTTPS) never suffers;
    the daemon cannot safely remove locks in a remote other machines push to (it reports
    them in ``cpvctl status`` instead). This plays the server's part.
    """
    locks = [p for p in remote.rglob("*.lock") if p.is_file()]
    for p in locks:
        p.unlink(missing_ok=True)
    return locks


def head(repo: Path, rev: str) -> str:
    proc = subprocess.run(
        ["git", "rev-parse", "-q", "--verify", rev], cwd=repo, capture_output=True, text=True
    )
    return proc.stdout.strip()
