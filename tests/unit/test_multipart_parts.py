"""The pure decisions of a resumed multipart upload (cpvd.storage.parts) and the
``[storage] stall_seconds`` setting."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cpvd.config.load import parse_config
from cpvd.errors import ConfigError
from cpvd.storage.parts import Part, confirmed, part_size_for, plain_md5, plan, resume_report

DATA = bytes(range(256)) * 100  # 25,600 bytes


def _md5_of(part: Part) -> str:
    return hashlib.md5(DATA[part.offset : part.offset + part.length]).hexdigest()


def _listed(part: Part, etag: str | None = None, size: int | None = None) -> dict[str, object]:
    return {
        "PartNumber": part.number,
        "Size": part.length if size is None else size,
        "ETag": f'"{etag or _md5_of(part)}"',
    }


def test_the_plan_covers_every_byte_once() -> None:
    parts = plan(len(DATA), 10_000)
    assert [(p.number, p.offset, p.length) for p in parts] == [
        (1, 0, 10_000), (2, 10_000, 10_000), (3, 20_000, 5_600),
    ]  # fmt: skip
    assert plan(0, 10) == []
    assert part_size_for(10**12, 8 * 2**20) * 10_000 >= 10**12


def test_only_listed_parts_with_the_right_size_and_md5_are_confirmed() -> None:
    parts = plan(len(DATA), 10_000)
    listed = [
        _listed(parts[0]),
        _listed(parts[1], etag="0" * 32),  # other bytes: sent again
        _listed(parts[2], size=5_599),  # torn: sent again
        {"PartNumber": 9, "Size": 10_000, "ETag": '"x"'},  # not ours
    ]
    done = confirmed(parts, listed, _md5_of)
    assert list(done) == [1]
    assert done[1] == {"PartNumber": 1, "ETag": f'"{_md5_of(parts[0])}"'}


def test_an_etag_that_is_no_md5_is_trusted_on_its_size() -> None:
    parts = plan(len(DATA), 10_000)
    kms = {"PartNumber": 2, "Size": 10_000, "ETag": '"abc-kms"', "ChecksumCRC32": "q=="}
    assert plain_md5('"abc-kms"') is None
    done = confirmed(parts, [kms], _md5_of)
    assert done == {2: {"PartNumber": 2, "ETag": '"abc-kms"', "ChecksumCRC32": "q=="}}


def test_resume_report_counts_what_is_spared_and_what_goes_again() -> None:
    parts = plan(len(DATA), 10_000)
    report = resume_report(parts, {1: {}}, started=[1, 2])
    assert report.parts_confirmed == 1
    assert report.bytes_confirmed == 10_000
    assert report.bytes_resent == 10_000  # part 2 was in flight
    assert report.bytes_to_send == 15_600


def test_stall_seconds_is_read_and_must_be_positive() -> None:
    ok = parse_config('[storage]\nurl = "s3://bucket/x"\nstall_seconds = 5\n', Path("/c.toml"))
    assert ok.storage.stall_seconds == 5.0
    assert parse_config('[storage]\nurl = "s3://bucket/x"\n', Path("/c.toml")).storage.stall_seconds
    for bad in ("0", "-1"):
        with pytest.raises(ConfigError, match=r"\[storage\] stall_seconds: must be greater"):
            parse_config(f'[storage]\nurl = "s3://bucket/x"\nstall_seconds = {bad}\n', Path("/c"))
