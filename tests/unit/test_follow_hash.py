"""The chunk-state md5 and the follow-while-written copy (cpvd.storage.chunk_hash,
cpvd.pipeline.follow_copy): appends, seek-back rewrites, truncation, all give the md5 of
the final bytes, and the copy equals the source."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from cpvd.pipeline.follow_copy import FollowedFile, SourceChanged
from cpvd.storage.chunk_hash import ChunkedMd5

CHUNK = 64


def test_update_in_any_pieces_is_plain_md5() -> None:
    data = os.urandom(1000)
    for step in (1, 7, 64, 65, 999, 1000):
        h = ChunkedMd5(CHUNK)
        for i in range(0, len(data), step):
            h.update(data[i : i + step])
        assert h.hexdigest() == hashlib.md5(data).hexdigest()
        assert h.length == len(data)


@pytest.mark.parametrize("offset", [0, 1, 63, 64, 65, 500, 999, 1000])
def test_rewind_resumes_from_the_chunk_boundary_before(offset: int) -> None:
    data = bytearray(os.urandom(1000))
    h = ChunkedMd5(CHUNK)
    h.update(bytes(data))
    data[offset:] = os.urandom(len(data) - offset + 10)  # rewritten from offset on
    start = h.rewind(offset)
    assert start == offset // CHUNK * CHUNK
    h.update(bytes(data[start:]))
    assert h.hexdigest() == hashlib.md5(bytes(data)).hexdigest()


def _follow(tmp_path: Path, src: Path) -> FollowedFile:
    fd = os.open(src, os.O_RDONLY)
    return FollowedFile(fd, tmp_path / "copy", chunk=CHUNK)


def test_follows_appends_and_a_rewritten_header(tmp_path: Path) -> None:
    src = tmp_path / "src"
    with open(src, "wb") as w:
        w.write(b"\0" * 8)  # header placeholder
        w.flush()
        f = _follow(tmp_path, src)
        for _ in range(20):
            w.write(os.urandom(37))
            w.flush()
            f.catch_up()
        assert f.copied == src.stat().st_size
        w.seek(0)
        w.write(b"HEADER!!")  # seek back: the copy's first chunk is stale now
        w.seek(0, os.SEEK_END)
        w.write(os.urandom(5))
    assert f.first_difference() == 0
    md5, st = f.settle()
    want = src.read_bytes()
    assert md5 == hashlib.md5(want).hexdigest()
    assert (tmp_path / "copy").read_bytes() == want
    assert st.st_size == len(want)
    f.close()
    f.close()  # idempotent


def test_rewrite_in_the_middle_rehashes_from_that_chunk_only(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(os.urandom(10 * CHUNK))
    f = _follow(tmp_path, src)
    f.catch_up()
    with open(src, "r+b") as w:
        w.seek(7 * CHUNK + 3)
        w.write(b"xyz")
    assert f.first_difference() == 7 * CHUNK
    md5, _ = f.settle()
    assert md5 == hashlib.md5(src.read_bytes()).hexdigest()
    assert f.first_difference() is None
    f.close()


def test_truncated_and_rewritten_source(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(os.urandom(5 * CHUNK))
    f = _follow(tmp_path, src)
    f.catch_up()
    src.write_bytes(os.urandom(2 * CHUNK + 5))  # truncate and write again, same inode
    md5, _ = f.settle()
    assert md5 == hashlib.md5(src.read_bytes()).hexdigest()
    assert (tmp_path / "copy").read_bytes() == src.read_bytes()
    f.close()


def test_limit_and_stop_bound_a_catch_up(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(os.urandom(10 * CHUNK))
    f = _follow(tmp_path, src)
    f.catch_up(limit=3 * CHUNK)
    assert f.copied == 3 * CHUNK
    f.catch_up(limit=3 * CHUNK + 1)
    assert f.copied == 3 * CHUNK + 1
    f.close()


def test_settle_refuses_a_source_that_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3 * CHUNK))
    f = _follow(tmp_path, src)
    real = f.first_difference

    def write_meanwhile(end: int | None = None) -> int | None:
        with open(src, "ab") as w:
            w.write(b"more")
        return real(end)

    monkeypatch.setattr(f, "first_difference", write_meanwhile)
    with pytest.raises(SourceChanged):
        f.settle()
    f.close()


def test_a_rewrite_found_while_a_long_tail_is_caught_up(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(os.urandom(10 * CHUNK))
    f = _follow(tmp_path, src)
    f.catch_up()
    with open(src, "r+b") as w:
        w.seek(3 * CHUNK + 10)
        w.write(b"rewritten")
        w.seek(0, os.SEEK_END)
        w.write(os.urandom(500 * CHUNK + 7))  # the tail copied while the head is compared
    md5, st = f.settle()
    assert md5 == hashlib.md5(src.read_bytes()).hexdigest()
    assert (tmp_path / "copy").read_bytes() == src.read_bytes()
    assert st.st_size == 510 * CHUNK + 7
    f.close()
