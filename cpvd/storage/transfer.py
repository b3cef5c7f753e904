"""Copying stored objects from one DVC remote to another, verified and resumable.

Used by ``cpvd migrate-storage``. Each object is copied with the target backend's own atomic
write (a temp name then a rename locally, a single PUT or a completed multipart upload on
S3), then read back and its md5 checked; only then is it written to a journal of verified
objects. A run killed at any point is simply run again: objects in the journal are skipped,
objects found in the target but not in the journal (killed between landing and journalling)
are verified before they are skipped, and the rest are copied.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from cpvd.errors import IntegrityError, NotFound
from cpvd.storage.base import Progress, Storage, check_md5, object_key
from cpvd.storage.local import LocalStorage

_CHUNK = 8 * 1024 * 1024
#: a line of progress per this many bytes of one big object
PROGRESS_EVERY = 256 * 1024 * 1024


@dataclass
class TransferReport:
    copied: int = 0
    skipped: int = 0
    bytes_copied: int = 0
    missing: list[str] = field(default_factory=list)


class VerifiedJournal:
    """The objects already verified in the target: one md5 per line, appended and fsynced.
    A torn last line (a kill mid-write) is not an md5 and is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._done: set[str] = set()
        with contextlib.suppress(FileNotFoundError):
            for line in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(Exception):
                    self._done.add(check_md5(line.strip()))

    def __contains__(self, md5: object) -> bool:
        return md5 in self._done

    def add(self, md5: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(md5 + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._done.add(md5)


def _download(source: Storage, md5: str, dest: Path) -> None:
    """Stream an object to ``dest``, checking its md5 on the way (one GET, no ranges)."""
    h = hashlib.md5()
    with source.open_object(md5) as body, open(dest, "wb") as out:
        while chunk := body.read(_CHUNK):
            h.update(chunk)
            out.write(chunk)
    if h.hexdigest() != md5.removesuffix(".dir"):
        raise IntegrityError(f"object {md5} is corrupt in the source storage {source.describe()}")


def byte_progress(say: Callable[[str], None], what: str, total: int) -> Progress:
    """A ``Progress`` that says how far a big object is, every ``PROGRESS_EVERY`` bytes."""
    done = 0
    shown = 0

    def progress(n: int) -> None:
        nonlocal done, shown
        done += n
        if done - shown >= PROGRESS_EVERY and done < total:
            shown = done
            say(f"{what}: {done >> 20} of {total >> 20} MiB")

    return progress


def copy_object(
    source: Storage,
    target: Storage,
    md5: str,
    scratch: Path,
    progress_for: Callable[[int], Progress] | None = None,
) -> int:
    """Copy one object; returns its size. NotFound when the source lacks it.
    ``progress_for(size)`` gives the callback for the upload's byte counts."""
    size = source.size_of(md5)
    if size is None:
        raise NotFound(f"object {md5} not in storage {source.describe()}")
    progress = progress_for(size) if progress_for is not None else None
    if isinstance(source, LocalStorage):
        src = source.path_of(md5)
    else:
        scratch.mkdir(parents=True, exist_ok=True)
        src = scratch / f"{md5}.part"
        _download(source, md5, src)
    try:
        if md5.endswith(".dir"):
            target.put_bytes(md5, src.read_bytes())
        else:
            target.put_file(md5, src, size, progress)
    finally:
        if src.parent == scratch:
            src.unlink(missing_ok=True)
    return size


def _already_there(target: Storage, md5: str, journal: VerifiedJournal) -> str | None:
    """Why ``md5`` needs no copy ("verified earlier" / "verified now"), or None."""
    if not target.has(md5):
        return None
    if md5 in journal:
        return "verified earlier"
    if not target.verify(md5):
        raise IntegrityError(
            f"object {object_key(md5)} in {target.describe()} does not match its md5 (not "
            "written by cpvd?); delete it there and run the migration again"
        )
    journal.add(md5)
    return "verified now"


def transfer(
    source: Storage,
    target: Storage,
    objects: Sequence[str],
    journal: VerifiedJournal,
    scratch: Path,
    say: Callable[[str], None],
) -> TransferReport:
    """Copy ``objects`` (files before the ``.dir`` manifests listing them) to ``target``."""
    report = TransferReport()
    n = len(objects)
    for i, md5 in enumerate(objects, start=1):
        where = f"[{i}/{n}] {object_key(md5)}"
        why = _already_there(target, md5, journal)
        if why:
            report.skipped += 1
            say(f"{where}: already there, {why}")
            continue
        try:
            size = copy_object(source, target, md5, scratch, partial(byte_progress, say, where))
        except NotFound:
            report.missing.append(md5)
            say(f"{where}: MISSING in {source.describe()}")
            continue
        if not target.verify(md5):
            raise IntegrityError(f"{where}: the copy in {target.describe()} does not match its md5")
        journal.add(md5)
        report.copied += 1
        report.bytes_copied += size
        say(f"{where}: copied {size} bytes, verified")
    return report
