"""A storage refusal that retrying cannot change ends the job ``failed`` after at most two
attempts, with the reason in ``cpvctl status`` and in a ``failed`` event, instead of being
retried for hours unnoticed (huggingface_hub#3325). Real daemon, real moto server."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.faults.conftest import S3Target, s3_daemon_kw
from tests.e2e.harness import DaemonProcess, Watch, wait_for

ARTIFACT = "team/refused"
FAST = {"retry_max_seconds": 1.0}


def _failed_job(d: DaemonProcess) -> dict[str, Any] | None:
    jobs = [j for j in d.client().status()["jobs"] if j["state"] == "failed"]
    return jobs[0] if jobs else None


def _empty_and_delete(s3: S3Target) -> None:
    c = s3.client()
    try:
        for _ in range(20):  # the daemon may write an object between our list and delete
            for obj in c.list_objects_v2(Bucket=s3.bucket).get("Contents", []):
                c.delete_object(Bucket=s3.bucket, Key=obj["Key"])
            try:
                c.delete_bucket(Bucket=s3.bucket)
                return
            except c.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "BucketNotEmpty":
                    raise
        raise AssertionError(f"bucket {s3.bucket} never became empty enough to delete")
    finally:
        c.close()


def _refused(
    short_tmp: Path,
    s3: S3Target,
    daemon_factory: Callable[..., DaemonProcess],
    break_storage: Callable[[], None],
) -> tuple[DaemonProcess, dict[str, Any]]:
    ck = short_tmp / "ck"
    d = daemon_factory(watches=[Watch(ck, ARTIFACT)], extra_daemon=FAST, **s3_daemon_kw(s3))
    d.start()
    break_storage()
    (ck / "model.bin").write_bytes(os.urandom(64 * 1024))
    job = wait_for(lambda: _failed_job(d), timeout=120, interval=0.3, what="the job to fail")
    assert job["attempts"] <= 2, job
    # and it stays failed: nothing is retried behind the user's back
    assert d.client().status()["queue"]["depth"] == 0
    events = d.client().recent_events(count=500)["events"]
    failed = [e["data"] for e in events if e["type"] == "failed" and not e["data"]["will_retry"]]
    assert failed and failed[-1]["permanent"] is True, events
    assert failed[-1]["error"] == job["error"]
    return d, job


def test_a_deleted_bucket_fails_the_job_with_the_reason(
    short_tmp: Path, s3: S3Target, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    d, job = _refused(short_tmp, s3, daemon_factory, lambda: _empty_and_delete(s3))
    assert f"S3 bucket '{s3.bucket}' does not exist" in job["error"]
    assert "gave up after" in job["error"] and "cpvctl retry" in job["error"]
    assert d.stop() == 0


@pytest.fixture
def moto_enforces_auth(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], None]]:
    """moto's switch to check credentials (its setting ``INITIAL_NO_AUTH_ACTION_COUNT``; the
    server runs in this process): the daemon's ``testing`` keys are then unknown to it.
    Switched off again afterwards, for the other tests on the same server."""
    from moto import settings

    yield lambda: monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)


def test_wrong_credentials_fail_the_job_with_the_reason(
    short_tmp: Path,
    s3: S3Target,
    daemon_factory: Callable[..., DaemonProcess],
    moto_enforces_auth: Callable[[], None],
) -> None:
    d, job = _refused(short_tmp, s3, daemon_factory, moto_enforces_auth)
    assert "InvalidAccessKeyId" in job["error"] or "access denied" in job["error"], job
    assert d.stop() == 0
