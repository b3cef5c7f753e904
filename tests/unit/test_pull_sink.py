"""cpvctl.sink: the pull's writer thread hashes in order, syncs, and reports a full disk
as a write failure (never as a network error a pull would retry another way)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from cpvctl import sink as sink_module
from cpvctl.sink import Sink, WriteFailed


def test_bytes_and_md5_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sink_module, "WRITEBACK_EVERY", 1 << 16)  # exercise the writeback
    chunks = [os.urandom(n) for n in (1, 70_000, 0, 300_000, 5)]
    path = tmp_path / "out"
    with path.open("wb") as f:
        s = Sink(f, path)
        for c in chunks:
            s.write(c)
        md5, size = s.finish()
    data = b"".join(chunks)
    assert (md5, size) == (hashlib.md5(data).hexdigest(), len(data))
    assert path.read_bytes() == data


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_a_write_failure() -> None:
    with open("/dev/full", "wb", buffering=0) as f:
        s = Sink(f, Path("/dev/full"))
        with pytest.raises(WriteFailed, match="No space left"):
            for _ in range(100):
                s.write(b"x" * 65536)
            s.finish()
        s.abandon()
