"""The raw boto3 listing baseline for the gc group (issue 13): the same bucket, listed the
fastest plain ways, in the same run as ``cpvctl gc``, so the part that is moto's shows.

- ``one walk``: one paginated ListObjectsV2 over the whole ``files/md5/`` prefix, 1,000
  keys a page (what a plain script does; on real S3 the requests are sequential).
- ``prefix-parallel``: the 256 ``<2 hex>/`` prefixes, ``THREADS`` at a time (what
  ``dvc gc`` and cpvd's gc do).

Both parse the pages with boto3's defaults (its LastModified parser included), in the
harness process, as a script would.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

THREADS = 8


def count_keys(s3: Any, bucket: str, prefix: str) -> int:
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        n += len(page.get("Contents", []))
    return n


def one_walk(s3: Any, bucket: str, base: str) -> tuple[int, float]:
    """(objects listed, seconds) for one paginated walk over ``base``."""
    t = time.perf_counter()
    return count_keys(s3, bucket, base), time.perf_counter() - t


def prefix_parallel(s3: Any, bucket: str, base: str) -> tuple[int, float]:
    """(objects listed, seconds) for the 256 ``<2 hex>/`` prefixes, THREADS at a time."""
    prefixes = [f"{base}{i:02x}/" for i in range(256)]
    t = time.perf_counter()
    with ThreadPoolExecutor(THREADS, thread_name_prefix="bench-list") as pool:
        n = sum(pool.map(lambda p: count_keys(s3, bucket, p), prefixes))
    return n, time.perf_counter() - t
