"""An outage is not the job's fault: a job that failed because the storage could not be
reached goes back to the queue however many attempts it has used, at the capped backoff,
instead of ending ``failed`` (and losing its snapshot) after a few minutes of outage."""

from __future__ import annotations

import time
from pathlib import Path

import botocore.exceptions

from cpvd.config.model import StorageConfig
from cpvd.state.queue import JobQueue
from cpvd.storage.s3 import S3Storage


def test_an_outage_never_exhausts_the_attempts(tmp_path: Path) -> None:
    q = JobQueue(tmp_path / "q.db", max_attempts=3, backoff_cap=1.0)
    try:
        job = q.add("a", "/a/1")
        now = time.time()
        for _ in range(10):
            assert q.claim_next(now=now + 1e6) is not None
            job = q.fail(job.id, "S3 endpoint unreachable", retryable=True, now=now, outage=True)
            assert job.state == "queued"
        assert job.attempts == 10
        # an ordinary retryable failure still gives up after max_attempts
        assert q.claim_next(now=now + 1e6) is not None
        job = q.fail(job.id, "checksum mismatch", retryable=True, now=now)
        assert job.state == "failed"
    finally:
        q.close()


def _storage() -> S3Storage:
    return S3Storage(StorageConfig(url="s3://bucket-x/p", endpoint_url="http://127.0.0.1:9"))


def _client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


def test_s3_errors_say_whether_they_are_an_outage() -> None:
    st = _storage()
    try:
        unreachable = botocore.exceptions.EndpointConnectionError(endpoint_url="http://x")
        assert st._error(unreachable, "upload").outage
        timeout = botocore.exceptions.ReadTimeoutError(endpoint_url="http://x")
        assert st._error(timeout, "upload").outage
        assert st._error(_client_error("SlowDown", 503), "upload").outage
        assert st._error(_client_error("InternalError", 500), "upload").outage
        assert not st._error(_client_error("AccessDenied", 403), "upload").outage
        assert not st._error(_client_error("NoSuchBucket", 404), "upload").outage
    finally:
        st.close()
