"""A journal of the multipart uploads this daemon started and has not finished.

A ``kill -9`` mid-upload leaves an S3 multipart upload whose parts are stored (and billed)
until someone aborts it. S3 records when an upload started, not who started it, so on a
bucket shared by several machines only our own record says which uploads are ours to abort.
One small file per upload, written before the first part is sent and removed when the
upload is completed or aborted; what is left at start-up was interrupted.

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


class UploadJournal:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self._lock = threading.Lock()
        self._live: set[str] = set()  # upload ids in flight in this process

    def _path(self, upload_id: str) -> Path:
        return self.dir / (hashlib.sha256(upload_id.encode()).hexdigest()[:32] + ".json")

    def started(self, bucket: str, key: str, upload_id: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(upload_id)
        tmp = path.with_suffix(".tmp")
        body = {"bucket": bucket, "key": key, "upload_id": upload_id, "started": time.time()}
        tmp.write_text(json.dumps(body))
        os.replace(tmp, path)
        with self._lock:
            self._live.add(upload_id)

    def ended(self, upload_id: str) -> None:
        with self._lock:
            self._live.discard(upload_id)
        self._path(upload_id).unlink(missing_ok=True)

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
                rec = UploadRecord(
                    str(body["bucket"]), str(body["key"]), str(body["upload_id"]),
                    float(body.get("started", 0)),
                )  # fmt: skip
            except (OSError, ValueError, KeyError, TypeError):
                with contextlib.suppress(OSError):
                    path.unlink()  # torn or foreign: it names nothing we could abort
                continue
            if rec.upload_id not in live:
                out.append(rec)
        return out
