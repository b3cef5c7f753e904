"""A sealed early-snapshot offer (cpvd.pipeline.speculative_snapshot) skips the room check
because a followed copy needs no more room; when the file was not followed after all, the
new copy it falls back to must not be made (nor wait) in a store short of room: waiting
held a reservation the job's own copy then waited behind forever."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from cpvd.pipeline.copier import Abandoned
from cpvd.pipeline.follow import Follower
from cpvd.pipeline.snapshot import SnapshotStore
from cpvd.pipeline.speculative_snapshot import SpeculativeSnapshots
from cpvd.pipeline.threads import Executors


class _Copier:
    """Records the copies asked for (the real one would wait for space here)."""

    def __init__(self, store: SnapshotStore) -> None:
        self.snapshots = store
        self.copies: list[Path] = []

    def copy_and_hash(self, path: Path, *args: Any) -> Any:
        self.copies.append(path)
        return None


def _speculative(tmp_path: Path, limit: int) -> tuple[SpeculativeSnapshots, _Copier, Follower]:
    store = SnapshotStore(tmp_path / "snapshots", limit_bytes=limit)
    copier = _Copier(store)
    follower = Follower(store)
    spec = SpeculativeSnapshots(copier, Executors(), lambda *a: None, follower)  # type: ignore[arg-type]
    return spec, copier, follower


def test_unfollowed_sealed_file_is_not_copied_when_the_store_is_short(tmp_path: Path) -> None:
    src = tmp_path / "last.ckpt"
    src.write_bytes(b"x" * 600)
    spec, copier, follower = _speculative(tmp_path, limit=1000)
    copier.snapshots.hold_partial("another-copy", 900)  # the store is nearly full
    with pytest.raises(Abandoned, match="short of room"):
        spec._take(follower, src, 600, "k1", None, threading.Event())  # type: ignore[arg-type]
    assert copier.copies == []
    assert copier.snapshots.used_bytes() == 900  # nothing reserved for the refused copy


def test_unfollowed_sealed_file_is_copied_when_there_is_room(tmp_path: Path) -> None:
    src = tmp_path / "last.ckpt"
    src.write_bytes(b"x" * 600)
    spec, copier, follower = _speculative(tmp_path, limit=0)
    spec._take(follower, src, 600, "k1", None, threading.Event())  # type: ignore[arg-type]
    assert copier.copies == [src]
