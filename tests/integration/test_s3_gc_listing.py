"""gc's S3 listing (16 shards in parallel) on moto's S3 server: every layout object of the
prefix, in every shard, with its size and LastModified; nothing else."""

from __future__ import annotations

import hashlib
import time

import boto3

from cpvd.config.model import StorageConfig
from cpvd.storage.s3 import S3Storage

PREFIX = "team/ckpts"


def test_lists_every_layout_object_and_nothing_else(moto_server: str, s3_bucket: str) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    want: dict[str, int] = {}
    for i in range(300):  # enough to land in all 16 shards, several pages in none
        body = b"x" * (i % 7)
        md5 = hashlib.md5(str(i).encode()).hexdigest() + (".dir" if i % 50 == 0 else "")
        s3.put_object(Bucket=s3_bucket, Key=f"{PREFIX}/files/md5/{md5[:2]}/{md5[2:]}", Body=body)
        want[md5] = len(body)
    assert len({m[0] for m in want}) == 16
    strays = [
        f"{PREFIX}/files/md5/0a/tmp.123",  # DVC's temp name
        f"{PREFIX}/files/md5/0ab/{'c' * 29}",  # three-digit directory
        f"{PREFIX}/files/md5/0a/{'b' * 30}/x",  # nested below an object name
        f"{PREFIX}/files/md5/0A/{'b' * 30}",  # upper case
        f"{PREFIX}/cpv-registry.json",
        f"other/files/md5/0a/{'b' * 30}",  # another prefix
    ]
    for key in strays:
        s3.put_object(Bucket=s3_bucket, Key=key, Body=b"s")
    st = S3Storage(StorageConfig(url=f"s3://{s3_bucket}/{PREFIX}", endpoint_url=moto_server))
    try:
        listed = list(st.list_objects())
    finally:
        st.close()
    assert {o.md5: o.size for o in listed} == want
    assert len(listed) == len(want)  # each once
    assert all(abs(o.mtime - time.time()) < 3600 for o in listed)
