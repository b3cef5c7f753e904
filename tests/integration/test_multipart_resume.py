"""Multipart uploads that survive an interruption and a stalled link, against real moto
through a faulty TCP proxy (tests/e2e/faults/proxy.py).

- An outage that outlasts the part retries keeps the upload journalled; the next upload of
  the same object (here by a new storage object, as after a restart) lists the parts S3
  holds, sends only the others, and says so in an ``upload.resumed`` event.
- A part whose connection stops moving bytes for ``stall_seconds`` is cut off and sent
  again on a new connection, with an ``upload.stalled`` event.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import pytest

from cpvd.config.model import StorageConfig
from cpvd.errors import StorageError
from cpvd.storage.s3 import S3Storage
from cpvd.storage.transfer_events import TransferEvents
from tests.e2e.faults.proxy import FaultProxy

MIB = 1024 * 1024
PART = 5 * MIB


@pytest.fixture
def proxy(moto_server: str) -> Iterator[FaultProxy]:
    u = urlparse(moto_server)
    p = FaultProxy(u.hostname or "127.0.0.1", int(u.port or 80)).start()
    try:
        yield p
    finally:
        p.close()


def _storage(bucket: str, endpoint: str, journal: Path, **kw: Any) -> tuple[S3Storage, list]:
    seen: list[tuple[str, dict[str, Any]]] = []
    events = TransferEvents()
    events.attach(lambda type, **data: seen.append((type, data)))
    settings: dict[str, Any] = {"max_attempts": 1, **kw}
    cfg = StorageConfig(
        url=f"s3://{bucket}/reg", endpoint_url=endpoint, part_size_mb=5, concurrency=2,
        connect_timeout=2, read_timeout=10, **settings,
    )  # fmt: skip
    return S3Storage(cfg, journal_dir=journal, events=events), seen


def _uploads(endpoint: str, bucket: str) -> list[dict[str, Any]]:
    raw = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    try:
        return list(raw.list_multipart_uploads(Bucket=bucket).get("Uploads", []))
    finally:
        raw.close()


def _file(tmp: Path, size: int) -> tuple[Path, str]:
    data = os.urandom(size)
    src = tmp / "big"
    src.write_bytes(data)
    return src, hashlib.md5(data).hexdigest()


def test_an_upload_cut_by_an_outage_resumes_where_it_stopped(
    moto_server: str, s3_bucket: str, short_tmp: Path, proxy: FaultProxy
) -> None:
    size = 12 * PART + 123
    src, md5 = _file(short_tmp, size)
    journal = short_tmp / "uploads"
    st, _ = _storage(s3_bucket, proxy.url, journal)
    sent = 0

    def cut_after_six_parts(n: int) -> None:
        nonlocal sent
        sent += n
        if sent >= 6 * PART and proxy.mode == "pass":
            proxy.mode = "down"

    try:
        with pytest.raises(StorageError) as failed:
            st.put_file(md5, src, size, cut_after_six_parts)
        assert failed.value.outage
    finally:
        st.close()
    left = _uploads(moto_server, s3_bucket)
    assert len(left) == 1, "an outage keeps the upload for a resume"
    proxy.mode = "pass"
    proxy.bytes_up = 0

    again, seen = _storage(s3_bucket, proxy.url, journal)
    progress: list[int] = []
    try:
        again.put_file(md5, src, size, progress.append)
        assert again.verify(md5)
    finally:
        again.close()
    resumed = [d for t, d in seen if t == "upload.resumed"]
    assert len(resumed) == 1, seen
    r = resumed[0]
    # six parts' bytes were read when the link went down; two of them may still have been
    # on their way (concurrency 2), so S3 holds at least four
    assert r["parts_confirmed"] >= 4 and r["bytes_confirmed"] == r["parts_confirmed"] * PART
    assert r["bytes_confirmed"] + r["bytes_to_send"] == size
    # at most the parts in flight (concurrency 2): while a part retries, none starts, and
    # none starts once one failed for good
    assert r["bytes_resent"] <= 2 * PART
    # the wire agrees: only the parts not confirmed went up again (plus request headers)
    assert proxy.bytes_up < r["bytes_to_send"] + MIB
    assert sum(progress) == size
    assert _uploads(moto_server, s3_bucket) == []
    assert not list(journal.glob("*.json")) and not list(journal.glob("*.parts"))


def test_a_resume_with_an_upload_s3_forgot_starts_over(
    moto_server: str, s3_bucket: str, short_tmp: Path
) -> None:
    size = 3 * PART
    src, md5 = _file(short_tmp, size)
    journal = short_tmp / "uploads"
    st, seen = _storage(s3_bucket, moto_server, journal)
    try:
        key = st.key_of(md5)
        gone = st._client.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"]
        assert st._journal is not None
        st._journal.started(s3_bucket, key, gone, size, PART)
        st._journal.release(gone)  # as a crash leaves it: not in flight in this process
        st._client.abort_multipart_upload(Bucket=s3_bucket, Key=key, UploadId=gone)
        st.put_file(md5, src, size)
        assert st.verify(md5)
    finally:
        st.close()
    assert not [t for t, _ in seen if t == "upload.resumed"]
    assert _uploads(moto_server, s3_bucket) == []
    assert not list(journal.glob("*.json"))


def test_a_stalled_part_is_cut_off_and_sent_again(
    moto_server: str, s3_bucket: str, short_tmp: Path, proxy: FaultProxy
) -> None:
    size = 6 * PART
    src, md5 = _file(short_tmp, size)
    st, seen = _storage(
        s3_bucket, proxy.url, short_tmp / "uploads", stall_seconds=1.5, max_attempts=2
    )
    frozen = threading.Event()
    sent = 0

    def freeze_once(n: int) -> None:
        nonlocal sent
        sent += n
        if sent >= PART + MIB and not frozen.is_set():
            frozen.set()
            # far longer than stall_seconds and than the test needs: only a cut-off and a
            # new connection lets the upload finish while it lasts
            proxy.freeze(600)

    try:
        st.put_file(md5, src, size, freeze_once)
        assert st.verify(md5)
    finally:
        st.close()
    stalled = [d for t, d in seen if t == "upload.stalled"]
    assert stalled, seen
    assert all(d["seconds"] >= 1.3 for d in stalled)
    assert _uploads(moto_server, s3_bucket) == []


def test_uploads_nothing_resumed_are_aborted_by_the_sweep(
    moto_server: str, s3_bucket: str, short_tmp: Path
) -> None:
    import asyncio
    import time

    from cpvd.pipeline.threads import Executors
    from cpvd.pipeline.upload_sweep import sweep_unresumed
    from cpvd.state.queue import JobQueue

    st, _ = _storage(s3_bucket, moto_server, short_tmp / "uploads")
    queue = JobQueue(short_tmp / "q.db")
    ex = Executors()
    try:
        key = st.key_of("d" * 32)
        old = st._client.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"]
        assert st._journal is not None
        st._journal.started(s3_bucket, key, old, 3 * PART, PART)
        st._journal.release(old)  # left by an interruption
        assert st.abort_unresumed(idle=3600) == 0, "a young one is kept for its resume"
        assert [u["UploadId"] for u in _uploads(moto_server, s3_bucket)] == [old]
        then = time.time() - 10
        for f in (short_tmp / "uploads").iterdir():
            os.utime(f, (then, then))

        async def one_sweep() -> None:
            task = asyncio.create_task(sweep_unresumed(lambda: st, queue, ex, every=5))
            while _uploads(moto_server, s3_bucket):
                await asyncio.sleep(0.2)
            task.cancel()

        asyncio.run(asyncio.wait_for(one_sweep(), timeout=120))
        assert not list((short_tmp / "uploads").glob("*.json"))
    finally:
        ex.shutdown()
        queue.close()
        st.close()
