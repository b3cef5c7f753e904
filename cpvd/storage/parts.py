"""The parts of a multipart upload, and which of them S3 already holds: pure decisions.

A resumed upload (cpvd.storage.multipart) asks S3 which parts it has (``ListParts``) and
sends only the others. A listed part counts as confirmed when its number, its size and, when
its ETag is a plain md5 (it is, unless the bucket encrypts with KMS), the md5 of the local
bytes it stands for all agree; anything else is sent again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_PLAIN_ETAG = re.compile(r'^"?([0-9a-f]{32})"?$')
#: S3 allows at most this many parts in one upload
MAX_PARTS = 10_000


@dataclass(frozen=True)
class Part:
    number: int  # 1-based, as S3 counts
    offset: int
    length: int


def part_size_for(size: int, part_size: int) -> int:
    """``part_size``, doubled until ``size`` fits in S3's 10,000 parts."""
    while size > part_size * MAX_PARTS:
        part_size *= 2
    return part_size


def plan(size: int, part_size: int) -> list[Part]:
    """The parts of a ``size``-byte file cut every ``part_size`` bytes (the last shorter)."""
    if part_size <= 0:
        raise ValueError(f"part size must be positive, got {part_size}")
    return [
        Part(i + 1, offset, min(part_size, size - offset))
        for i, offset in enumerate(range(0, size, part_size))
    ]


def plain_md5(etag: object) -> str | None:
    """The md5 an ETag states, or None when it is not a plain md5 (KMS, composite)."""
    m = _PLAIN_ETAG.match(str(etag or ""))
    return m.group(1) if m else None


def confirmed(
    parts: Iterable[Part],
    listed: Iterable[Mapping[str, Any]],
    md5_of: Callable[[Part], str] | None = None,
) -> dict[int, dict[str, Any]]:
    """The parts S3 holds with the right bytes: part number -> what
    ``CompleteMultipartUpload`` needs of it (``PartNumber``, ``ETag``, a checksum if listed).

    ``listed`` are ``ListParts`` entries; ``md5_of(part)`` hashes the local bytes of a part
    (None: a matching size is trusted)."""
    by_number = {p.number: p for p in parts}
    out: dict[int, dict[str, Any]] = {}
    for entry in listed:
        part = by_number.get(int(entry.get("PartNumber", 0)))
        if part is None or int(entry.get("Size", -1)) != part.length:
            continue
        stated = plain_md5(entry.get("ETag"))
        if md5_of is not None and stated is not None and stated != md5_of(part):
            continue
        out[part.number] = completed_part(part.number, entry)
    return out


def completed_part(number: int, answer: Mapping[str, Any]) -> dict[str, Any]:
    """A part as ``CompleteMultipartUpload`` lists it, from an UploadPart or ListParts answer."""
    done: dict[str, Any] = {"PartNumber": number, "ETag": answer["ETag"]}
    if answer.get("ChecksumCRC32"):
        done["ChecksumCRC32"] = answer["ChecksumCRC32"]
    return done


@dataclass(frozen=True)
class ResumeReport:
    """What a resumed upload spared and what it sends again, for the ``upload.resumed`` event.

    ``bytes_resent``: parts that had started to go up before the interruption but were not
    confirmed (those in flight at a kill); ``bytes_to_send``: every part not confirmed."""

    parts_confirmed: int
    bytes_confirmed: int
    bytes_resent: int
    bytes_to_send: int


def resume_report(
    parts: Iterable[Part], done: Mapping[int, object], started: Iterable[int]
) -> ResumeReport:
    all_parts = list(parts)
    began = set(started)
    todo = [p for p in all_parts if p.number not in done]
    return ResumeReport(
        parts_confirmed=len(done),
        bytes_confirmed=sum(p.length for p in all_parts if p.number in done),
        bytes_resent=sum(p.length for p in todo if p.number in began),
        bytes_to_send=sum(p.length for p in todo),
    )
