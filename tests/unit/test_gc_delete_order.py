"""gc's parallel deletion keeps its kill-safety rule: every file object is gone before the
first ``.dir`` manifest goes, and a failed file batch leaves every manifest in place."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable

import pytest

from cpvd.errors import StorageError
from cpvd.lifecycle.gc import DELETE_BATCH, DELETE_THREADS, delete_planned
from cpvd.lifecycle.plan import GcPlan
from cpvd.storage.base import StoredObject


def md5(i: int, suffix: str = "") -> str:
    return hashlib.md5(str(i).encode()).hexdigest() + suffix


class RecordingStorage:
    """Records each DeleteObjects call; slow enough that batches overlap in threads."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[float, float, list[str]]] = []
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def delete_objects(self, md5s: Iterable[str]) -> None:
        keys = list(md5s)
        start = time.monotonic()
        time.sleep(0.02)
        if self.fail_on in keys:
            raise StorageError("S3 delete failed")
        with self.lock:
            self.calls.append((start, time.monotonic(), keys))


def plan_of(files: int, dirs: int) -> GcPlan:
    objs = [StoredObject(md5(i), 10, 0.0) for i in range(files)]
    objs += [StoredObject(md5(i, ".dir"), 1, 0.0) for i in range(dirs)]
    return GcPlan(delete=objs[::-1])  # the plan's own order must not matter


def test_files_all_go_before_any_manifest() -> None:
    files, dirs = DELETE_BATCH * DELETE_THREADS * 2 + 7, DELETE_BATCH * 2 + 1
    storage = RecordingStorage()
    seen: list[int] = []
    done = delete_planned(storage, plan_of(files, dirs), lambda d, t: seen.append(d))  # type: ignore[arg-type]
    assert done == files * 10 + dirs
    assert seen[-1] == done and seen == sorted(seen)
    file_calls = [c for c in storage.calls if not c[2][0].endswith(".dir")]
    dir_calls = [c for c in storage.calls if c[2][0].endswith(".dir")]
    assert all(not k.endswith(".dir") for c in file_calls for k in c[2])
    assert sum(len(c[2]) for c in file_calls) == files
    assert sum(len(c[2]) for c in dir_calls) == dirs
    assert max(end for _, end, _ in file_calls) <= min(start for start, _, _ in dir_calls)
    assert all(len(c[2]) <= DELETE_BATCH for c in storage.calls)


def test_a_failed_file_batch_deletes_no_manifest() -> None:
    storage = RecordingStorage(fail_on=md5(5))
    with pytest.raises(StorageError):
        delete_planned(storage, plan_of(DELETE_BATCH * 3, 5), None)  # type: ignore[arg-type]
    assert not any(k.endswith(".dir") for c in storage.calls for k in c[2])
