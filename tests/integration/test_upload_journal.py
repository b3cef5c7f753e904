"""Our own multipart uploads left behind by a crash are aborted at the next start, whatever
their age; uploads we did not start (another machine sharing the bucket) are left alone.

Why a journal: S3 says when an upload started, not who started it. Aborting by age alone
either leaves a crash's parts (billed storage) for a day, or aborts a colleague's upload
that is still running. moto reports every upload as started in 2010, which hides the
problem in tests; the journal does not depend on the clock at all.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import boto3

from cpvd.config.model import StorageConfig
from cpvd.storage import open_storage
from cpvd.storage.s3 import S3Storage


def _cfg(bucket: str, endpoint: str) -> StorageConfig:
    return StorageConfig(
        url=f"s3://{bucket}/reg", endpoint_url=endpoint, part_size_mb=5, concurrency=2
    )


def _uploads(endpoint: str, bucket: str) -> list[str]:
    raw = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    try:
        return [u["UploadId"] for u in raw.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    finally:
        raw.close()


def test_a_crashed_upload_is_aborted_and_a_foreign_one_kept(
    moto_server: str, s3_bucket: str, short_tmp: Path
) -> None:
    journal = short_tmp / "uploads"
    st = open_storage(_cfg(s3_bucket, moto_server), journal_dir=journal)
    assert isinstance(st, S3Storage)
    key = st.key_of("b" * 32)
    # what a kill -9 between two parts leaves: an upload nobody completes or aborts, in a
    # journal entry that cannot be resumed (no sizes: written by an older cpvd)
    ours = st._client.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"]
    assert st._journal is not None
    st._journal.started(s3_bucket, key, ours)
    st._client.upload_part(Bucket=s3_bucket, Key=key, UploadId=ours, PartNumber=1, Body=b"x" * 100)
    st.close()
    raw = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    foreign = raw.create_multipart_upload(Bucket=s3_bucket, Key=st.key_of("c" * 32))["UploadId"]
    raw.close()
    assert sorted(_uploads(moto_server, s3_bucket)) == sorted([ours, foreign])

    again = S3Storage(_cfg(s3_bucket, moto_server), journal_dir=journal)
    try:
        assert again.abort_recorded_uploads() == 1
        assert _uploads(moto_server, s3_bucket) == [foreign]
        assert not list(journal.iterdir())
        assert again.abort_recorded_uploads() == 0
    finally:
        again.close()


def test_finished_uploads_leave_no_journal_entry(
    moto_server: str, s3_bucket: str, short_tmp: Path
) -> None:
    journal = short_tmp / "uploads"
    st = S3Storage(_cfg(s3_bucket, moto_server), journal_dir=journal)
    data = os.urandom(12 * 1024 * 1024)  # three 5 MiB parts: a real multipart upload
    src = short_tmp / "big"
    src.write_bytes(data)
    md5 = hashlib.md5(data).hexdigest()
    try:
        st.put_file(md5, src, len(data))
        assert st.has(md5)
        assert not list(journal.iterdir())
        assert _uploads(moto_server, s3_bucket) == []
    finally:
        st.close()
