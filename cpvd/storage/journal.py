"""A journal of the multipart uploads this daemon started and has not finished.

A ``kill -9`` mid-upload leaves an S3 multipart upload whose parts are stored (and billed)
until someone aborts it. S3 records when an upload started, not who started it, so on a
bucket shared by several machines only our own record says which uploads are ours to abort.
One small file per upload, written before the first part is sent and removed when the
upload is completed or aborted; what is left at start-up was interrupted.

An entry that also records the object's size and the part size can be resumed instead
(cpvd.storage.multipart): the bytes of a content-addressed object are the same whichever
snapshot they are read from, so the next upload of the same key with the same sizes lists
the parts S3 holds and sends only the rest. A ``.parts`` file beside the entry lists the
parts whose sending began, so a resume can say how many bytes it sends a second time.

The journal lives in the state dir, so the single-instance lock guarantees no other process
is using it. Entries are written atomically (temp file + rename).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class UploadRecord:
    bucket: str
    key: str
    upload_id: str
    started: float
    #: the object's size and the part size; None in an entry that cannot be resumed
    size: int | None = None
    part_size: int | None = None
    #: when a part last began to go up (the entry's own time before that)
    touched: float = 0.0

    def resumable(self, now: float, window: float) -> bool:
        return self.size is not None and self.part_size is not None and (
            now - self.touched < window
        )


def _record(body: dict[str, object], touched: float) -> UploadRecord:
    size, part = body.get("size"), body.get("part_size")
    return UploadRecord(
        str(body["bucket"]), str(body["key"]), str(body["upload_id"]),
        float(body.get("started", 0)),  # type: ignore[arg-type]
        int(size) if isinstance(size, int) else None,
        int(part) if isinstance(part, int) else None,
        touched,
    )  # fmt: skip


class UploadJournal:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self._lock = threading.Lock()
        self._live: set[str] = set()  # upload ids in flight in this process

    def _path(self, upload_id: str) -> Path:
        return self.dir / (hashlib.sha256(upload_id.encode()).hexdigest()[:32] + ".json")

    def _parts_path(self, upload_id: str) -> Path:
        return self._path(upload_id).with_suffix(".parts")

    def started(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        size: int | None = None,
        part_size: int | None = None,
    ) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(upload_id)
        tmp = path.with_suffix(".tmp")
        body = {"bucket": bucket, "key": key, "upload_id": upload_id, "started": time.time()}
        if size is not None and part_size is not None:
            body.update(size=size, part_size=part_size)
        tmp.write_text(json.dumps(body))
        os.replace(tmp, path)
        with self._lock:
            self._live.add(upload_id)

    def part_started(self, upload_id: str, number: int) -> None:
        """Part ``number`` begins to go up (a line appended; a crash keeps what was written)."""
        with open(self._parts_path(upload_id), "a") as f:
            f.write(f"{number}\n")

    def parts_started(self, upload_id: str) -> set[int]:
        try:
            lines = self._parts_path(upload_id).read_text().split()
        except OSError:
            return set()
        return {int(n) for n in lines if n.isdigit()}

    def claim(
        self, bucket: str, key: str, size: int, part_size: int, window: float
    ) -> UploadRecord | None:
        """An interrupted upload of ``key`` with these sizes, now in flight in this process
        (so no sweep aborts it), or None."""
        now = time.time()
        for rec in self.stale():
            if (rec.bucket, rec.key, rec.size, rec.part_size) == (bucket, key, size, part_size) \
                    and rec.resumable(now, window):  # fmt: skip
                with self._lock:
                    if rec.upload_id in self._live:
                        continue
                    self._live.add(rec.upload_id)
                return rec
        return None

    def release(self, upload_id: str) -> None:
        """Keep the entry for a later resume (an outage interrupted the upload)."""
        with self._lock:
            self._live.discard(upload_id)

    def ended(self, upload_id: str) -> None:
        with self._lock:
            self._live.discard(upload_id)
        self._path(upload_id).unlink(missing_ok=True)
        self._parts_path(upload_id).unlink(missing_ok=True)

    def stale(self) -> list[UploadRecord]:
        """Recorded uploads not in flight in this process: left by a crash or a failed abort."""
        if not self.dir.is_dir():
            return []
        with self._lock:
            live = set(self._live)
        out = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                body = json.loads(path.read_text())
                rec = _record(body, self._touched(path))
            except (OSError, ValueError, KeyError, TypeError):
                with contextlib.suppress(OSError):
                    path.unlink()  # torn or foreign: it names nothing we could abort
                continue
            if rec.upload_id not in live:
                out.append(rec)
        return out

    @staticmethod
    def _touched(path: Path) -> float:
        times = [path.stat().st_mtime]
        with contextlib.suppress(OSError):
            times.append(path.with_suffix(".parts").stat().st_mtime)
        return max(times)
