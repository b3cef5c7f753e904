"""A multipart upload leaves no page cache behind: the file it reads is cpvd's own snapshot
copy, read once, and its GiBs would otherwise push out what the trainer reads (its
dataset). Checked with mincore(2) against the real moto server."""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import sys
from pathlib import Path

import pytest

from cpvd.config.model import StorageConfig
from cpvd.storage.s3 import S3Storage

MIB = 1024 * 1024

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="mincore and fadvise: Linux")


def _resident_pages(path: Path) -> int:
    """Pages of ``path`` in the page cache now (mincore on a private mapping of it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as m:
        vec = (ctypes.c_ubyte * pages)()
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        try:
            if libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
        finally:
            del addr  # the buffer export must end before the map closes
        return sum(b & 1 for b in vec)


def test_the_parts_sent_leave_the_page_cache(
    moto_server: str, s3_bucket: str, short_tmp: Path
) -> None:
    data = os.urandom(12 * MIB + 123)
    src = short_tmp / "snap"
    src.write_bytes(data)
    with open(src, "rb+") as f:
        os.fsync(f.fileno())  # clean pages: only those can be dropped
    assert src.read_bytes() == data  # ... and cached
    assert _resident_pages(src) > 0
    cfg = StorageConfig(
        url=f"s3://{s3_bucket}/reg", endpoint_url=moto_server, part_size_mb=5, concurrency=2
    )
    st = S3Storage(cfg)
    try:
        md5 = hashlib.md5(data).hexdigest()
        st.put_file(md5, src, len(data))
        assert st.verify(md5)
    finally:
        st.close()
    assert _resident_pages(src) == 0
